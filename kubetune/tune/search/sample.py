"""``ray.tune.search.sample`` -> ``kubetune.tune.search.sample``."""

from kubetune.search.sample import *  # noqa: F403
from kubetune.search.sample import __all__ as __all__
