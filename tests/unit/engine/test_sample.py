"""Search-space domains: Ray's bounds and quantization, determinism, errors naming the field."""

from __future__ import annotations

import random

import pytest

from kubetune import tune
from kubetune.search import sample as S
from kubetune.search.errors import ConfigError


def draws(domain: S.Domain, n: int = 3000, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [domain.sample(random_state=rng) for _ in range(n)]


def test_public_names_come_from_sample_module() -> None:
    for name in [
        "grid_search",
        "choice",
        "uniform",
        "quniform",
        "loguniform",
        "qloguniform",
        "randn",
        "qrandn",
        "randint",
        "qrandint",
        "lograndint",
        "qlograndint",
        "sample_from",
    ]:
        assert getattr(tune, name) is getattr(S, name)


def test_grid_search_is_rays_marker() -> None:
    assert tune.grid_search([1, 2]) == {"grid_search": [1, 2]}


@pytest.mark.parametrize(
    ("domain", "lo", "hi", "exact"),
    [
        (S.uniform(-1, 1), -1, 1, None),
        (S.loguniform(1e-4, 1e-1), 1e-4, 1e-1, None),
        (S.quniform(0, 1, 0.25), 0, 1, {0.0, 0.25, 0.5, 0.75, 1.0}),
        (S.randint(0, 5), 0, 4, {0, 1, 2, 3, 4}),  # upper exclusive
        (S.qrandint(0, 10, 5), 0, 10, {0, 5, 10}),  # upper inclusive for q > 1
        (S.qrandint(1, 5), 1, 4, {1, 2, 3, 4}),  # q == 1: upper exclusive (Ray)
        (S.qrandint(1, 10, 3), 3, 9, {3, 6, 9}),  # multiples of q inside the bounds
        (S.lograndint(1, 10), 1, 9, set(range(1, 10))),
        (S.qlograndint(2, 8, 2), 2, 8, {2, 4, 6, 8}),
    ],
)
def test_bounds_and_values(domain: S.Domain, lo: float, hi: float, exact: set | None) -> None:
    values = draws(domain)
    assert min(values) >= lo and max(values) <= hi
    assert all(domain.is_valid(v) for v in values)
    if exact is not None:
        assert set(values) == exact
    if isinstance(domain, S.Integer):
        assert all(type(v) is int for v in values)
    else:
        assert all(type(v) is float for v in values)


def test_normal_and_quantized_normal() -> None:
    values = draws(S.randn(10, 2))
    mean = sum(values) / len(values)
    assert 9.8 < mean < 10.2
    q = draws(S.qrandn(0, 1, 0.5))
    assert all(abs(v / 0.5 - round(v / 0.5)) < 1e-9 for v in q)


def test_sampling_is_deterministic_for_a_seed() -> None:
    d = S.loguniform(1e-5, 1)
    assert draws(d, 50, seed=7) == draws(d, 50, seed=7)
    assert draws(d, 50, seed=7) != draws(d, 50, seed=8)


def test_choice_samples_every_category() -> None:
    assert set(draws(S.choice(["a", "b", "c"]))) == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: S.uniform(1, 1), "lower"),
        (lambda: S.uniform(2, 1), "lower"),
        (lambda: S.randint(5, 5), "lower"),
        (lambda: S.loguniform(0, 1), "lower"),
        (lambda: S.loguniform(-1, 1), "lower"),
        (lambda: S.lograndint(0, 10), "lower"),
        (lambda: S.qloguniform(0, 1, 0.1), "lower"),
        (lambda: S.loguniform(1, 10, base=1), "base"),
        (lambda: S.quniform(0, 1, 0), "q"),
        (lambda: S.quniform(0, 1, -0.5), "q"),
        (lambda: S.qrandint(0, 10, 0), "q"),
        (lambda: S.qrandn(0, 1, 0), "q"),
        (lambda: S.quniform(0.1, 1, 0.25), "lower"),
        (lambda: S.randn(0, 0), "sd"),
        (lambda: S.choice([]), "categories"),
        (lambda: S.grid_search([]), "values"),
        (lambda: S.uniform("a", 1), "lower"),
        (lambda: S.randint(0, 2.5), "upper"),
        (lambda: S.sample_from(lambda a, b: 1), "func"),
    ],
)
def test_bad_arguments_name_the_field(make, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field
    assert field in str(info.value)


def test_clip_keeps_values_inside() -> None:
    assert S.uniform(0, 1).clip(1.7) == 1.0
    assert S.qrandint(0, 10, 5).clip(12) == 10
    assert S.randint(0, 5).clip(9) == 4
    assert S.quniform(0, 1, 0.25).clip(0.3) == 0.25


def test_sample_from_sees_config_both_styles() -> None:
    d1 = S.sample_from(lambda spec: spec.config.a + 1)
    d2 = S.sample_from(lambda config: config["a"] + 2)
    d3 = S.sample_from(lambda: 5)
    assert d1.sample({"a": 1}) == 2
    assert d2.sample({"a": 1}) == 3
    assert d3.sample() == 5


def test_domains_compare_by_value() -> None:
    assert S.uniform(0, 1) == S.uniform(0, 1)
    assert S.uniform(0, 1) != S.loguniform(0.1, 1)
    assert S.choice([1, 2]) != S.choice([1, 3])
