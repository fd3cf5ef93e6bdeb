"""``ray.tune.search.zoopt`` -> ``kubetune.tune.search.zoopt``."""

from kubetune.search.zoopt import ZOOptSearch

__all__ = ["ZOOptSearch"]
