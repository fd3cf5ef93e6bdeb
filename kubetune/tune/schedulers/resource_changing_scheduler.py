"""``ray.tune.schedulers.resource_changing_scheduler`` -> ``kubetune.tune.schedulers.
resource_changing_scheduler``."""

from kubetune.schedulers.resource_changing import DistributeResources, ResourceChangingScheduler

__all__ = ["DistributeResources", "ResourceChangingScheduler"]
