"""What ``tune.Tuner`` and a local experiment run share: names, defaults, the tuner's shape.

Both ``kubetune.local.tuner`` and ``kubetune.local.experiment`` import this module; the
experiment module never imports the tuner module (the tuner imports the experiment lazily, when
``fit()`` runs), so the two have no import cycle.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any, Protocol

from kubetune.tune.resources import PlacementGroupFactory, resources_to_pgf

DEFAULT_STORAGE = "~/kubetune_results"
INTERNAL_DIR = ".kubetune"


class TunerLike(Protocol):
    """What a local experiment reads from a ``tune.Tuner``."""

    trainable: Any
    param_space: dict[str, Any]
    tune_config: Any
    run_config: Any
    _restore: dict[str, Any] | None


def trainable_name(trainable: Any) -> str:
    name = getattr(trainable, "__name__", None) or type(trainable).__name__
    return str(name).replace("<", "").replace(">", "") or "trainable"


def default_storage() -> str:
    return os.environ.get("KUBETUNE_RESULTS_DIR", DEFAULT_STORAGE)


def experiment_name(tuner: TunerLike) -> str:
    if tuner.run_config.name:
        return str(tuner.run_config.name)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return f"{trainable_name(tuner.trainable)}_{stamp}"


def static_resources(trainable: Any) -> PlacementGroupFactory | None:
    """The trainable's resources when they do not depend on the config."""
    resources = getattr(trainable, "_kubetune_resources", None)
    if resources is not None and not callable(resources):
        return resources_to_pgf(resources)
    return None


def now() -> float:
    return time.time()


def expected_trials(tc: Any, param_space: dict[str, Any]) -> int | None:
    """How many trials the experiment will have, when that is known up front."""
    if not tc.num_samples or tc.num_samples < 0:
        return None
    if tc.search_alg is not None:
        return int(tc.num_samples)
    from kubetune.search.variant_generator import count_grid

    return int(tc.num_samples) * max(1, count_grid(param_space))
