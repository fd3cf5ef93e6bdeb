"""``ray.tune.experiment`` -> ``kubetune.tune.experiment``: ``Trial`` and ``Experiment``."""

from kubetune.tune.experiment.experiment import Experiment
from kubetune.tune.experiment.trial import Trial

__all__ = ["Experiment", "Trial"]
