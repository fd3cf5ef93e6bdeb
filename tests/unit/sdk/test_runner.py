"""The trial runner: output layout, bad input, signals, decision points."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubetune.trial import exit_codes

from .conftest import REPO, launch, spec_for


def test_output_layout_and_auto_filled_fields(run_trial):
    run = run_trial("trainable_every_step", {"a": 2, "b": 4}, experiment_tag="0_a=2,b=4")
    assert json.loads((run.out / "params.json").read_text()) == {"a": 2, "b": 4}
    first = run.results[0]
    for key in (
        "score",
        "time_this_iter_s",
        "done",
        "training_iteration",
        "trial_id",
        "date",
        "timestamp",
        "time_total_s",
        "pid",
        "hostname",
        "node_ip",
        "config",
        "time_since_restore",
        "iterations_since_restore",
        "checkpoint_dir_name",
        "experiment_tag",
    ):
        assert key in first, key
    assert first["experiment_tag"] == "0_a=2,b=4"
    assert first["config"] == {"a": 2, "b": 4}
    assert first["pid"] != os.getpid()
    times = [r["time_total_s"] for r in run.results]
    assert times == sorted(times)
    header, *rows = (run.out / "progress.csv").read_text().splitlines()
    assert "config" not in header.split(",")
    assert len(rows) == 20
    assert not (run.out / "error.txt").exists()
    assert run.status == {
        "exit_code": 0,
        "status": "finished",
        "reason": "",
        "training_iteration": 20,
        "last_checkpoint": None,
    }


def test_tune_report_and_train_report_aliases(run_trial):
    run = run_trial("aliases", {})
    assert [r["via"] for r in run.results] == [1, 2, 3]
    assert [r["training_iteration"] for r in run.results] == [1, 2, 3]


def test_directory_checkpoints_are_moved(run_trial, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    run = run_trial("directory_checkpoints", {"scratch": str(scratch)})
    assert run.code == 0
    assert run.checkpoints() == [f"checkpoint_00000{i}" for i in range(3)]
    assert list(scratch.iterdir()) == []  # taken over: the originals are gone
    assert (run.out / "checkpoint_000002" / "weights.bin").read_bytes() == bytes([2]) * 10


def test_values_json_lacks_are_written_as_ray_writes_them(run_trial):
    pytest.importorskip("numpy")
    run = run_trial("numpy_values", {}, stop={"nested/loss": 0.2})
    assert run.code == exit_codes.STOPPED  # nested key flattened with "/"
    line = (run.out / "result.json").read_text()
    assert '"nan": NaN' in line and '"inf": Infinity' in line
    (result,) = run.results
    assert result["f32"] == 0.5 and result["i64"] == 7 and result["arr"] == [0, 1, 2]


def test_stop_criterion_missing_from_result_names_the_key(run_trial):
    run = run_trial("trainable_every_step", {"a": 1, "b": 1}, stop={"accuracy": 0.9})
    assert run.code == exit_codes.ERRORED
    assert "stop criterion 'accuracy' is not in the reported result" in run.error


def test_user_exception_keeps_earlier_results_and_checkpoints(run_trial):
    run = run_trial("fails_after", {"n": 3})
    assert run.code == exit_codes.ERRORED
    assert "ValueError: boom in user code" in run.error
    assert "Traceback" in run.error and "fails_after" in run.error
    assert [r["i"] for r in run.results] == [0, 1, 2]
    assert run.checkpoints() == ["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"]
    assert run.status["last_checkpoint"] == "checkpoint_000002"


@pytest.mark.parametrize(
    ("trainable", "message"),
    [
        ("reports_non_dict", "report() expects a dict of metrics, got list"),
        ("reports_unserialisable", "reported metric 'nested/bad' has a value of type object"),
        ("reports_missing_checkpoint_dir", "checkpoint directory does not exist"),
    ],
)
def test_bad_reports_error_clearly_and_lose_nothing(run_trial, trainable, message):
    run = run_trial(trainable, {})
    assert run.code == exit_codes.ERRORED
    assert message in run.error
    assert [r["ok"] for r in run.results] == [1]  # the good report before it is intact


def test_report_inside_a_trainable_class_is_refused(run_trial):
    run = run_trial("ReportsInside", {})
    assert run.code == exit_codes.ERRORED
    assert "must not be called inside a tune.Trainable" in run.error


def test_trainable_that_cannot_be_imported(run_trial):
    run = run_trial("does_not_exist", {})
    assert run.code == exit_codes.ERRORED
    assert "has no attribute 'does_not_exist'" in run.error
    run = run_trial("x", {}, trainable="no_such_module_here:fn")
    assert "module 'no_such_module_here' failed to import" in run.error


def test_trainable_that_cannot_be_unpickled(run_trial, tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    run = run_trial("x", {}, trainable=None, trainable_pickle=str(bad))
    assert run.code == exit_codes.ERRORED
    assert f"cannot unpickle the trainable from {bad}" in run.error


def test_restore_from_missing_directory(run_trial, tmp_path):
    run = run_trial("train_func", {}, restore_from=str(tmp_path / "nope"))
    assert run.code == exit_codes.ERRORED
    assert "restore_from: checkpoint directory does not exist" in run.error


def test_invalid_spec_names_the_field(tmp_path):
    spec = spec_for(tmp_path, "s", "train_func", {}, checkpoint_frequency=-1)
    proc = launch(spec)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == exit_codes.INVALID_SPEC
    assert "checkpoint_frequency" in err
    spec = spec_for(tmp_path, "s", "train_func", {}, stop={"loss": "low"})
    proc = launch(spec)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == exit_codes.INVALID_SPEC and "stop.loss must be a number" in err


def test_done_in_class_result_finishes_and_cleans_up(run_trial):
    run = run_trial("DoneAfterThree", {})
    assert run.code == exit_codes.FINISHED
    assert [r["n"] for r in run.results] == [1, 2, 3]
    assert (run.out / "cleanup_called").exists()


def test_broad_except_in_user_code_does_not_swallow_a_stop(run_trial):
    run = run_trial("swallows_everything", {}, stop={"training_iteration": 5})
    assert run.code == exit_codes.STOPPED
    assert len(run.results) == 5


@pytest.mark.parametrize("trainable", ["slow_reporter", "SlowClass"])
def test_sigterm_finishes_the_write_and_exits_cleanly(tmp_path, trainable):
    spec = spec_for(tmp_path, "sig", trainable, {"sleep": 0.002})
    proc = launch(spec)
    result_file = Path(spec["out_dir"]) / "result.json"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if result_file.exists() and result_file.stat().st_size > 2000:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == exit_codes.TERMINATED, err
    text = result_file.read_text()
    assert text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]  # every line whole
    assert [r["training_iteration"] for r in lines] == list(range(1, len(lines) + 1))
    status = json.loads(Path(spec["done_marker"]).read_text())
    assert status["status"] == "terminated"
    assert status["training_iteration"] == len(lines)


def _gate_driver(spec: dict, verdicts: dict[int, str]) -> tuple[int, list[dict], list[dict]]:
    """Run a trial with a pipe gate, answering each request from ``verdicts`` (default
    continue); return exit code, requests seen and results."""
    to_trial_r, to_trial_w = os.pipe()
    from_trial_r, from_trial_w = os.pipe()
    spec["gate"] = {"kind": "pipe", "write_fd": from_trial_w, "read_fd": to_trial_r}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetune.trial", "--spec-json", json.dumps(spec)],
        cwd=REPO,
        pass_fds=(from_trial_w, to_trial_r),
    )
    os.close(from_trial_w)
    os.close(to_trial_r)
    requests = []
    with os.fdopen(from_trial_r) as reader, os.fdopen(to_trial_w, "w") as writer:
        for line in reader:
            request = json.loads(line)
            requests.append(request)
            # the result was written before the trial asked
            results_now = (Path(spec["out_dir"]) / "result.json").read_text().splitlines()
            assert json.loads(results_now[-1])["training_iteration"] == request["value"]
            action = verdicts.get(request["value"], "continue")
            writer.write(json.dumps({"seq": request["seq"], "action": action}) + "\n")
            writer.flush()
    code = proc.wait(timeout=30)
    out = Path(spec["out_dir"]) / "result.json"
    return code, requests, [json.loads(x) for x in out.read_text().splitlines()]


def test_decision_points_wait_for_the_verdict_and_stop_exactly(tmp_path):
    spec = spec_for(tmp_path, "g", "slow_reporter", {"sleep": 0}, decision_points=[1, 3, 9, 27])
    code, requests, results = _gate_driver(spec, {9: "stop"})
    assert code == exit_codes.STOPPED
    assert [r["value"] for r in requests] == [1, 3, 9]
    assert len(results) == 9  # never ran past the milestone


def test_pause_verdict_saves_a_class_checkpoint(tmp_path):
    spec = spec_for(tmp_path, "p", "SlowClass", {}, decision_points=[4])
    code, _, results = _gate_driver(spec, {4: "pause"})
    assert code == exit_codes.PAUSED
    assert len(results) == 4
    status = json.loads(Path(spec["done_marker"]).read_text())
    assert status["last_checkpoint"] == "checkpoint_000000"
    from kubetune.air.checkpoint import Checkpoint

    ckpt = Checkpoint.from_directory(Path(spec["out_dir"]) / "checkpoint_000000")
    assert ckpt.to_dict() == {"n": 4}


def test_every_result_is_a_decision_point(tmp_path):
    spec = spec_for(tmp_path, "e", "trainable_every_step", {"a": 1, "b": 0})
    spec["decision_points"] = "every"
    code, requests, _results = _gate_driver(spec, {5: "restart"})
    assert code == exit_codes.RESTART
    assert [r["value"] for r in requests] == [1, 2, 3, 4, 5]


def test_file_gate_round_trip(tmp_path):
    from kubetune.trial.gate import FileGate

    gate_dir = tmp_path / "gate"
    spec = spec_for(tmp_path, "f", "trainable_every_step", {"a": 1, "b": 0})
    spec.update(decision_points=[2], gate={"kind": "file", "dir": str(gate_dir)})
    proc = launch(spec)
    request_file = gate_dir / FileGate.REQUEST
    deadline = time.monotonic() + 20
    while not request_file.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    request = json.loads(request_file.read_text())
    assert request["value"] == 2
    verdict = FileGate(str(gate_dir)).verdict_path(request["seq"])
    Path(verdict + ".tmp").write_text(json.dumps({"seq": request["seq"], "action": "stop"}))
    os.replace(verdict + ".tmp", verdict)
    proc.communicate(timeout=20)
    assert proc.returncode == exit_codes.STOPPED


def test_import_kubetune_is_light():
    code = (
        "import sys, kubetune; from kubetune import tune; from kubetune.air import session;"
        "import kubetune.trial.runner;"
        "heavy = {'kopf', 'kubernetes', 'boto3', 'optuna', 'pandas', 'numpy'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
