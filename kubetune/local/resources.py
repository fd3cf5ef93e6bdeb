"""This machine's CPUs and GPUs, handed out to trials by their resource bundles."""

from __future__ import annotations

import math
import os

from kubetune.tune.resources import PlacementGroupFactory


class ResourceError(ValueError):
    """A trial asks for more than this machine has; the message says what."""


def detect_gpus() -> list[int]:
    """GPU indices visible here (GPUtil), honouring CUDA_VISIBLE_DEVICES."""
    try:
        import GPUtil
    except ImportError:
        return []
    try:
        gpus = [int(g.id) for g in GPUtil.getGPUs()]
    except Exception:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        allowed = {int(v) for v in visible.split(",") if v.strip().isdigit()}
        gpus = [g for g in gpus if g in allowed]
    return gpus


class ResourcePool:
    def __init__(self, cpus: float | None = None, gpus: list[int] | None = None) -> None:
        from kubetune._runtime import cpu_limit, gpu_limit  # kubetune.init(num_cpus=...)

        if cpus is None:
            cpus = cpu_limit()
        self.total_cpu = float(cpus if cpus is not None else (os.cpu_count() or 1))
        if gpus is None:
            gpus = detect_gpus()
            limit = gpu_limit()
            if limit is not None:
                gpus = gpus[:limit]
        self.gpu_ids = list(gpus)
        self.free_cpu = self.total_cpu
        self.free_gpus = list(self.gpu_ids)

    def check_fits(self, pgf: PlacementGroupFactory, who: str) -> None:
        """Raise ResourceError if the trial could never run on this machine."""
        need = pgf.required_resources
        cpu = need.get("CPU", 0)
        gpu = need.get("GPU", 0)
        if cpu > self.total_cpu:
            raise ResourceError(f"{who} needs {cpu:g} CPUs but this machine has {self.total_cpu:g}")
        if gpu > len(self.gpu_ids):
            raise ResourceError(
                f"{who} needs {gpu:g} GPUs but this machine has {len(self.gpu_ids)}"
                + ("" if self.gpu_ids else " (GPUtil found none: is nvidia-smi on PATH?)")
            )
        unknown = sorted(k for k in need if k not in ("CPU", "GPU", "memory"))
        if unknown:
            raise ResourceError(
                f"{who} needs resources this machine does not provide: {', '.join(unknown)}"
            )

    def try_acquire(self, pgf: PlacementGroupFactory) -> list[int] | None:
        """GPU ids granted (possibly empty), or None when it does not fit right now."""
        need = pgf.required_resources
        cpu = need.get("CPU", 0)
        gpu = math.ceil(need.get("GPU", 0))
        if cpu > self.free_cpu + 1e-9 or gpu > len(self.free_gpus):
            return None
        self.free_cpu -= cpu
        granted, self.free_gpus = self.free_gpus[:gpu], self.free_gpus[gpu:]
        return granted

    def release(self, pgf: PlacementGroupFactory, gpus: list[int]) -> None:
        self.free_cpu = min(self.total_cpu, self.free_cpu + pgf.required_resources.get("CPU", 0))
        self.free_gpus = sorted(set(self.free_gpus) | set(gpus))
