"""``ray.tune.schedulers.pbt`` -> ``kubetune.tune.schedulers.pbt``."""

from kubetune.schedulers.pbt import PopulationBasedTraining

__all__ = ["PopulationBasedTraining"]
