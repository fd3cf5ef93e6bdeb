"""``ray.tune.search`` -> ``kubetune.tune.search`` (re-exports of :mod:`kubetune.search`)."""

from __future__ import annotations

from typing import Any

from kubetune.search import (
    BasicVariantGenerator,
    ConcurrencyLimiter,
    Repeater,
    Searcher,
    create_searcher,
)
from kubetune.search.sample import Categorical, Domain, Float, Function, Integer
from kubetune.search.searcher import FINISHED

__all__ = [
    "FINISHED",
    "BasicVariantGenerator",
    "Categorical",
    "ConcurrencyLimiter",
    "Domain",
    "Float",
    "Function",
    "Integer",
    "OptunaSearch",
    "Repeater",
    "Searcher",
    "create_searcher",
]


def __getattr__(name: str) -> Any:
    if name == "OptunaSearch":  # imports Optuna: only on use
        from kubetune.search.optuna import OptunaSearch

        return OptunaSearch
    raise AttributeError(f"module 'kubetune.tune.search' has no attribute {name!r}")
