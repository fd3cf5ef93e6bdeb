"""The engine's configuration: Ray's TuneConfig + RunConfig fields that the engine enforces."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from kubetune.search.errors import ConfigError, check_mode

SCOPES = ("last", "all", "avg", "last-5-avg", "last-10-avg")


@dataclass
class CheckpointSettings:
    """Ray's ``CheckpointConfig``: which of a trial's checkpoints to keep and which is best."""

    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: str = "max"
    checkpoint_frequency: int = 0
    checkpoint_at_end: bool | None = None

    def validate(self) -> None:
        if self.num_to_keep is not None and (
            isinstance(self.num_to_keep, bool)
            or not isinstance(self.num_to_keep, int)
            or self.num_to_keep < 1
        ):
            raise ConfigError(
                "checkpoint.num_to_keep",
                f"must be None or an integer >= 1, got {self.num_to_keep!r}",
            )
        if self.checkpoint_score_order not in ("min", "max"):
            raise ConfigError(
                "checkpoint.checkpoint_score_order",
                f"must be 'min' or 'max', got {self.checkpoint_score_order!r}",
            )
        if self.checkpoint_frequency < 0:
            raise ConfigError(
                "checkpoint.checkpoint_frequency", f"must be >= 0, got {self.checkpoint_frequency}"
            )


@dataclass
class EngineConfig:
    """What the engine enforces for one experiment.

    ``num_samples``: with the default grid/random searcher, each sample is one pass over the
    grid (Ray); with another searcher, the number of trials. ``-1`` means no limit.
    ``max_concurrent_trials``: trials started and not paused/ended; ``None`` or ``0`` means no
    limit. ``max_failures``: retries per trial from its latest checkpoint (``-1``: forever).
    ``fail_fast``: the first trial error stops the experiment (needs ``max_failures == 0``).
    """

    param_space: dict[str, Any] = field(default_factory=dict)
    metric: str | None = None
    mode: str | None = None
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    time_budget_s: float | None = None
    max_failures: int = 0
    fail_fast: bool = False
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    resources: dict[str, Any] = field(default_factory=lambda: {"cpu": 1})
    name: str = "experiment"
    trainable_name: str = "trainable"
    trial_id_prefix: str | None = None

    def validate(self) -> None:
        if not isinstance(self.param_space, dict):
            raise ConfigError(
                "param_space", f"must be a dict, got {type(self.param_space).__name__}"
            )
        check_mode(self.mode)
        if self.metric is not None and not isinstance(self.metric, str):
            raise ConfigError("metric", f"must be a string, got {self.metric!r}")
        if self.mode is not None and not self.metric:
            raise ConfigError("metric", "`mode` is set but `metric` is not")
        if (
            isinstance(self.num_samples, bool)
            or not isinstance(self.num_samples, int)
            or (self.num_samples < 1 and self.num_samples != -1)
        ):
            raise ConfigError(
                "num_samples", f"must be an integer >= 1 or -1, got {self.num_samples!r}"
            )
        m = self.max_concurrent_trials
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 0):
            raise ConfigError(
                "max_concurrent_trials", f"must be None or an integer >= 0, got {m!r}"
            )
        t = self.time_budget_s
        if t is not None and (
            isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0 or math.isnan(t)
        ):
            raise ConfigError("time_budget_s", f"must be None or > 0 seconds, got {t!r}")
        f = self.max_failures
        if isinstance(f, bool) or not isinstance(f, int) or f < -1:
            raise ConfigError("max_failures", f"must be an integer >= -1, got {f!r}")
        if self.fail_fast and f != 0:
            raise ConfigError("fail_fast", "cannot be combined with max_failures != 0 (Ray's rule)")
        if not isinstance(self.resources, dict):
            raise ConfigError("resources", "must be a dict")
        self.checkpoint.validate()

    @classmethod
    def from_run_config(cls, run_config: Any, **fields: Any) -> EngineConfig:
        """The engine's config from Ray's RunConfig (checkpoint and failure settings) plus the
        TuneConfig fields given as keywords; local mode and the operator share it."""
        ckpt, failure = run_config.checkpoint_config, run_config.failure_config
        return cls(
            max_failures=failure.max_failures,
            fail_fast=bool(failure.fail_fast),
            checkpoint=CheckpointSettings(
                num_to_keep=ckpt.num_to_keep,
                checkpoint_score_attribute=ckpt.checkpoint_score_attribute,
                checkpoint_score_order=ckpt.checkpoint_score_order,
                checkpoint_frequency=ckpt.checkpoint_frequency,
                checkpoint_at_end=ckpt.checkpoint_at_end,
            ),
            **fields,
        )

    def id_prefix(self) -> str:
        if self.trial_id_prefix is not None:
            return self.trial_id_prefix
        return default_id_prefix(self.name)

    def to_dict(self, param_space: Any) -> dict[str, Any]:
        d = asdict(self)
        d["param_space"] = param_space
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], param_space: dict[str, Any]) -> EngineConfig:
        kwargs = dict(d)
        kwargs["param_space"] = param_space
        kwargs["checkpoint"] = CheckpointSettings(**kwargs.get("checkpoint", {}))
        return cls(**kwargs)


def default_id_prefix(name: str) -> str:
    """The trial-ID prefix of an experiment named ``name`` unless its config gives one."""
    return hashlib.sha1(name.encode()).hexdigest()[:5] + "_"
