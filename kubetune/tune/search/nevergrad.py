"""``ray.tune.search.nevergrad`` -> ``kubetune.tune.search.nevergrad``."""

from kubetune.search.nevergrad import NevergradSearch

__all__ = ["NevergradSearch"]
