"""The manifest form of a param space and its lossless round trip."""

from __future__ import annotations

import json

import pytest
import yaml

from kubetune.search import sample as S
from kubetune.search.errors import ConfigError
from kubetune.search.spec import from_manifest, to_manifest

SPACE = {
    "lr": S.loguniform(1e-4, 1e-1),
    "wd": S.qloguniform(1e-5, 1e-1, 1e-5),
    "momentum": S.uniform(0.1, 0.9),
    "dropout": S.quniform(0.0, 0.5, 0.05),
    "layers": S.randint(1, 5),
    "units": S.qrandint(32, 256, 32),
    "width": S.lograndint(8, 1024),
    "batch": S.qlograndint(16, 512, 16),
    "noise": S.randn(0.0, 1.0),
    "noise_q": S.qrandn(0.0, 1.0, 0.1),
    "optimizer": S.choice(["adam", "sgd"]),
    "activation": S.grid_search(["relu", "tanh"]),
    "nested": {
        "a": 1,
        "b": [1, 2.5, "x", None, True],
        "c": {"d": S.choice([{"k": S.uniform(0, 1)}, 3])},
    },
    "shape": (3, 3),
    "looks_like_sampler": {"choice": [1, 2]},
    "constant_key": {"constant": 5},
    "grid_of_spaces": S.grid_search([{"x": S.randint(0, 3)}, {"y": 1}]),
    "empty": {},
}


def test_round_trip_python_manifest_python() -> None:
    manifest = to_manifest(SPACE)
    json.dumps(manifest)  # plain JSON
    assert from_manifest(json.loads(json.dumps(manifest))) == SPACE
    assert from_manifest(yaml.safe_load(yaml.safe_dump(manifest))) == SPACE


def test_manifest_form_is_readable() -> None:
    m = to_manifest(SPACE)
    assert m["lr"] == {"loguniform": {"lower": 1e-4, "upper": 1e-1, "base": 10}}
    assert m["optimizer"] == {"choice": ["adam", "sgd"]}
    assert m["activation"] == {"gridSearch": ["relu", "tanh"]}
    assert m["shape"] == {"tuple": [3, 3]}
    assert m["looks_like_sampler"] == {"constant": {"choice": [1, 2]}}
    assert m["constant_key"] == {"constant": {"constant": 5}}


def test_manifest_round_trip_of_canonical_form() -> None:
    manifest = to_manifest(SPACE)
    assert to_manifest(from_manifest(manifest)) == manifest


def test_yaml_written_by_hand() -> None:
    doc = yaml.safe_load(
        """
        lr: {loguniform: {lower: 1.0e-4, upper: 1.0e-1}}
        layers: {randint: {lower: 1, upper: 5}}
        act: {grid_search: [relu, tanh]}
        literal: {constant: {uniform: {lower: 0, upper: 1}}}
        units: {qrandint: {lower: 32, upper: 256}}
        """
    )
    space = from_manifest(doc)
    assert space["lr"] == S.loguniform(1e-4, 1e-1)
    assert space["act"] == {"grid_search": ["relu", "tanh"]}
    assert space["literal"] == {"uniform": {"lower": 0, "upper": 1}}
    assert space["units"] == S.qrandint(32, 256, 1)


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ({"lr": {"loguniform": {"lower": 0, "upper": 1}}}, "paramSpace.lr.loguniform.lower"),
        ({"lr": {"uniform": {"lower": 2, "upper": 1}}}, "paramSpace.lr.uniform.lower"),
        ({"lr": {"uniform": {"lower": 0}}}, "paramSpace.lr.uniform.upper"),
        ({"lr": {"uniform": {"lower": 0, "upper": 1, "qq": 1}}}, "paramSpace.lr.uniform.qq"),
        ({"x": {"quniform": {"lower": 0, "upper": 1, "q": 0}}}, "paramSpace.x.quniform.q"),
        ({"x": {"choice": []}}, "paramSpace.x.choice"),
        ({"x": {"gridSearch": []}}, "paramSpace.x.gridSearch"),
        ({"x": {"choice": "ab"}}, "paramSpace.x.choice"),
        ({"a": {"b": {"randint": [1, 2]}}}, "paramSpace.a.b.randint"),
    ],
)
def test_bad_manifest_names_the_path(manifest: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_manifest(manifest)
    assert info.value.field == field


def test_sample_from_has_no_manifest_form() -> None:
    with pytest.raises(ConfigError) as info:
        to_manifest({"a": {"b": S.sample_from(lambda: 1)}})
    assert info.value.field == "paramSpace.a.b"
    assert "sample_from" in str(info.value)


def test_unrepresentable_values_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        to_manifest({"x": object()})
    assert info.value.field == "paramSpace.x"
    with pytest.raises(ConfigError):
        to_manifest({1: 2})
