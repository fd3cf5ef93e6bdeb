"""Trial pods of code shipped by ``kubetune submit`` (spec.trainable.codeFrom)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubetune_operator.pod import PodSettings, build_trial_pod

from kubetune.trial.spec import TrialSpec
from tests.unit.operator.test_pod import EXPERIMENT, TRIAL

CODE = "s3://b/runs/mnist/.kubetune/code"
PARAMS = "s3://b/runs/mnist/.kubetune/params"


def shipped() -> dict[str, Any]:
    exp = copy.deepcopy(EXPERIMENT)
    trainable = exp["spec"]["trainable"]
    del trainable["image"]
    trainable.update(entrypoint="shipped:fn", codeFrom=CODE, parametersFrom=PARAMS)
    return exp


def test_the_sidecar_fetches_code_and_parameters_and_the_trial_unpickles_it() -> None:
    pod = build_trial_pod(shipped(), TRIAL, 0, PodSettings(sidecar_image="kubetune/trial:1"))
    sidecar, main = pod["spec"]["initContainers"][0], pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["KUBETUNE_SIDECAR_CODE_FROM"] == CODE
    assert env["KUBETUNE_SIDECAR_PARAMS_FROM"] == PARAMS
    spec = TrialSpec.from_dict(json.loads(env["KUBETUNE_SIDECAR_TRIAL_SPEC"]))
    assert spec.trainable is None
    assert spec.trainable_pickle == "/kubetune/code/trainable.pkl"
    assert spec.python_path == ["/kubetune/code/workdir", "/app"]
    assert spec.params_dir == "/kubetune/params"
    # the trial base image the operator names, for both containers; the bootstrap first
    assert main["image"] == sidecar["image"] == "kubetune/trial:1"
    assert main["command"] == ["python", "-m", "kubetune.cluster.bootstrap", "/kubetune/code"]
    # the trial container still holds no credential and no token
    assert "secretKeyRef" not in json.dumps(main)
    assert "CODE_FROM" not in json.dumps(main)


def test_an_image_given_wins_over_the_base_image() -> None:
    exp = shipped()
    exp["spec"]["trainable"]["image"] = "mine:2"
    pod = build_trial_pod(exp, TRIAL, 0, PodSettings(sidecar_image="kubetune/trial:1"))
    assert pod["spec"]["containers"][0]["image"] == "mine:2"


def test_an_entrypoint_experiment_is_unchanged() -> None:
    pod = build_trial_pod(EXPERIMENT, TRIAL, 0, PodSettings())
    assert pod["spec"]["containers"][0]["command"] == ["python", "-m", "kubetune.trial"]
    env = {e["name"]: e.get("value") for e in pod["spec"]["initContainers"][0]["env"]}
    assert "KUBETUNE_SIDECAR_CODE_FROM" not in env


# -- the shipped URIs must lie inside spec.storage ---------------------------------------------
def _checked(**trainable: Any) -> None:
    from kubetune_operator.plan import check_shipped_uris, storage_spec

    exp = shipped()
    exp["spec"]["trainable"].update(trainable)
    check_shipped_uris(exp, storage_spec(exp, {}))


def test_shipped_code_needs_no_image_and_its_uris_inside_the_storage_pass() -> None:
    from kubetune_operator.plan import build_engine

    build_engine(shipped())  # no spec.trainable.image: the trial base image runs it
    _checked()
    _checked(codeFrom="s3://b/runs/other-experiment/.kubetune/code/")  # a continued one's


@pytest.mark.parametrize(
    "field, uri",
    [
        ("codeFrom", "s3://someone-else/runs/mnist/.kubetune/code"),
        ("codeFrom", "s3://b/other-prefix/mnist/.kubetune/code"),
        ("codeFrom", "s3://b/runsx/mnist/.kubetune/code"),  # a sibling prefix, not inside
        ("codeFrom", "s3://b/runs/../secrets/code"),
        ("codeFrom", "s3://b/runs/"),
        ("parametersFrom", "s3://b/runs//mnist/params"),
        ("parametersFrom", "s3://elsewhere/params"),
        ("parametersFrom", "/etc/params"),
    ],
)
def test_a_shipped_uri_outside_the_storage_stalls_naming_the_field(field: str, uri: str) -> None:
    from kubetune_operator.plan import BadSpec

    with pytest.raises(BadSpec) as info:
        _checked(**{field: uri})
    message = str(info.value)
    assert message.startswith(f"spec.trainable.{field}: ")
    assert "s3://b/runs/" in message and "inside the experiment's storage" in message


def test_without_a_prefix_the_whole_bucket_is_the_storage() -> None:
    from kubetune_operator.plan import BadSpec, check_shipped_uris, storage_spec

    exp = shipped()
    del exp["spec"]["storage"]["prefix"]
    check_shipped_uris(exp, storage_spec(exp, {}))
    exp["spec"]["trainable"]["codeFrom"] = "s3://bb/mnist/.kubetune/code"
    with pytest.raises(BadSpec, match=r"spec\.trainable\.codeFrom: .* \(s3://b/,"):
        check_shipped_uris(exp, storage_spec(exp, {}))
