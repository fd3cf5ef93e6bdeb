"""Trainables the sidecar tests run through ``python -m kubetune.trial``."""

from __future__ import annotations

import json
import os
import tempfile
import time

from kubetune.air import session
from kubetune.air.checkpoint import Checkpoint


def scored(config: dict) -> None:
    """Reports ``config["n"]`` results, each with a checkpoint holding ``size`` bytes; the
    score goes up and down so that a keep-rule by score differs from one by age."""
    scores = config.get("scores") or [1, 5, 3, 4, 2, 6, 0, 7]
    start = 0
    ckpt = session.get_checkpoint()
    if ckpt is not None:
        with open(os.path.join(ckpt.path, "state.json")) as f:
            start = json.load(f)["i"] + 1
    for i in range(start, config["n"]):
        time.sleep(config.get("sleep", 0.0))
        d = tempfile.mkdtemp()
        with open(os.path.join(d, "state.json"), "w") as f:
            json.dump({"i": i}, f)
        size = config.get("size", 0)
        if size:
            with open(os.path.join(d, "blob.bin"), "wb") as f:
                f.write(os.urandom(min(size, 1 << 20)) * max(1, size >> 20))
        wait = config.get("wait_file")
        if wait and i == config.get("wait_at"):
            while not os.path.exists(wait):
                time.sleep(0.02)
        session.report(
            {"score": scores[i % len(scores)], "i": i}, checkpoint=Checkpoint.from_directory(d)
        )


def dump_env(config: dict) -> None:
    """Reports its own environment (to prove it holds no credentials or token)."""
    session.report({"env": dict(os.environ), "files": sorted(os.listdir(config["root"]))})
