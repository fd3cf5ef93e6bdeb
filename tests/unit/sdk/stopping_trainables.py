"""Trainables for the SIGTERM tests (test_stopping.py): each announces a step's start in
``config["marks"]`` so the test signals it mid-step."""

from __future__ import annotations

import json
import os
import tempfile
import time

from kubetune import tune
from kubetune.air import Checkpoint, session


def _mark(config: dict, text: str) -> None:
    with open(config["marks"], "a") as f:
        f.write(text + "\n")


class SlowSteps(tune.Trainable):
    """Each step takes config["step_s"]; its state is the number of finished steps."""

    def setup(self, config):
        self.n = 0
        self.restored_from = None

    def step(self):
        _mark(self.config, f"step {self.n + 1}")
        time.sleep(self.config["step_s"])
        self.n += 1
        return {"n": self.n, "restored_from": self.restored_from}

    def save_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "n.json"), "w") as f:
            json.dump({"n": self.n}, f)

    def load_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "n.json")) as f:
            self.n = json.load(f)["n"]
        self.restored_from = self.n


class SlowStepsNoCheckpoint(tune.Trainable):
    def step(self):
        _mark(self.config, "step")
        time.sleep(self.config["step_s"])
        return {"ok": 1}


def checkpoints_when_stopping(config):
    """A Function-API trainable that passes a checkpoint only when asked to stop."""
    start = 0
    ckpt = session.get_checkpoint()
    if ckpt is not None:
        with open(os.path.join(ckpt.path, "i.json")) as f:
            start = json.load(f)["i"]
    for i in range(start, config.get("n", 10_000)):
        _mark(config, f"step {i + 1} stopping={tune.is_stopping()}")
        time.sleep(config["step_s"])
        checkpoint = None
        if session.is_stopping():
            d = tempfile.mkdtemp()
            with open(os.path.join(d, "i.json"), "w") as f:
                json.dump({"i": i + 1}, f)
            checkpoint = Checkpoint.from_directory(d)
        session.report({"i": i + 1, "restored_from": start}, checkpoint=checkpoint)
