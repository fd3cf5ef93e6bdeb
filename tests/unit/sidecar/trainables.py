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
        files = config.get("files", 1)
        for k in range(files if size else 0):
            # different sizes, so that the files of one checkpoint are stored one by one
            n = max(1, size >> (2 * (files - 1 - k)))
            name = "blob.bin" if files == 1 else f"blob-{k}.bin"
            with open(os.path.join(d, name), "wb") as f:
                block = os.urandom(min(n, 1 << 20))
                for _ in range(max(1, n // len(block))):
                    f.write(block)
        waits = config.get("waits") or {}
        if str(i) in waits:
            while not os.path.exists(waits[str(i)]):
                time.sleep(0.02)
        session.report(
            {"score": scores[i % len(scores)], "i": i}, checkpoint=Checkpoint.from_directory(d)
        )


def dump_env(config: dict) -> None:
    """Reports its own environment (to prove it holds no credentials or token)."""
    session.report({"env": dict(os.environ), "files": sorted(os.listdir(config["root"]))})


def in_pod(config: dict) -> None:
    """Reports what the trial container can see (environment, mounts), then scored results."""
    sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    pod_points = ("/kubetune", "/var/run/secrets", "/run/secrets")  # the pod's, not the image's
    session.report(
        {
            "score": 0,
            "env": dict(os.environ),
            "mounts": sorted(
                {p for p in points if any(p == q or p.startswith(q + "/") for q in pod_points)}
            ),
            "token_visible": os.path.exists(sa_dir),
        }
    )
    scored({**config, "n": config["n"] - 1, "scores": config["scores"][1:]})
