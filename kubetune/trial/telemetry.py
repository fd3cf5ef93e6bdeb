"""GPU telemetry from inside the trial container, with GPUtil (``nvidia-smi`` on PATH).

It runs here, not in the sidecar: the NVIDIA device plugin hands a pod's GPUs to the container
that requested them (the trial's) and to no other, so a sampler in the sidecar would see no
GPU, or every GPU on the node where an image sets ``NVIDIA_VISIBLE_DEVICES=all``. The sampler
writes ``gpu.json`` into the trial's output directory, which the sidecar shares: it reports
the latest sample in ``status.report.gpu`` and uploads the file with the results.

The pod builder turns it on with ``KUBETUNE_TRIAL_GPUS`` (the GPUs requested) and
``KUBETUNE_TRIAL_GPU_INTERVAL_S`` (the period, default 10 s). User results are not touched.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("kubetune.trial")

GPU_FILE = "gpu.json"


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
    return sample


def write_sample(out_dir: str, sample: dict[str, Any]) -> None:
    path = os.path.join(out_dir, GPU_FILE)
    tmp = os.path.join(out_dir, f".{GPU_FILE}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(sample, f)
    os.replace(tmp, path)  # the sidecar never reads half a sample


def start_from_env(env: Mapping[str, str], out_dir: str) -> threading.Event | None:
    """Start the sampler when the pod asked for GPUs; set the returned event to stop it."""
    try:
        requested = int(float(env.get("KUBETUNE_TRIAL_GPUS") or 0))
        interval = float(env.get("KUBETUNE_TRIAL_GPU_INTERVAL_S") or 10.0)
    except ValueError:
        log.error("kubetune.trial: KUBETUNE_TRIAL_GPUS and _GPU_INTERVAL_S must be numbers")
        return None
    if requested <= 0 or interval <= 0:
        return None
    os.makedirs(out_dir, exist_ok=True)
    stop = threading.Event()

    def take() -> None:
        sample = sample_gpus(requested)
        try:
            write_sample(out_dir, sample)
        except OSError as exc:
            log.warning("kubetune.trial: cannot write %s: %s", GPU_FILE, exc)
        if "error" in sample and not reported:
            log.error("%s", sample["error"])  # once in the trial's log; in every sample
            reported.append(True)

    def loop() -> None:
        while not stop.wait(interval):
            take()

    reported: list[bool] = []
    take()  # the first sample before the trainable starts: a short trial has one too
    threading.Thread(target=loop, name="kubetune-gpu", daemon=True).start()
    return stop
