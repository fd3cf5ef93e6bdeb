"""``kubetune.train``: the parts of Ray Train's API that a trial and a driver use."""

from __future__ import annotations

from typing import Any

from kubetune.air.session import (
    get_checkpoint,
    get_experiment_name,
    get_trial_dir,
    get_trial_id,
    get_trial_name,
    get_trial_resources,
    report,
)

# config and result objects load on first use: a trial process importing ``train`` stays light
_LAZY = {
    "Checkpoint": "kubetune.air.checkpoint",
    "RunConfig": "kubetune.air.config",
    "CheckpointConfig": "kubetune.air.config",
    "FailureConfig": "kubetune.air.config",
    "ScalingConfig": "kubetune.air.config",
    "Result": "kubetune.local.result_grid",
    "get_context": "kubetune.tune.context",
}

__all__ = [
    "Checkpoint",
    "CheckpointConfig",
    "FailureConfig",
    "Result",
    "RunConfig",
    "ScalingConfig",
    "get_checkpoint",
    "get_context",
    "get_experiment_name",
    "get_trial_dir",
    "get_trial_id",
    "get_trial_name",
    "get_trial_resources",
    "report",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kubetune.train' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
