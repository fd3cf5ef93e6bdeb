"""``kubetune.air``: Ray AIR's names (``from ray import air`` -> ``from kubetune import air``)."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "session": "kubetune.air.session",
    "Checkpoint": "kubetune.air.checkpoint",
    "RunConfig": "kubetune.air.config",
    "CheckpointConfig": "kubetune.air.config",
    "FailureConfig": "kubetune.air.config",
    "ScalingConfig": "kubetune.air.config",
    "Result": "kubetune.local.result_grid",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kubetune.air' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if name == "session" else getattr(mod, name)
    globals()[name] = value
    return value
