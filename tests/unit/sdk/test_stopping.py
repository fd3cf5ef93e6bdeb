"""SIGTERM with a known grace period: the trial reaches a checkpoint, then exits
(kubetune.trial.stopping). A preempted pod gets exactly this from its kubelet."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from kubetune.trial import exit_codes
from kubetune.trial.stopping import stop_window_s

from .conftest import launch, spec_for

ENTRY = "tests.unit.sdk.stopping_trainables"


def test_the_window_leaves_the_final_upload_its_share():
    assert stop_window_s(None) == 0.0
    assert stop_window_s(0) == 0.0
    assert stop_window_s(60) == 50.0  # 10 s for the sidecar's final upload
    assert stop_window_s(10) == 5.0
    assert stop_window_s(0.6) == 0.0  # too short to reach anything


def start(tmp: Path, name: str, entry: str, step_s: float, grace: float | None, **extra):
    marks = tmp / f"{name}.marks"
    marks.touch()
    config = {"marks": str(marks), "step_s": step_s, **extra.pop("config", {})}
    spec = spec_for(tmp, name, "x", config, trainable=f"{ENTRY}:{entry}", **extra)
    if grace is not None:
        spec["termination_grace_s"] = grace
    return launch(spec), spec, marks


def wait_mark(marks: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in marks.read_text():
        assert time.monotonic() < deadline, f"no {text!r} in {marks.read_text()!r}"
        time.sleep(0.01)


def results(spec: dict) -> list[dict]:
    path = Path(spec["out_dir"]) / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def done(spec: dict) -> dict:
    return json.loads(Path(spec["done_marker"]).read_text())


def test_a_class_trial_sigtermed_mid_step_finishes_it_checkpoints_and_resumes_from_it(tmp_path):
    proc, spec, marks = start(tmp_path, "cls", "SlowSteps", 0.6, grace=30)
    wait_mark(marks, "step 3")
    time.sleep(0.1)  # inside step 3
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == exit_codes.TERMINATED, err
    rows = results(spec)
    assert [r["n"] for r in rows] == [1, 2, 3]  # step 3 finished, no step 4 began
    assert "step 4" not in marks.read_text()
    name = rows[-1]["checkpoint_dir_name"]
    assert name and (Path(spec["out_dir"]) / name / "n.json").exists()
    assert done(spec)["last_checkpoint"] == name
    assert took < 0.6 + 5, took  # the rest of the step, the save: well inside the window
    print(f"SIGTERM to exit with a checkpoint: {took:.2f} s (step 0.6 s)")

    # the next attempt restores it: the state and the iteration count go on from step 3
    proc2, spec2, _marks2 = start(
        tmp_path,
        "cls2",
        "SlowSteps",
        0.05,
        grace=30,
        restore_from=str(Path(spec["out_dir"]) / name),
        stop={"training_iteration": 5},
    )
    _, err = proc2.communicate(timeout=30)
    assert proc2.returncode == exit_codes.STOPPED, err
    rows2 = results(spec2)
    assert [r["n"] for r in rows2] == [4, 5]
    assert [r["training_iteration"] for r in rows2] == [4, 5]
    assert rows2[0]["restored_from"] == 3


def test_a_step_longer_than_the_window_is_cut_short_without_a_checkpoint(tmp_path):
    proc, spec, marks = start(tmp_path, "long", "SlowSteps", 30, grace=2)  # window: 1 s
    wait_mark(marks, "step 1")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == exit_codes.TERMINATED, err
    assert results(spec) == []
    assert done(spec)["last_checkpoint"] is None
    assert 0.9 < took < 5, took


def test_without_a_grace_period_sigterm_ends_the_step_at_once(tmp_path):
    proc, spec, marks = start(tmp_path, "now", "SlowSteps", 30, grace=None)
    wait_mark(marks, "step 1")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == exit_codes.TERMINATED, err
    assert time.monotonic() - sent < 3
    assert results(spec) == []


def test_a_class_trial_that_cannot_checkpoint_still_ends_cleanly(tmp_path):
    proc, spec, marks = start(tmp_path, "nock", "SlowStepsNoCheckpoint", 0.5, grace=30)
    wait_mark(marks, "step")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == exit_codes.TERMINATED, err
    assert [r["checkpoint_dir_name"] for r in results(spec)] == [None]
    assert "Traceback" not in err


def test_a_function_trial_can_ask_whether_it_is_stopping(tmp_path):
    proc, spec, marks = start(tmp_path, "fn", "checkpoints_when_stopping", 0.4, grace=30)
    wait_mark(marks, "step 3")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == exit_codes.TERMINATED, err
    text = marks.read_text()
    assert "step 3 stopping=False" in text and "step 4" not in text
    rows = results(spec)
    assert [r["i"] for r in rows] == [1, 2, 3]
    assert [bool(r["checkpoint_dir_name"]) for r in rows] == [False, False, True]
    assert done(spec)["last_checkpoint"] == rows[-1]["checkpoint_dir_name"]


@pytest.mark.parametrize("entry", ["SlowSteps", "checkpoints_when_stopping"])
def test_a_second_sigterm_ends_the_trial_at_once(tmp_path, entry):
    proc, _spec, marks = start(tmp_path, "twice", entry, 30, grace=120)
    wait_mark(marks, "step 1")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert proc.poll() is None  # still finishing its step
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == exit_codes.TERMINATED, err
    assert time.monotonic() - sent < 3


def test_a_class_trial_waiting_for_a_decision_checkpoints_and_exits_at_once(tmp_path):
    import os
    import subprocess
    import sys

    from .conftest import REPO

    to_trial_r, to_trial_w = os.pipe()
    from_trial_r, from_trial_w = os.pipe()
    marks = tmp_path / "gate.marks"
    marks.touch()
    config = {"marks": str(marks), "step_s": 0.05}
    spec = spec_for(tmp_path, "gate", "x", config, trainable=f"{ENTRY}:SlowSteps")
    spec.update(
        termination_grace_s=30,
        decision_points=[2],
        gate={"kind": "pipe", "write_fd": from_trial_w, "read_fd": to_trial_r},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetune.trial", "--spec-json", json.dumps(spec)],
        cwd=REPO,
        pass_fds=(from_trial_w, to_trial_r),
    )
    os.close(from_trial_w)
    os.close(to_trial_r)
    with os.fdopen(from_trial_r) as reader:
        request = json.loads(reader.readline())  # waiting at iteration 2, never answered
        assert request["training_iteration"] == 2
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    os.close(to_trial_w)
    assert proc.returncode == exit_codes.TERMINATED
    assert time.monotonic() - sent < 3
    assert [r["checkpoint_dir_name"] for r in results(spec)] == [None, None]
    name = done(spec)["last_checkpoint"]  # saved on the way out, named in the exit record
    assert json.loads((Path(spec["out_dir"]) / name / "n.json").read_text()) == {"n": 2}
