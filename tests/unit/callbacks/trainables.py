"""Trainables for the callback tests (importable by the trial processes)."""

from __future__ import annotations

import os
import tempfile

from kubetune import tune
from kubetune.air import session
from kubetune.air.checkpoint import Checkpoint


def _checkpoint(step: int) -> Checkpoint:
    path = tempfile.mkdtemp()
    with open(os.path.join(path, "step"), "w") as f:
        f.write(str(step))
    return Checkpoint.from_directory(path)


def three_reports(config):
    """Reports 1, 2 (with a checkpoint), 3 and returns."""
    session.report({"score": config.get("x", 1) * 1.0})
    session.report({"score": config.get("x", 1) * 2.0}, checkpoint=_checkpoint(2))
    session.report({"score": config.get("x", 1) * 3.0})


def fails_once(config):
    """First attempt: a checkpointed report, then an exception; the retry resumes and ends."""
    if session.get_checkpoint() is None:
        session.report({"score": 1.0}, checkpoint=_checkpoint(1))
        raise RuntimeError("first attempt fails")
    session.report({"score": 2.0})


def always_fails(config):
    session.report({"score": 0.0})
    raise ValueError("this trial always fails")


def counts(config):
    for i in range(1, 50):
        session.report({"score": float(i), "nested": {"value": i * 0.5}, "hist": [1, 2, i]})


def context_names(config):
    ctx = tune.get_context()
    session.report(
        {
            "score": 1.0,
            "ctx_trial_name": ctx.get_trial_name(),
            "ctx_trial_id": ctx.get_trial_id(),
            "ctx_experiment": ctx.get_experiment_name(),
            "ctx_world_size": ctx.get_world_size(),
        }
    )
