"""``tune.TuneConfig`` with Ray's names and defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class TuneConfig:
    metric: str | None = None
    mode: str | None = None
    search_alg: Any = None
    scheduler: Any = None
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    time_budget_s: float | None = None
    reuse_actors: bool | None = None
    trial_name_creator: Callable[[Any], str] | None = None
    trial_dirname_creator: Callable[[Any], str] | None = None
    chdir_to_trial_dir: bool = True
    seed: int | None = (
        None  # kubetune: seeds the search for repeatable runs (None: unseeded, as Ray)
    )

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in ("min", "max"):
            raise ValueError(f"TuneConfig.mode must be 'min' or 'max', got {self.mode!r}")
        if (
            not isinstance(self.num_samples, int)
            or self.num_samples == 0
            or (self.num_samples < -1)
        ):
            raise ValueError(
                "TuneConfig.num_samples must be a positive integer (or -1 for no limit),"
                f" got {self.num_samples!r}"
            )
        if self.max_concurrent_trials is not None and (
            not isinstance(self.max_concurrent_trials, int) or self.max_concurrent_trials < 1
        ):
            raise ValueError(
                "TuneConfig.max_concurrent_trials must be a positive integer,"
                f" got {self.max_concurrent_trials!r}"
            )
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(
                f"TuneConfig.time_budget_s must be positive, got {self.time_budget_s!r}"
            )
