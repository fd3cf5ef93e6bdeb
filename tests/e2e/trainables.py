"""Trainables of the e2e tests, baked into the example image next to examples/quadratic.py."""

from __future__ import annotations

import time

from kubetune.air import session


def sleepy(config: dict) -> None:
    """Long enough to be looked at from outside while it runs."""
    for step in range(int(config.get("steps", 60))):
        session.report({"loss": 1.0 / (step + 1)})
        time.sleep(1)


def hog(config: dict) -> None:
    """Allocates far past any small memory limit: the kernel's OOM killer ends it."""
    session.report({"loss": 1.0})
    chunks = []
    while True:
        chunks.append(bytearray(64 * 2**20))
        time.sleep(0.01)


def counted(config: dict) -> None:
    """STEPS reports, a checkpoint with each; a retry goes on from the latest checkpoint and
    says where it started (``start``)."""
    from kubetune.air.checkpoint import Checkpoint

    checkpoint = session.get_checkpoint()
    start = checkpoint.to_dict()["step"] + 1 if checkpoint else 0
    for step in range(start, int(config["steps"])):
        time.sleep(float(config.get("pause", 1.0)))
        session.report(
            {"loss": 1.0 / (step + 1), "step": step, "start": start},
            checkpoint=Checkpoint.from_dict({"step": step}),
        )


def gpu_env(config: dict) -> None:
    """Reports which devices the container was given."""
    import os

    session.report(
        {
            "loss": 0.0,
            "nvidia_visible_devices": os.environ.get("NVIDIA_VISIBLE_DEVICES", ""),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        }
    )
