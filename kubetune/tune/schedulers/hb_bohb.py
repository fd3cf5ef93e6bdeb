"""``ray.tune.schedulers.hb_bohb`` -> ``kubetune.tune.schedulers.hb_bohb``."""

from kubetune.schedulers.hb_bohb import HyperBandForBOHB

__all__ = ["HyperBandForBOHB"]
