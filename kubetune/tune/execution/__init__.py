"""``kubetune.tune.execution``: Ray's ``ray.tune.execution`` names, and the callback driver."""
