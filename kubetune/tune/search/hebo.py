"""``ray.tune.search.hebo`` -> ``kubetune.tune.search.hebo``."""

from kubetune.search.hebo import HEBOSearch

__all__ = ["HEBOSearch"]
