"""Trial schedulers: FIFO, ASHA, HyperBand, median stopping, PBT (pure decision objects)."""

from __future__ import annotations

from typing import Any

from kubetune.schedulers.async_hyperband import ASHAScheduler, AsyncHyperBandScheduler
from kubetune.schedulers.hb_bohb import HyperBandForBOHB
from kubetune.schedulers.hyperband import HyperBandScheduler
from kubetune.schedulers.median_stopping_rule import MedianStoppingRule
from kubetune.schedulers.pb2 import PB2
from kubetune.schedulers.pbt import PopulationBasedTraining
from kubetune.schedulers.pbt_replay import PopulationBasedTrainingReplay
from kubetune.schedulers.resource_changing import DistributeResources, ResourceChangingScheduler
from kubetune.schedulers.trial_scheduler import (
    DecisionPoints,
    Exploit,
    FIFOScheduler,
    MissingResultKeyError,
    SchedulerCommand,
    TrialScheduler,
)
from kubetune.search.errors import ConfigError

__all__ = [
    "PB2",
    "SCHEDULERS",
    "ASHAScheduler",
    "AsyncHyperBandScheduler",
    "DecisionPoints",
    "DistributeResources",
    "Exploit",
    "FIFOScheduler",
    "HyperBandForBOHB",
    "HyperBandScheduler",
    "MedianStoppingRule",
    "MissingResultKeyError",
    "PopulationBasedTraining",
    "PopulationBasedTrainingReplay",
    "ResourceChangingScheduler",
    "SchedulerCommand",
    "TrialScheduler",
    "create_scheduler",
]

# names accepted in manifests (tuneConfig.scheduler) and by create_scheduler
SCHEDULERS: dict[str, type[TrialScheduler]] = {
    "fifo": FIFOScheduler,
    "async_hyperband": AsyncHyperBandScheduler,
    "asha": AsyncHyperBandScheduler,
    "hyperband": HyperBandScheduler,
    "median_stopping_rule": MedianStoppingRule,
    "median": MedianStoppingRule,
    "pbt": PopulationBasedTraining,
    "pb2": PB2,
    "hb_bohb": HyperBandForBOHB,
    "pbt_replay": PopulationBasedTrainingReplay,
    "resource_changing": ResourceChangingScheduler,
}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace("scheduler", "").strip("_")


def create_scheduler(name: str, **kwargs: Any) -> TrialScheduler:
    """A scheduler by name (``"asha"``, ``"hyperband"``, ``"median"``, ``"pbt"``, ``"fifo"``)."""
    if not isinstance(name, str):
        raise ConfigError("scheduler", f"must be a name, got {name!r}")
    cls = SCHEDULERS.get(_normalise(name)) or SCHEDULERS.get(name)
    if cls is None:
        known = ", ".join(sorted(SCHEDULERS))
        raise ConfigError("scheduler", f"unknown scheduler {name!r} (known: {known})")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError("scheduler", f"bad arguments for {name!r}: {exc}") from exc
