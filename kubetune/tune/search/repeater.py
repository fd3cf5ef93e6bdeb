"""``ray.tune.search.repeater`` -> ``kubetune.tune.search.repeater``."""

from kubetune.search.repeater import Repeater

__all__ = ["Repeater"]
