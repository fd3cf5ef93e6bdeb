"""Trainables for the dashboard's browser tests (importable by trial processes)."""

from __future__ import annotations

import time

from kubetune.air import session
from kubetune.air.checkpoint import Checkpoint


def curve(config):
    """A loss that falls with the step, lowest near lr=0.3; checkpoints every 4 steps;
    a negative lr fails at step 1 (an errored trial with an error.txt)."""
    start = 0
    loaded = session.get_checkpoint()
    if loaded:
        start = loaded.to_dict()["step"] + 1
    for step in range(start, config["steps"]):
        if config["lr"] < 0 and step == 1:
            raise ValueError(f"lr must be positive, got {config['lr']}")
        time.sleep(config.get("sleep", 0))
        loss = (config["lr"] - 0.3) ** 2 + 1.0 / (step + 1)
        checkpoint = Checkpoint.from_dict({"step": step}) if step % 4 == 3 else None
        session.report({"loss": loss, "step": step}, checkpoint=checkpoint)
