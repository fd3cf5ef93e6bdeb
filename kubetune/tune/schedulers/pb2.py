"""``ray.tune.schedulers.pb2`` -> ``kubetune.tune.schedulers.pb2``."""

from kubetune.schedulers.pb2 import PB2

__all__ = ["PB2"]
