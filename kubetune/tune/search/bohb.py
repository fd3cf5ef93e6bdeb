"""``ray.tune.search.bohb`` -> ``kubetune.tune.search.bohb``."""

from kubetune.search.bohb import TuneBOHB

__all__ = ["TuneBOHB"]
