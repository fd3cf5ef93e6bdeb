"""``PlacementGroupFactory``: a trial's resources as bundles plus a placement strategy."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementGroupFactory:
    """Bundles of resources (``{"CPU": 1, "GPU": 1}``) reserved for one trial, as in Ray.

    On Kubernetes the bundles of a PACK or STRICT_PACK trial are summed into one pod; the
    first bundle is the trainable's own (the "head" bundle). A trial of several workers (a
    ``ScalingConfig``, or SPREAD/STRICT_SPREAD with more than one bundle) runs one worker per
    bundle after the head bundle, the head bundle joined to worker 0 (see ``worker_bundles``).
    ``num_workers`` is kubetune's addition: set by ``ScalingConfig.as_placement_group_factory``.
    """

    def __init__(
        self,
        bundles: list[dict[str, float]],
        strategy: str = "PACK",
        *args: Any,
        num_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(bundles, list) or not bundles:
            raise ValueError("PlacementGroupFactory: bundles must be a non-empty list of dicts")
        checked: list[dict[str, float]] = []
        for i, bundle in enumerate(bundles):
            if not isinstance(bundle, Mapping):
                raise ValueError(f"PlacementGroupFactory: bundles[{i}] must be a dict")
            entry: dict[str, float] = {}
            for key, value in bundle.items():
                if not isinstance(value, numbers.Real) or isinstance(value, bool) or value < 0:
                    raise ValueError(
                        f"PlacementGroupFactory: bundles[{i}][{key!r}] must be a number >= 0,"
                        f" got {value!r}"
                    )
                if value:
                    entry[str(key)] = value
            checked.append(entry)
        if strategy not in STRATEGIES:
            raise ValueError(
                f"PlacementGroupFactory: strategy must be one of {', '.join(STRATEGIES)},"
                f" got {strategy!r}"
            )
        if num_workers is not None and (
            not isinstance(num_workers, int)
            or isinstance(num_workers, bool)
            or num_workers < 1
            or num_workers != len(checked) - 1
        ):
            raise ValueError(
                "PlacementGroupFactory: num_workers must be the number of bundles after the"
                f" head bundle ({len(checked) - 1}), got {num_workers!r}"
            )
        self._bundles = checked
        self._strategy = strategy
        self._num_workers = num_workers

    @property
    def bundles(self) -> list[dict[str, float]]:
        return [dict(b) for b in self._bundles]

    @property
    def strategy(self) -> str:
        return self._strategy

    @property
    def head_bundle_is_empty(self) -> bool:
        return not self._bundles[0]

    @property
    def head_cpus(self) -> float:
        """CPUs of the first bundle (Ray: what the trainable's own process gets)."""
        return 0.0 if self.head_bundle_is_empty else float(self._bundles[0].get("CPU", 0.0))

    @property
    def head_gpus(self) -> float:
        return 0.0 if self.head_bundle_is_empty else float(self._bundles[0].get("GPU", 0.0))

    @property
    def required_resources(self) -> dict[str, float]:
        """All bundles summed: what the trial needs in total."""
        total: dict[str, float] = {}
        for bundle in self._bundles:
            for key, value in bundle.items():
                total[key] = total.get(key, 0) + value
        return total

    @property
    def num_workers(self) -> int:
        """How many workers (processes, pods) a trial with these resources runs."""
        return len(worker_bundles(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bundles": self.bundles, "strategy": self._strategy}
        if self._num_workers is not None:
            out["workers"] = self._num_workers
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlacementGroupFactory:
        return cls(
            list(data["bundles"]), data.get("strategy", "PACK"), num_workers=data.get("workers")
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PlacementGroupFactory):
            return NotImplemented
        return (
            self._bundles == other._bundles
            and self._strategy == other._strategy
            and self._num_workers == other._num_workers
        )

    def __hash__(self) -> int:
        return hash((repr(self._bundles), self._strategy, self._num_workers))

    def __repr__(self) -> str:
        return f"<PlacementGroupFactory (_bound=<BoundArguments (bundles={self._bundles}, strategy='{self._strategy}')>, head_bundle_is_empty={self.head_bundle_is_empty})>"  # noqa: E501


SPREAD_STRATEGIES = ("SPREAD", "STRICT_SPREAD")


def worker_bundles(resources: Mapping[str, Any]) -> list[dict[str, float]]:
    """The resources of each worker of a trial (``PlacementGroupFactory.to_dict()`` form),
    worker 0 first. Ray's layout: bundle 0 is the trainer's (the driver, which runs no
    training), bundles 1..N the workers'. kubetune runs the trainer inside worker 0, so
    worker 0 gets bundles 0 and 1 summed and worker i bundle i+1. A trial is several workers
    when ``workers`` is set (a ScalingConfig) or its strategy spreads more than one bundle;
    otherwise it is one worker holding every bundle (PACK, STRICT_PACK: one pod, as before)."""
    bundles = [dict(b) for b in resources.get("bundles") or [{"CPU": 1}]]
    workers = resources.get("workers")
    several = isinstance(workers, int) and workers >= 1
    if not several and not (resources.get("strategy") in SPREAD_STRATEGIES and len(bundles) > 1):
        return [_sum(bundles)]
    return [_sum(bundles[:2]), *bundles[2:]]


def _sum(bundles: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for bundle in bundles:
        for key, value in bundle.items():
            total[key] = total.get(key, 0) + value
    return total


_RESOURCE_KEYS = {"cpu": "CPU", "gpu": "GPU", "memory": "memory"}


def resources_to_pgf(resources: Any) -> PlacementGroupFactory:
    """Turn what a user may pass as resources into a PlacementGroupFactory.

    Accepts a PlacementGroupFactory, a ScalingConfig, or a dict such as
    ``{"cpu": 2, "gpu": 1}`` (Ray's lowercase form, with ``custom_resources`` for extra keys)
    or ``{"CPU": 2, "GPU": 1}``.
    """
    if isinstance(resources, PlacementGroupFactory):
        return resources
    if hasattr(resources, "as_placement_group_factory"):  # a ScalingConfig, as Ray takes
        pgf = resources.as_placement_group_factory()
        assert isinstance(pgf, PlacementGroupFactory)
        return pgf
    if isinstance(resources, Mapping):
        bundle: dict[str, float] = {}
        for key, value in resources.items():
            if key == "custom_resources":
                if not isinstance(value, Mapping):
                    raise ValueError("resources: custom_resources must be a dict")
                bundle.update(value)
            elif key == "extra_cpu" or key == "extra_gpu":
                raise ValueError(f"resources: {key!r} is not supported; use bundles instead")
            else:
                bundle[_RESOURCE_KEYS.get(str(key), str(key))] = value
        # Ray's rule: an empty dict means one CPU; otherwise unspecified CPU is zero.
        return PlacementGroupFactory([bundle or {"CPU": 1}])
    raise TypeError(
        "resources must be a dict, a PlacementGroupFactory or a callable of config,"
        f" got {type(resources).__name__}"
    )


DEFAULT_RESOURCES = {"bundles": [{"CPU": 1}], "strategy": "PACK"}
