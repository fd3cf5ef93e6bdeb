"""``ray.tune.search.optuna`` -> ``kubetune.tune.search.optuna`` (imports Optuna)."""

from kubetune.search.optuna import OptunaSearch

__all__ = ["OptunaSearch"]
