"""``ray.tune.execution.placement_groups`` -> ``kubetune.tune.execution.placement_groups``."""

from kubetune.tune.resources import PlacementGroupFactory, resources_to_pgf

__all__ = ["PlacementGroupFactory", "resource_dict_to_pg_factory"]


def resource_dict_to_pg_factory(spec: dict[str, float] | None = None) -> PlacementGroupFactory:
    """Ray's helper: ``{"cpu": 1, "gpu": 1}`` (or None: one CPU) as a PlacementGroupFactory."""
    return resources_to_pgf(dict(spec or {}))
