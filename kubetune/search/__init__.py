"""Search spaces and search algorithms (grid/random, Optuna-backed), all with JSON state.

Importing this package does not import Optuna: ``OptunaSearch`` loads it when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from kubetune.search.basic_variant import BasicVariantGenerator
from kubetune.search.concurrency_limiter import ConcurrencyLimiter
from kubetune.search.errors import ConfigError
from kubetune.search.repeater import Repeater
from kubetune.search.searcher import Searcher

__all__ = [
    "SEARCHERS",
    "BasicVariantGenerator",
    "ConcurrencyLimiter",
    "ConfigError",
    "OptunaSearch",
    "Repeater",
    "Searcher",
    "create_searcher",
]

# names accepted in manifests (tuneConfig.searchAlg) and by create_searcher
SEARCHERS = {
    "variant_generator": "kubetune.search.basic_variant:BasicVariantGenerator",
    "basic_variant": "kubetune.search.basic_variant:BasicVariantGenerator",
    "random": "kubetune.search.basic_variant:BasicVariantGenerator",
    "grid": "kubetune.search.basic_variant:BasicVariantGenerator",
    "optuna": "kubetune.search.optuna:OptunaSearch",
    # wrapped libraries (optional extras; each module imports its library when built)
    "hyperopt": "kubetune.search.hyperopt:HyperOptSearch",
    "bayesopt": "kubetune.search.bayesopt:BayesOptSearch",
    "nevergrad": "kubetune.search.nevergrad:NevergradSearch",
    "zoopt": "kubetune.search.zoopt:ZOOptSearch",
    "bohb": "kubetune.search.bohb:TuneBOHB",
    "hebo": "kubetune.search.hebo:HEBOSearch",
    "ax": "kubetune.search.ax:AxSearch",
}
_CLASSES = {target.rpartition(":")[2]: target for target in SEARCHERS.values()}


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def __getattr__(name: str) -> Any:
    if name in _CLASSES and name != "BasicVariantGenerator":
        return _load(_CLASSES[name])
    raise AttributeError(f"module 'kubetune.search' has no attribute {name!r}")


def create_searcher(name: str, **kwargs: Any) -> Searcher:
    """A searcher by name: ``"variant_generator"`` (alias ``random``/``grid``) or ``"optuna"``."""
    if not isinstance(name, str):
        raise ConfigError("search_alg", f"must be a name, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    target = SEARCHERS.get(key)
    if target is None:
        known = ", ".join(sorted(SEARCHERS))
        raise ConfigError("search_alg", f"unknown searcher {name!r} (known: {known})")
    cls = _load(target)
    try:
        searcher: Searcher = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError("search_alg", f"bad arguments for {name!r}: {exc}") from exc
    return searcher
