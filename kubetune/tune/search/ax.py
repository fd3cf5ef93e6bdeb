"""``ray.tune.search.ax`` -> ``kubetune.tune.search.ax``."""

from kubetune.search.ax import AxSearch

__all__ = ["AxSearch"]
