"""Trainables for the durability and chaos tests (importable by trial processes).

``stepper`` reports ``steps`` results, each with a checkpoint holding its step, so a trial
resumed from its latest checkpoint continues at the next step: every step must appear exactly
once in result.json however often the driver dies. Options (in the config):
``sleep`` (s per step), ``pid_dir`` (write ``<trial_id>.<pid>.pid`` files there, and
``child.<pid>.pid`` for children), ``ignore_term`` (ignore SIGTERM), ``child`` ("group" starts a
``sleep`` child in the trial's process group, "session" one in a new session), ``exit0_at``
(``os._exit(0)`` at that step), ``value`` (report ``score`` as this value instead of a number),
``blob`` (bytes of padding per result, to fill a disk).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from kubetune.air import session
from kubetune.air.checkpoint import Checkpoint


def _note_pid(config: dict, name: str) -> None:
    pid_dir = config.get("pid_dir")
    if pid_dir:
        with open(os.path.join(pid_dir, name), "w") as f:
            f.write("")


def stepper(config: dict) -> None:
    start = 0
    loaded = session.get_checkpoint()
    if loaded:
        start = loaded.to_dict()["step"] + 1
    _note_pid(config, f"{session.get_trial_id()}.{os.getpid()}.pid")
    if config.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = config.get("child")
    if child:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(300)"],
            start_new_session=child == "session",
        )
        _note_pid(config, f"child.{proc.pid}.pid")
    padding = "x" * int(config.get("blob", 0))
    for step in range(start, int(config["steps"])):
        time.sleep(float(config.get("sleep", 0.02)))
        if config.get("exit0_at") == step:
            os._exit(0)
        score = config.get("value", step)
        metrics = {"step": step, "score": score}
        if padding:
            metrics["blob"] = padding
        session.report(metrics, checkpoint=Checkpoint.from_dict({"step": step}))


def no_metric(config: dict) -> None:
    for step in range(3):
        session.report({"other": step})
