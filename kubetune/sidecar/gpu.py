"""GPU telemetry with GPUtil (which shells out to ``nvidia-smi`` on PATH)."""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("kubetune.sidecar")


def sample_gpus(requested: int = 0) -> dict[str, Any]:
    """One sample: utilisation and memory per visible GPU; an error when GPUs were requested
    but none is visible (GPUtil returns [] on any failure, so say it loudly here)."""
    sample: dict[str, Any] = {"time": time.time(), "gpus": []}
    try:
        import GPUtil

        gpus = GPUtil.getGPUs()
    except Exception as exc:  # GPUtil missing or nvidia-smi unusable
        gpus = []
        sample["error"] = f"GPU telemetry unavailable: {type(exc).__name__}: {exc}"
    for g in gpus:
        sample["gpus"].append(
            {
                "id": int(g.id),
                "uuid": str(g.uuid),
                "name": str(g.name),
                "utilization": float(g.load),
                "memoryUsedMiB": float(g.memoryUsed),
                "memoryTotalMiB": float(g.memoryTotal),
                "temperatureC": float(g.temperature),
            }
        )
    if requested > 0 and not sample["gpus"] and "error" not in sample:
        sample["error"] = (
            f"no GPU visible: {requested} requested, but nvidia-smi lists none (is the"
            " driver's bin directory on PATH in this image?)"
        )
    if "error" in sample and requested > 0:
        log.error("%s", sample["error"])
    return sample
