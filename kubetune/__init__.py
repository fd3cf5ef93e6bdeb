"""kubetune: hyperparameter tuning on Kubernetes with the Ray Tune API.

``import kubetune`` stays light: subpackages (``kubetune.tune``, ``kubetune.air``, ...) are
imported on first use, and none of kopf, kubernetes, boto3, optuna or pandas is imported here.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {"tune", "air", "train", "search", "schedulers", "engine", "trial", "storage"}


_RUNTIME = {"init", "shutdown", "is_initialized"}  # Ray's ray.init & co. (kubetune._runtime)


def __getattr__(name: str) -> Any:
    if name in _RUNTIME:
        return getattr(importlib.import_module("kubetune._runtime"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"kubetune.{name}")
    raise AttributeError(f"module 'kubetune' has no attribute {name!r}")
