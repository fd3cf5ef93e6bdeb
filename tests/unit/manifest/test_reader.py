"""The manifest reader: YAML limits, kubectl's YAML reading, unknown fields, names, bounds."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kubetune.manifest.experiment import plan_from_manifest
from kubetune.manifest.validate import Manifest, ManifestError
from tests.unit.local.test_restore import _cli

REPO = Path(__file__).resolve().parents[3]

BASE = textwrap.dedent(
    """\
    apiVersion: kubetune.io/v1alpha1
    kind: TuneExperiment
    metadata:
      name: exp
    spec:
      trainable:
        image: example/trial:1
        entrypoint: tests.unit.local.trainables:always_fails
      paramSpace:
        a: {uniform: {lower: 0, upper: 1}}
        lr: {loguniform: {lower: 1e-4, upper: 1e-1}}
      tuneConfig:
        metric: score
        mode: max
        numSamples: 2
      runConfig:
        checkpointConfig: {numToKeep: 2}
      resources:
        bundles: [{CPU: 1}]
    """
)


def edited(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def refusal(text: str) -> str:
    with pytest.raises(ManifestError) as info:
        Manifest(text, "exp.yaml").validate()
    return str(info.value)


LR = "    lr: {loguniform: {lower: 1e-4, upper: 1e-1}}\n"


def with_params(extra: str) -> str:
    """BASE with more paramSpace entries (after lr)."""
    return edited(LR, LR + extra)


def billion_laughs(levels: int = 12) -> str:
    extra = "    l0: {constant: &l0 [lol]}\n"
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * 10)
        extra += f"    l{i}: {{constant: &l{i} [{refs}]}}\n"
    return with_params(extra)


def test_the_base_manifest_is_valid_and_numbers_read_as_kubectl_reads_them():
    doc = Manifest(BASE, "exp.yaml").validate()
    # 1e-4 is a float for kubectl (go-yaml); PyYAML alone reads it as a string
    assert doc["spec"]["paramSpace"]["lr"]["loguniform"]["lower"] == 1e-4


# -- YAML limits, before anything is built ----------------------------------------------------
def test_billion_laughs_is_refused_fast(tmp_path):
    began = time.monotonic()
    message = refusal(billion_laughs())
    assert time.monotonic() - began < 5
    assert "refused: expands to more than 100,000 values" in message
    assert message.startswith("exp.yaml:")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_billion_laughs_and_deep_nesting_are_clean_errors_in_the_cli(tmp_path, command):
    for name, text, expected in (
        ("laughs.yaml", billion_laughs(), "expands to more than"),
        (
            "deep.yaml",
            with_params("    deep: {constant: " + "[" * 5000 + "]" * 5000 + "}\n"),
            "nested deeper than 100 levels",
        ),
    ):
        path = tmp_path / name
        path.write_text(text)
        extra = ["--storage-path", str(tmp_path / "r")] if command == "run" else []
        began = time.monotonic()
        out = _cli(command, str(path), *extra)
        assert time.monotonic() - began < 60
        assert out.returncode == 2, out.stderr
        assert f"{path}:" in out.stderr and expected in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
        assert not (tmp_path / "r").exists()  # nothing written


def test_deep_block_nesting_and_recursive_aliases_are_refused():
    deep = "".join("  " * (i + 2) + f"k{i}:\n" for i in range(300))
    assert "nested deeper than 100 levels" in refusal(with_params("    deep:\n" + deep))
    recursive = refusal(with_params("    r: {constant: &r [*r]}\n"))
    assert "exp.yaml:" in recursive and "recursive" in recursive


def test_aliases_and_merge_keys_within_limits_still_work():
    text = edited("bundles: [{CPU: 1}]", "bundles: [&b {CPU: 1}, *b, {<<: *b, memory: 1000}]")
    doc = Manifest(text, "exp.yaml").validate()
    assert doc["spec"]["resources"]["bundles"][2] == {"CPU": 1, "memory": 1000}


# -- unknown fields, duplicates, sampler typos: file:line: field ------------------------------
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  tuneConfig:",
            "  tunConfig:",
            "exp.yaml:12: spec.tunConfig: unknown field (did you mean tuneConfig?)",
        ),
        (
            "    numSamples: 2",
            "    num_samples: 2",
            "exp.yaml:15: spec.tuneConfig.num_samples: unknown field (did you mean numSamples?)",
        ),
        (
            "{numToKeep: 2}",
            "{numToKeep: 2, keep: 1}",
            "exp.yaml:17: spec.runConfig.checkpointConfig.keep: unknown field",
        ),
        (
            "  name: exp",
            "  name: exp\n  nmae: x",
            "exp.yaml:5: metadata.nmae: unknown field (did you mean name?)",
        ),
        (
            "{uniform: {lower: 0, upper: 1}}",
            "{unifrom: {lower: 0, upper: 1}}",
            "exp.yaml:10: spec.paramSpace.a.unifrom: not a sampler (did you mean uniform?)",
        ),
        (
            "{uniform: {lower: 0, upper: 1}}",
            "{grid_search: [1, 2]}",
            "spec.paramSpace.a.grid_search: not a sampler (did you mean gridSearch?)",
        ),
        (
            "{uniform: {lower: 0, upper: 1}}",
            "{x: {choise: [1, 2]}}",
            "spec.paramSpace.a.x.choise: not a sampler (did you mean choice?)",
        ),
        (
            "{uniform: {lower: 0, upper: 1}}",
            "{uniform: {lower: 0, upper: 1}, choice: [1]}",
            "exp.yaml:10: spec.paramSpace.a: a sampler object has exactly one key",
        ),
        (
            "{uniform: {lower: 0, upper: 1}}",
            "{x: {randint: {lower: 0, upper: 3}, q: 2}}",
            "spec.paramSpace.a.x: a sampler object has exactly one key",
        ),
        (
            "{uniform: {lower: 0, upper: 1}}",
            "{uniform: {lower: 0, upper: 1, qq: 1}}",
            "spec.paramSpace.a.uniform.qq: unknown field",
        ),
        (
            "    metric: score",
            "    metric: score\n    metric: loss",
            "exp.yaml:14: spec.tuneConfig.metric: duplicate key (first at line 13)",
        ),
    ],
)
def test_typos_and_unknown_fields_are_refused_naming_file_line_and_field(old, new, expected):
    assert expected in refusal(edited(old, new))


def test_every_unknown_field_is_reported_at_once():
    text = edited("  tuneConfig:", "  tunConfig:").replace("{numToKeep: 2}", "{numToKep: 2}")
    lines = refusal(text).splitlines()
    assert any("spec.tunConfig" in line for line in lines)
    assert any("spec.runConfig.checkpointConfig.numToKep" in line for line in lines)


def test_a_constant_may_look_like_anything():
    text = edited(
        "{uniform: {lower: 0, upper: 1}}",
        "{constant: {unifrom: {lower: 0, upper: 1}, choice: [1], grid_search: [2]}}",
    )
    plan = plan_from_manifest(Manifest(text, "exp.yaml"))
    assert plan.param_space["a"] == {
        "unifrom": {"lower": 0, "upper": 1},
        "choice": [1],
        "grid_search": [2],
    }


# -- names, bounds, numbers -----------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["123", "'.'", "a/b", "''", "My Experiment", "x" * 64, "-a", "a_b"]
)
def test_names_must_be_dns_1123_labels(name):
    message = refusal(edited("  name: exp", f"  name: {name}"))
    assert "exp.yaml:4: metadata.name:" in message and "DNS-1123" in message


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("numSamples: 2", f"numSamples: {2**70}", "spec.tuneConfig.numSamples"),
        (
            "numSamples: 2",
            "numSamples: 2\n    maxConcurrentTrials: 10000000",
            "spec.tuneConfig.maxConcurrentTrials",
        ),
        ("numSamples: 2", "numSamples: 2\n    seed: -1", "spec.tuneConfig.seed"),
        ("{numToKeep: 2}", f"{{numToKeep: {2**60}}}", "spec.runConfig.checkpointConfig.numToKeep"),
        ("{lower: 0, upper: 1}}", "{lower: 0, upper: .inf}}", "spec.paramSpace.a.uniform.upper"),
        ("bundles: [{CPU: 1}]", "bundles: [{CPU: 1, GPU: 1.5}]", "spec.resources.bundles"),
        ("bundles: [{CPU: 1}]", "bundles: [{CPU: 1, TPU: 0.5}]", "spec.resources.bundles"),
    ],
)
def test_out_of_range_values_are_refused(old, new, field):
    assert f": {field}:" in refusal(edited(old, new))


def test_half_gpus_that_sum_to_whole_ones_are_fine():
    text = edited("bundles: [{CPU: 1}]", "bundles: [{CPU: 0.5, GPU: 0.5}, {GPU: 0.5}]")
    assert Manifest(text, "exp.yaml").validate()


# -- YAML 1.1 booleans as keys --------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value"),
    [("n", False), ("y", True), ("on", True), ("off", False), ("yes", True), ("no", False)],
)
def test_boolean_looking_param_keys_warn_and_read_as_kubectl_reads_them(key, value):
    text = edited("    a: {uniform", f"    {key}: {{choice: [1, 2]}}\n    a: {{uniform")
    manifest = Manifest(text, "exp.yaml")
    spelled = str(value).lower()
    assert len(manifest.warnings) == 1
    assert (
        f"exp.yaml:10: spec.paramSpace.{spelled}: warning: kubectl reads the key {key}"
        in manifest.warnings[0]
    )
    assert (
        spelled in plan_from_manifest(manifest).param_space
    )  # the same config key as on a cluster
    quoted = Manifest(
        edited("    a: {uniform", f"    '{key}': {{choice: [1]}}\n    a: {{uniform"), "q.yaml"
    )
    assert quoted.warnings == [] and key in plan_from_manifest(quoted).param_space


def test_validate_prints_the_boolean_key_warning(tmp_path):
    path = tmp_path / "n.yaml"
    path.write_text(edited("    a: {uniform", "    n: {choice: [1, 2]}\n    a: {uniform"))
    out = _cli("validate", str(path))
    assert out.returncode == 0, out.stderr
    assert (
        "spec.paramSpace.false: warning: kubectl reads the key n as the boolean false" in out.stderr
    )


# -- the run command's own options ------------------------------------------------------------
@pytest.mark.parametrize("storage", ["s3://", "s3:///prefix", "s3:bucket"])
def test_storage_path_without_a_bucket_is_refused(tmp_path, storage):
    path = tmp_path / "exp.yaml"
    path.write_text(BASE)
    out = subprocess.run(
        [sys.executable, "-m", "kubetune.cli", "run", str(path), "--storage-path", storage],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 2 and "--storage-path" in out.stderr and "BUCKET" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]  # no folder "s3:"


@pytest.mark.parametrize("name", ["a/b", "."])
def test_run_name_option_is_a_dns_label_too(tmp_path, name):
    path = tmp_path / "exp.yaml"
    path.write_text(BASE)
    out = _cli("run", str(path), "--storage-path", str(tmp_path / "r"), "--name", name)
    assert out.returncode == 2 and "--name" in out.stderr, out.stderr
    assert not (tmp_path / "r").exists()


def test_quiet_run_with_every_trial_failed_prints_the_failures(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(BASE)
    out = _cli("run", str(path), "--storage-path", str(tmp_path / "r"), "-q")
    assert out.returncode == 1
    assert "2 of 2 trials errored" in out.stderr, out.stderr
    assert "error.txt" in out.stderr


# -- runConfig.stop: numbers and booleans, as local mode takes them --------------------------
def test_boolean_stop_criteria_are_read_and_stop_on_the_first_true_result(tmp_path):
    text = (
        BASE.replace("always_fails", "flags_when_done")
        .replace("    a: {uniform: {lower: 0, upper: 1}}\n", "    at: {constant: 3}\n")
        .replace("  runConfig:\n", "  runConfig:\n    stop: {finished: true}\n")
    )
    plan = plan_from_manifest(Manifest(text, "exp.yaml"))
    assert plan.run_config.stop == {"finished": True}
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    out = _cli("run", str(path), "--storage-path", str(tmp_path / "r"), "-q")
    assert out.returncode == 0, out.stderr
    results = sorted((tmp_path / "r" / "exp").glob("*/result.json"))
    assert len(results) == 2
    for result in results:
        rows = [json.loads(line) for line in result.read_text().splitlines()]
        assert [r["finished"] for r in rows] == [False, False, True]


@pytest.mark.parametrize("value", ["'yes'", "[1]", "{a: 1}", "null"])
def test_stop_criteria_other_than_numbers_and_booleans_are_refused(value):
    message = refusal(edited("  runConfig:\n", f"  runConfig:\n    stop: {{x: {value}}}\n"))
    assert "exp.yaml:17: spec.runConfig.stop.x: must be a number or a boolean" in message
