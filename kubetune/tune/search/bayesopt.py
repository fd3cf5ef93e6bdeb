"""``ray.tune.search.bayesopt`` -> ``kubetune.tune.search.bayesopt``."""

from kubetune.search.bayesopt import BayesOptSearch

__all__ = ["BayesOptSearch"]
