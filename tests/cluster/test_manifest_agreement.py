"""``kubetune validate`` and ``kubectl apply`` (strict field validation, the real API server)
on the same bad manifests: both refuse, both name the field.

Where the API server cannot see a mistake (inside a param space's open encoding; duplicate
YAML keys, which kubectl's YAML-to-JSON step drops, last one winning), kubetune validate is
stricter on purpose and the operator, reading with the same reader, stalls naming the field
(tests/cluster/test_manifest_fuzz.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.operator_helpers import apply_crds
from tests.unit.manifest.test_reader import edited

REPO = Path(__file__).resolve().parents[2]

BOTH = [
    ("  tuneConfig:", "  tunConfig:", "spec.tunConfig"),
    ("    numSamples: 2", "    num_samples: 2", "spec.tuneConfig.num_samples"),
    ("{numToKeep: 2}", "{numToKeep: 2, keep: 1}", "spec.runConfig.checkpointConfig.keep"),
    ("  name: exp", "  name: exp\n  nmae: x", "metadata.nmae"),
    ("{lower: 0, upper: 1}}", "{lower: 0, upper: 1, qq: 1}}", "spec.paramSpace.a.uniform.qq"),
    (
        "{uniform: {lower: 0, upper: 1}}",
        "{uniform: {lower: 0, upper: 1}, randint: {lower: 0, upper: 3}}",
        "spec.paramSpace",
    ),
    ("  name: exp", "  name: My Experiment", "metadata.name"),
    ("  name: exp", "  name: 123", "metadata.name"),
    ("numSamples: 2", f"numSamples: {2**70}", "spec.tuneConfig.numSamples"),
    ("bundles: [{CPU: 1}]", "bundles: [{CPU: 1, GPU: 1.5}]", "spec.resources.bundles"),
    ("bundles: [{CPU: 1}]", "bundles: [{CPU: 1, TPU: 0.5}]", "spec.resources.bundles"),
    (
        "numSamples: 2",
        "numSamples: 2\n    maxConcurrentTrials: 0",
        "spec.tuneConfig.maxConcurrentTrials",
    ),
]
ONLY_KUBETUNE = [
    (
        "{uniform: {lower: 0, upper: 1}}",
        "{unifrom: {lower: 0, upper: 1}}",
        "spec.paramSpace.a.unifrom",
    ),
    (
        "{uniform: {lower: 0, upper: 1}}",
        "{uniform: {lower: 0, upper: 1}, choice: [1]}",
        "spec.paramSpace.a",
    ),
    ("    metric: score", "    metric: score\n    metric: loss", "spec.tuneConfig.metric"),
    # a stop value is a number or a boolean: the CRD cannot say "one of two types"
    ("  runConfig:\n", "  runConfig:\n    stop: {x: 'yes'}\n", "spec.runConfig.stop.x"),
]


@pytest.fixture(scope="module")
def api(control_plane):
    apply_crds(control_plane)
    return control_plane


def kubectl_apply(cp, namespace: str, text: str):
    return cp.kubectl(
        "apply",
        "-n",
        namespace,
        "--validate=strict",
        "--dry-run=server",
        "-f",
        "-",
        input=text,
        check=False,
    )


def kubetune_validate(tmp_path: Path, text: str):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "kubetune.cli", "validate", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("old", "new", "field"), BOTH)
def test_both_refuse_naming_the_field(api, namespace, tmp_path, old, new, field):
    text = edited(old, new)
    theirs = kubectl_apply(api, namespace, text)
    ours = kubetune_validate(tmp_path, text)
    assert theirs.returncode != 0 and field in theirs.stderr, theirs.stderr
    assert ours.returncode == 2 and f": {field}" in ours.stderr, ours.stderr
    assert "Traceback" not in ours.stderr


@pytest.mark.parametrize(("old", "new", "field"), ONLY_KUBETUNE)
def test_what_the_api_server_cannot_see_kubetune_refuses(api, namespace, tmp_path, old, new, field):
    text = edited(old, new)
    assert kubectl_apply(api, namespace, text).returncode == 0  # documents today's reality
    ours = kubetune_validate(tmp_path, text)
    assert ours.returncode == 2 and f": {field}" in ours.stderr, ours.stderr


def test_both_accept_the_base_and_read_boolean_keys_alike(api, namespace, tmp_path):
    import json

    text = edited(
        "    a: {uniform", "    n: {choice: [1, 2]}\n    on: {choice: [3]}\n    a: {uniform"
    )
    out = api.kubectl(
        "apply", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-", input=text
    )
    server_keys = set(json.loads(out.stdout)["spec"]["paramSpace"])
    ours = kubetune_validate(tmp_path, text)
    assert ours.returncode == 0, ours.stderr
    assert ours.stderr.count("warning: kubectl reads the key") == 2
    from kubetune.manifest.validate import Manifest

    assert (
        set(Manifest(text).validate()["spec"]["paramSpace"])
        == server_keys
        == {"a", "lr", "false", "true"}
    )


def test_both_accept_boolean_stop_criteria(api, namespace, tmp_path):
    import json

    text = edited("  runConfig:\n", "  runConfig:\n    stop: {done: true, training_iteration: 5}\n")
    out = api.kubectl(
        "apply", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-", input=text
    )
    assert json.loads(out.stdout)["spec"]["runConfig"]["stop"] == {
        "done": True,
        "training_iteration": 5,
    }
    ours = kubetune_validate(tmp_path, text)
    assert ours.returncode == 0, ours.stderr
