"""``tune.TuneError`` (Ray's ``ray.tune.error``)."""

from kubetune.local.result_grid import TuneError

__all__ = ["TuneError"]
