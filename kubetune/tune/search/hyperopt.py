"""``ray.tune.search.hyperopt`` -> ``kubetune.tune.search.hyperopt``."""

from kubetune.search.hyperopt import HyperOptSearch

__all__ = ["HyperOptSearch"]
