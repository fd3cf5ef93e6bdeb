"""Run configuration objects with Ray AIR's names and defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubetune.tune.resources import PlacementGroupFactory


@dataclass
class CheckpointConfig:
    """Which checkpoints to keep and when a Class-API trainable saves them."""

    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: str = "max"
    checkpoint_frequency: int = 0
    checkpoint_at_end: bool | None = None

    def __post_init__(self) -> None:
        if self.num_to_keep is not None and (
            not isinstance(self.num_to_keep, int) or self.num_to_keep <= 0
        ):
            raise ValueError(
                f"CheckpointConfig.num_to_keep must be None or a positive integer,"
                f" got {self.num_to_keep!r}"
            )
        if self.checkpoint_score_order not in ("max", "min"):
            raise ValueError(
                "CheckpointConfig.checkpoint_score_order must be 'max' or 'min',"
                f" got {self.checkpoint_score_order!r}"
            )
        if not isinstance(self.checkpoint_frequency, int) or self.checkpoint_frequency < 0:
            raise ValueError(
                "CheckpointConfig.checkpoint_frequency must be an integer >= 0,"
                f" got {self.checkpoint_frequency!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_to_keep": self.num_to_keep,
            "checkpoint_score_attribute": self.checkpoint_score_attribute,
            "checkpoint_score_order": self.checkpoint_score_order,
            "checkpoint_frequency": self.checkpoint_frequency,
            "checkpoint_at_end": self.checkpoint_at_end,
        }


@dataclass
class FailureConfig:
    """How often a trial is retried from its latest checkpoint, and whether to stop on error."""

    max_failures: int = 0
    fail_fast: bool | str = False

    def __post_init__(self) -> None:
        if not isinstance(self.max_failures, int) or self.max_failures < -1:
            raise ValueError(
                "FailureConfig.max_failures must be an integer >= -1 (-1: retry forever),"
                f" got {self.max_failures!r}"
            )
        if self.fail_fast not in (True, False, "raise"):
            raise ValueError(
                f"FailureConfig.fail_fast must be True, False or 'raise', got {self.fail_fast!r}"
            )


_SCALING_KEYS = {"cpu": "CPU", "gpu": "GPU"}


@dataclass
class ScalingConfig:
    """How many workers a trial of a Ray-Train-style trainer runs, and what each one gets.

    Ray's semantics: ``resources_per_worker`` defaults to one CPU per worker, or one GPU
    (and no CPU) with ``use_gpu``; ``trainer_resources`` (the trainer's own bundle, bundle 0
    of the placement group) defaults to nothing when there are workers; ``placement_strategy``
    is a placement group strategy (PACK, SPREAD, STRICT_PACK, STRICT_SPREAD). On Kubernetes
    each worker is a pod (SPREAD: preferably on different nodes, STRICT_SPREAD: required);
    locally each worker is a process. See ``kubetune.tune.resources.worker_bundles``.
    """

    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None
    placement_strategy: str = "PACK"
    trainer_resources: dict[str, float] | None = None

    def __post_init__(self) -> None:
        from kubetune.tune.resources import STRATEGIES

        if (
            not isinstance(self.num_workers, int)
            or isinstance(self.num_workers, bool)
            or self.num_workers < 1
        ):
            raise ValueError(
                f"ScalingConfig.num_workers must be an integer >= 1, got {self.num_workers!r}"
            )
        if self.placement_strategy not in STRATEGIES:
            raise ValueError(
                f"ScalingConfig.placement_strategy must be one of {', '.join(STRATEGIES)},"
                f" got {self.placement_strategy!r}"
            )
        for name in ("resources_per_worker", "trainer_resources"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"ScalingConfig.{name} must be a dict, got {value!r}")
        gpus = self._per_worker().get("GPU", 0)
        if not self.use_gpu and gpus:
            raise ValueError(
                "ScalingConfig.resources_per_worker asks for GPU but use_gpu is False;"
                " set use_gpu=True"
            )

    def _per_worker(self) -> dict[str, float]:
        if self.resources_per_worker is None:
            return {"GPU": 1} if self.use_gpu else {"CPU": 1}
        out = {_SCALING_KEYS.get(k, k): v for k, v in self.resources_per_worker.items()}
        if self.use_gpu and not out.get("GPU"):
            out["GPU"] = 1
        return out

    @property
    def num_gpus_per_worker(self) -> float:
        return float(self._per_worker().get("GPU", 0))

    @property
    def num_cpus_per_worker(self) -> float:
        return float(self._per_worker().get("CPU", 0))

    @property
    def total_resources(self) -> dict[str, float]:
        return dict(self.as_placement_group_factory().required_resources)

    def as_placement_group_factory(self) -> PlacementGroupFactory:
        """Ray's layout: the trainer's bundle, then one bundle per worker."""
        from kubetune.tune.resources import PlacementGroupFactory

        trainer = {_SCALING_KEYS.get(k, k): v for k, v in (self.trainer_resources or {}).items()}
        return PlacementGroupFactory(
            [trainer, *[self._per_worker() for _ in range(self.num_workers)]],
            self.placement_strategy,
            num_workers=self.num_workers,
        )


@dataclass
class RunConfig:
    """Where results go and when trials stop."""

    name: str | None = None
    storage_path: str | None = None
    local_dir: str | None = None  # Ray's older name for storage_path
    stop: Any = None
    checkpoint_config: CheckpointConfig = field(default_factory=CheckpointConfig)
    failure_config: FailureConfig = field(default_factory=FailureConfig)
    verbose: int = 1
    callbacks: list[Any] | None = None
    log_to_file: bool = False
    progress_reporter: Any = None  # a tune.CLIReporter etc.: replaces the live table

    def __post_init__(self) -> None:
        if self.checkpoint_config is None:
            self.checkpoint_config = CheckpointConfig()
        if self.failure_config is None:
            self.failure_config = FailureConfig()
        if self.storage_path is None and self.local_dir is not None:
            self.storage_path = self.local_dir
        from kubetune._util import malformed_s3_path

        path = str(self.storage_path or "")
        if malformed_s3_path(path):
            raise ValueError(f"RunConfig.storage_path {path!r}: write s3://BUCKET[/PREFIX]")
        if self.callbacks is not None:  # refused here, before anything is written
            from kubetune.tune.execution.defaults import check_callbacks

            self.callbacks = check_callbacks(self.callbacks)
        if self.progress_reporter is not None:
            from kubetune.tune.progress_reporter import ProgressReporter

            if not isinstance(self.progress_reporter, ProgressReporter):
                raise TypeError(
                    "RunConfig.progress_reporter must be a tune.ProgressReporter (CLIReporter,"
                    f" JupyterNotebookReporter), got {type(self.progress_reporter).__name__}"
                )
