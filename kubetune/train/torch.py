"""``kubetune.train.torch``: Ray Train's ``TorchTrainer`` as a Tuner trainable.

``Tuner(TorchTrainer(train_loop_per_worker, scaling_config=ScalingConfig(num_workers=4)),
param_space={"train_loop_config": {...}})`` runs each trial as ``num_workers`` workers: pods on
a cluster (one per worker), processes in local mode. Every worker calls
``train_loop_per_worker(train_loop_config)`` with torch.distributed's environment set
(``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ...) and, as Ray
does, the default process group already initialised when torch is importable (``gloo``, or
``nccl`` with ``use_gpu``); without torch the loop gets the environment alone and may
rendezvous by other means. ``train.report`` and ``train.get_checkpoint`` work on every worker;
rank 0's reports (and checkpoints) are the trial's, the other workers' are dropped, as Ray's
are when only rank 0 reports.

torch itself is never a dependency: it is imported on first use, in the workers.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kubetune.air.config import RunConfig, ScalingConfig
from kubetune.train._context import current_place


@dataclass
class TorchConfig:
    """The process group a TorchTrainer sets up: ``backend`` None picks nccl on GPU workers,
    gloo otherwise; ``init_process_group=False`` leaves it to the training loop."""

    backend: str | None = None
    timeout_s: int = 1800
    init_process_group: bool = True


class TorchTrainer:
    """A trainable (for ``Tuner``) that runs ``train_loop_per_worker`` on every worker."""

    def __init__(
        self,
        train_loop_per_worker: Callable[..., Any],
        *,
        train_loop_config: dict[str, Any] | None = None,
        torch_config: TorchConfig | None = None,
        scaling_config: ScalingConfig | None = None,
        run_config: RunConfig | None = None,
        datasets: dict[str, Any] | None = None,
        resume_from_checkpoint: Any = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not callable(train_loop_per_worker):
            raise TypeError(
                "TorchTrainer: train_loop_per_worker must be a function, got"
                f" {type(train_loop_per_worker).__name__}"
            )
        if train_loop_config is not None and not isinstance(train_loop_config, dict):
            raise TypeError("TorchTrainer: train_loop_config must be a dict")
        if scaling_config is not None and not isinstance(scaling_config, ScalingConfig):
            raise TypeError("TorchTrainer: scaling_config must be a ScalingConfig")
        if datasets:
            raise ValueError(
                "TorchTrainer: datasets (Ray Data) are not supported; load data in"
                " train_loop_per_worker (prepare_data_loader shards a torch DataLoader)"
            )
        if resume_from_checkpoint is not None:
            raise ValueError(
                "TorchTrainer: resume_from_checkpoint is not supported; a trial resumes from"
                " its own checkpoints (train.get_checkpoint())"
            )
        self.train_loop_per_worker = train_loop_per_worker
        self.train_loop_config = dict(train_loop_config or {})
        self.torch_config = torch_config or TorchConfig()
        self.scaling_config = scaling_config or ScalingConfig()
        self.run_config = run_config
        self.metadata = dict(metadata or {})
        # what tune.with_resources would attach: read by the Tuner and by cluster submission
        self._kubetune_resources = self.scaling_config.as_placement_group_factory()
        self.__name__ = getattr(train_loop_per_worker, "__name__", "TorchTrainer")

    def __call__(self, config: dict[str, Any]) -> None:
        """One worker of one trial: the Tuner's config's ``train_loop_config`` over ours."""
        loop_config = copy.deepcopy(self.train_loop_config)
        loop_config.update(config.get("train_loop_config") or {})
        group = self._init_process_group()
        try:
            if _takes_argument(self.train_loop_per_worker):
                self.train_loop_per_worker(loop_config)
            else:
                self.train_loop_per_worker()
        finally:
            if group is not None:
                group.destroy_process_group()

    def _init_process_group(self) -> Any:
        if not self.torch_config.init_process_group:
            return None
        try:
            import torch.distributed as dist
        except ImportError:
            return None
        if not dist.is_available() or dist.is_initialized():
            return None
        place = current_place()
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        backend = self.torch_config.backend or ("nccl" if self.scaling_config.use_gpu else "gloo")
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=place.world_rank,
            world_size=place.world_size,
            timeout=timedelta(seconds=self.torch_config.timeout_s),
        )
        return dist

    def fit(self) -> Any:
        """One trial with this trainer's own config (Ray's ``trainer.fit()``)."""
        from kubetune.tune import Tuner

        grid = Tuner(self, run_config=self.run_config).fit()
        return grid[0]


def _takes_argument(fn: Callable[..., Any]) -> bool:
    try:
        return len(inspect.signature(fn).parameters) > 0
    except (TypeError, ValueError):
        return True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_device() -> Any:
    """This worker's torch device: ``cuda:LOCAL_RANK`` of the GPUs it sees, else the CPU."""
    import torch

    if torch.cuda.is_available():
        place = current_place()
        return torch.device("cuda", place.local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def prepare_model(model: Any, move_to_device: bool = True) -> Any:
    """Move ``model`` to this worker's device and wrap it in DistributedDataParallel when
    the trial has several workers (the process group must be initialised)."""
    import torch

    device = get_device()
    if move_to_device:
        model = model.to(device)
    if current_place().world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def prepare_data_loader(data_loader: Any) -> Any:
    """``data_loader`` again with a DistributedSampler: each worker sees its shard."""
    place = current_place()
    if place.world_size <= 1:
        return data_loader
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(
        data_loader.dataset, num_replicas=place.world_size, rank=place.world_rank
    )
    return DataLoader(
        data_loader.dataset,
        batch_size=data_loader.batch_size,
        sampler=sampler,
        num_workers=data_loader.num_workers,
        collate_fn=data_loader.collate_fn,
        pin_memory=data_loader.pin_memory,
        drop_last=data_loader.drop_last,
    )


__all__ = [
    "TorchConfig",
    "TorchTrainer",
    "get_device",
    "prepare_data_loader",
    "prepare_model",
]
