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
    """CPUs as a number, GPUs one by one with the share of each still free (1.0 = idle).

    As in Ray, a trial asking for a fraction of a GPU (``{"GPU": 0.5}``) gets one GPU that
    has that share free, the lowest-numbered first, so fractional trials pack onto one device
    (two 0.5-GPU trials both run with ``CUDA_VISIBLE_DEVICES=0``); whole GPUs go only to
    trials that take the whole device; above one, GPUs must be whole (Ray's rule).
    """

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
        self.free_share = {g: 1.0 for g in self.gpu_ids}

    @property
    def free_gpus(self) -> list[int]:
        """GPUs no trial holds any share of."""
        return [g for g in self.gpu_ids if self.free_share[g] >= 1.0 - _EPS]

    def check_fits(self, pgf: PlacementGroupFactory, who: str) -> None:
        """Raise ResourceError if the trial could never run on this machine."""
        need = pgf.required_resources
        cpu = need.get("CPU", 0)
        gpu = need.get("GPU", 0)
        if cpu > self.total_cpu:
            raise ResourceError(f"{who} needs {cpu:g} CPUs but this machine has {self.total_cpu:g}")
        if gpu > 1 and not _whole(gpu):
            raise ResourceError(
                f"{who} needs {gpu:g} GPUs: above one, GPUs must be whole (a fraction shares a"
                " single device)"
            )
        if math.ceil(gpu - _EPS) > len(self.gpu_ids):
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
        gpu = float(need.get("GPU", 0))
        if cpu > self.free_cpu + 1e-9:
            return None
        if gpu <= _EPS:
            granted: list[int] = []
        elif gpu < 1 - _EPS:  # a share: the first GPU with that much free
            shared = next((g for g in self.gpu_ids if self.free_share[g] >= gpu - _EPS), None)
            if shared is None:
                return None
            self.free_share[shared] -= gpu
            granted = [shared]
        else:
            idle = self.free_gpus
            count = round(gpu)
            if count > len(idle):
                return None
            granted = idle[:count]
            for g in granted:
                self.free_share[g] = 0.0
        self.free_cpu -= cpu
        return granted

    def release(self, pgf: PlacementGroupFactory, gpus: list[int]) -> None:
        self.free_cpu = min(self.total_cpu, self.free_cpu + pgf.required_resources.get("CPU", 0))
        gpu = float(pgf.required_resources.get("GPU", 0))
        share = gpu if 0 < gpu < 1 - _EPS else 1.0
        for g in gpus:
            if g in self.free_share:
                self.free_share[g] = min(1.0, self.free_share[g] + share)


_EPS = 1e-9


def _whole(value: float) -> bool:
    return abs(value - round(value)) <= _EPS
