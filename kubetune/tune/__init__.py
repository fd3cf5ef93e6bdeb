"""``kubetune.tune``: Ray Tune's public API (``from ray import tune`` -> ``from kubetune import
tune``).

Names are resolved on first use so that ``from kubetune import tune`` inside a trial process costs
almost nothing; the heavy parts (searchers, schedulers, the Tuner) load only when touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_LAZY: dict[str, str] = {
    # trainables and helpers (trial SDK)
    "Trainable": "kubetune.tune.trainable",
    "report": "kubetune.air.session",
    "get_checkpoint": "kubetune.air.session",
    "is_stopping": "kubetune.air.session",
    "with_parameters": "kubetune.tune.helpers",
    "with_resources": "kubetune.tune.helpers",
    "PlacementGroupFactory": "kubetune.tune.resources",
    "Checkpoint": "kubetune.air.checkpoint",
    # search spaces (engine)
    "grid_search": "kubetune.search.sample",
    "choice": "kubetune.search.sample",
    "uniform": "kubetune.search.sample",
    "quniform": "kubetune.search.sample",
    "loguniform": "kubetune.search.sample",
    "qloguniform": "kubetune.search.sample",
    "randn": "kubetune.search.sample",
    "qrandn": "kubetune.search.sample",
    "randint": "kubetune.search.sample",
    "qrandint": "kubetune.search.sample",
    "lograndint": "kubetune.search.sample",
    "qlograndint": "kubetune.search.sample",
    "sample_from": "kubetune.search.sample",
    "Stopper": "kubetune.stoppers",
    # local mode
    "Tuner": "kubetune.local.tuner",
    "TuneConfig": "kubetune.local.config",
    "RunConfig": "kubetune.air.config",
    "CheckpointConfig": "kubetune.air.config",
    "FailureConfig": "kubetune.air.config",
    "ResultGrid": "kubetune.local.result_grid",
    "Result": "kubetune.local.result_grid",
    "TuneError": "kubetune.tune.error",
    "ResumeConfig": "kubetune.tune.resume_config",
    "ScalingConfig": "kubetune.air.config",
    # callbacks and reporters (driver)
    "Callback": "kubetune.tune.callback",
    "CLIReporter": "kubetune.tune.progress_reporter",
    "JupyterNotebookReporter": "kubetune.tune.progress_reporter",
    "ProgressReporter": "kubetune.tune.progress_reporter",
    # Ray's older entry points and helpers
    "run": "kubetune.tune.tune",
    "run_experiments": "kubetune.tune.tune",
    "Experiment": "kubetune.tune.experiment.experiment",
    "ExperimentAnalysis": "kubetune.tune.analysis",
    "register_trainable": "kubetune.tune.registry",
    "register_env": "kubetune.tune.registry",
    "get_context": "kubetune.tune.context",
    "TuneContext": "kubetune.tune.context",
    "create_searcher": "kubetune.search",
    "create_scheduler": "kubetune.schedulers",
}

_SUBMODULES = {
    "schedulers",
    "search",
    "stopper",
    "utils",
    "result",
    "trainable",
    "experiment",
    "execution",
    "logger",
    "callback",
    "integration",
    "analysis",
    "registry",
    "context",
    "error",
    "progress_reporter",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from kubetune.air.checkpoint import Checkpoint as Checkpoint
    from kubetune.air.session import get_checkpoint as get_checkpoint
    from kubetune.air.session import is_stopping as is_stopping
    from kubetune.air.session import report as report
    from kubetune.tune.helpers import with_parameters as with_parameters
    from kubetune.tune.helpers import with_resources as with_resources
    from kubetune.tune.resources import PlacementGroupFactory as PlacementGroupFactory
    from kubetune.tune.trainable import Trainable as Trainable


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"kubetune.tune.{name}")
    raise AttributeError(f"module 'kubetune.tune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
