"""Local mode: a trial process that someone else sends SIGTERM (as a kubelet does to a
preempted pod) saves a checkpoint at the end of its step and is retried from it, without
counting a failure."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from kubetune import air, tune

from . import trainables as T


def sigterm_at_step(marks: Path, step: int, sent: dict) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in marks.read_text().splitlines():
            pid, n, _ = line.split()
            if int(n) == step:
                time.sleep(0.1)  # inside that step
                sent["at"] = time.monotonic()
                os.kill(int(pid), signal.SIGTERM)
                return
        time.sleep(0.01)


def test_a_sigtermed_trial_resumes_from_the_checkpoint_it_saved_not_counted_as_failure(tmp_path):
    marks = tmp_path / "marks"
    marks.touch()
    sent: dict = {}
    killer = threading.Thread(target=sigterm_at_step, args=(marks, 3, sent), daemon=True)
    killer.start()
    results = tune.Tuner(
        T.CountsSteps,
        param_space={"marks": str(marks), "step_s": 0.4},
        run_config=air.RunConfig(
            name="preempt",
            storage_path=str(tmp_path / "results"),
            stop={"training_iteration": 6},
            failure_config=air.FailureConfig(max_failures=0),  # a failure would end it
            verbose=0,
        ),
    ).fit()
    killer.join(5)
    assert "at" in sent
    assert results.num_errors == 0
    result = results[0]
    assert result.metrics["training_iteration"] == 6
    assert result.metrics["n"] == 6
    assert result.metrics["restored_from"] == 3  # step 3 finished and was checkpointed
    steps = [line.split() for line in marks.read_text().splitlines()]
    assert [int(n) for _, n, _ in steps] == [1, 2, 3, 4, 5, 6]  # no step run twice
    assert len({pid for pid, _, _ in steps}) == 2  # two processes: the second resumed
    resumed = float(steps[3][2]) - sent["at"]  # SIGTERM to the resumed trial's next step
    print(f"local mode: SIGTERM mid-step to the resumed trial stepping: {resumed:.2f} s")
    state = json.loads((tmp_path / "results" / "preempt" / "experiment_state.json").read_text())
    (trial,) = state["engine"]["trials"]
    assert trial["num_failures"] == 0 and trial["num_preemptions"] == 1
    assert trial["last_disruption"] == "SIGTERM"
