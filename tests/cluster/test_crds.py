"""The CRDs on the real API server: accepted, documented, and refusing bad manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kubetune.manifest import crd

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crds_applied(control_plane):
    out = control_plane.apply_crds(
        REPO / "crds", "tuneexperiments.kubetune.io", "tunetrials.kubetune.io"
    )
    assert "tuneexperiments.kubetune.io" in out
    return control_plane


def _experiment(name: str, **spec_overrides) -> dict:
    spec = {
        "trainable": {"image": "example/trial:1", "entrypoint": "train:objective"},
        "paramSpace": {
            "a": {"uniform": {"lower": 0, "upper": 1}},
            "b": {"choice": [1, 2, 3]},
            "c": {"constant": 4},
            "nested": {"x": {"loguniform": {"lower": 1e-4, "upper": 1e-1}}},
        },
        "tuneConfig": {
            "metric": "score",
            "mode": "max",
            "numSamples": 4,
            "scheduler": {"type": "asha", "maxT": 20, "gracePeriod": 1},
        },
        "runConfig": {"stop": {"training_iteration": 20}},
        "resources": {"bundles": [{"CPU": 1, "GPU": 1}]},
        "storage": {"bucket": "results"},
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuneExperiment",
        "metadata": {"name": name},
        "spec": spec,
    }


def _apply(cp, namespace: str, manifest: dict, check: bool = True):
    return cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=check)


def test_committed_crds_are_generated_from_the_schema_module():
    for name in crd.CRDS:
        assert (REPO / "crds" / name).read_text() == crd.render(name), (
            f"crds/{name} is stale: run python -m kubetune.manifest.crd crds/"
        )


def test_valid_experiment_is_accepted_and_listed(crds_applied, namespace):
    _apply(crds_applied, namespace, _experiment("ok"))
    out = crds_applied.kubectl("get", "tuneexperiments", "-n", namespace).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "STATUS", "TRIALS", "RUNNING", "BEST", "METRIC", "AGE"]
    assert crds_applied.kubectl("get", "kubetune", "-n", namespace).returncode == 0
    assert crds_applied.kubectl("get", "tex", "-n", namespace).stdout.startswith("NAME")
    trial_header = crds_applied.kubectl("get", "ttr", "-n", namespace, "--no-headers=false")
    assert trial_header.returncode == 0


def test_explain_documents_fields(crds_applied):
    out = crds_applied.kubectl("explain", "tuneexperiment.spec.tuneConfig.scheduler").stdout
    assert "decides from results" in out
    assert "reductionFactor" in out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"paramSpace": {"a": {"uniform": {"lower": 2, "upper": 1}}}},
            "uniform: lower must be less than upper",
        ),
        (
            {"paramSpace": {"a": {"loguniform": {"lower": 0, "upper": 1}}}},
            "loguniform: a log domain needs lower > 0",
        ),
        ({"tuneConfig": {"mode": "best", "metric": "x"}}, "spec.tuneConfig.mode"),
        ({"tuneConfig": {"mode": "max"}}, "tuneConfig.mode needs tuneConfig.metric"),
        ({"tuneConfig": {"scheduler": {"type": "fastest"}}}, "spec.tuneConfig.scheduler.type"),
        ({"trainable": {"image": "x"}}, "spec.trainable.entrypoint: Required value"),
        ({"trainable": {"image": "x", "entrypoint": "no colon"}}, "spec.trainable.entrypoint"),
        # runConfig.stop values are numbers or booleans, which a structural schema cannot say
        # (nor CEL see): the reader refuses a string (test_manifest_agreement, ONLY_KUBETUNE)
        ({"resources": {"bundles": [{"GPU": -1}]}}, "spec.resources.bundles[0].GPU"),
        ({"paramSpace": {"epochs": 10}}, "spec.paramSpace.epochs: Invalid value"),
        ({"restoreFrom": "/data/old-experiment"}, "spec.restoreFrom"),
        ({"restoreOptions": {"resumeErrored": "yes"}}, "spec.restoreOptions.resumeErrored"),
        (
            {"tuneConfig": {"numSamples": 0, "metric": "m", "mode": "max"}},
            "tuneConfig.numSamples must be positive, or -1 for no limit",
        ),
    ],
)
def test_bad_manifests_are_refused_with_readable_messages(
    crds_applied, namespace, overrides, message
):
    result = _apply(crds_applied, namespace, _experiment("bad", **overrides), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_param_space_and_trainable_are_immutable_but_suspend_is_not(crds_applied, namespace):
    _apply(crds_applied, namespace, _experiment("imm"))
    changed = _experiment("imm", paramSpace={"a": {"uniform": {"lower": 0, "upper": 2}}})
    result = _apply(crds_applied, namespace, changed, check=False)
    assert result.returncode != 0 and "paramSpace is immutable" in result.stderr
    changed = _experiment("imm", trainable={"image": "other", "entrypoint": "train:objective"})
    result = _apply(crds_applied, namespace, changed, check=False)
    assert result.returncode != 0 and "trainable is immutable" in result.stderr
    edited = _experiment("imm", suspend=True)
    edited["spec"]["tuneConfig"]["maxConcurrentTrials"] = 2
    _apply(crds_applied, namespace, edited)


def test_crd_yaml_parses():
    for name in crd.CRDS:
        doc = yaml.safe_load((REPO / "crds" / name).read_text())
        assert doc["kind"] == "CustomResourceDefinition"
