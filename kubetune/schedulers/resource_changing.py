"""``ResourceChangingScheduler`` and ``DistributeResources`` (Ray's names).

``ResourceChangingScheduler(base_scheduler, resources_allocation_function)`` forwards every
call to ``base_scheduler`` (FIFO by default). After each result the base lets continue, it calls
the allocation function as Ray does, ``fn(tune_controller, trial, result, scheduler)``, where
``tune_controller`` is a view of the experiment (``get_trials()``, ``get_live_trials()``,
``_resource_updater.get_num_cpus()`` / ``get_num_gpus()``, the engine's context otherwise),
``trial`` a view of the trial (``trial_id``, ``config``, ``status``, ``placement_group_factory``),
and ``scheduler`` this one (``_base_trial_resources``: the first trial's resources). The
function returns the trial's new resources (a ``PlacementGroupFactory`` or a dict such as
``{"CPU": 2}``) or None. New resources, as in Ray, PAUSE the trial; the engine starts it again
from its latest checkpoint with them (``resources_for``), recorded in the JSON state. A trial
that never checkpoints starts over.

``DistributeResources`` is Ray's default policy: the CPUs (``total_cpus``, by default what local
mode schedules on: ``kubetune.init(num_cpus=...)`` or this machine's, less
``reserve_resources``) are shared evenly between the live trials, in steps of ``increase_by``
(``{"CPU": 1}``) above ``base_cpus``, at most ``increase_by_times`` steps (-1: no limit).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kubetune.schedulers.trial_scheduler import (
    ERROR,
    TERMINATED,
    DecisionPoints,
    Exploit,
    FIFOScheduler,
    SchedulerCommand,
    SchedulerContext,
    TrialScheduler,
)
from kubetune.search.errors import ConfigError


class _ResourceUpdater:
    """Ray's ``tune_controller._resource_updater``: the totals trials are scheduled on, as the
    backend told the engine (``resource_totals``: local mode's pool); else this machine's."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def _total(self, key: str) -> float | None:
        totals = getattr(self._context, "resource_totals", None)
        return float(totals[key]) if totals and key in totals else None

    def get_num_cpus(self) -> float:
        total = self._total("CPU")
        if total is not None:
            return total
        from kubetune._runtime import cpu_limit

        limit = cpu_limit()
        return float(limit if limit is not None else (os.cpu_count() or 1))

    def get_num_gpus(self) -> float:
        total = self._total("GPU")
        return total if total is not None else 0.0


class TrialView:
    """What an allocation function reads of Ray's ``Trial``: id, config, status, resources.
    (Not ``tune.experiment.Trial``: a scheduler stays apart from the result readers.)"""

    def __init__(self, trial_id: str, config: dict[str, Any], status: str, pgf: Any) -> None:
        self.trial_id = trial_id
        self.config = config
        self.status = status
        self.placement_group_factory = pgf

    def __str__(self) -> str:
        return self.trial_id

    __repr__ = __str__


class ControllerView:
    """What Ray's allocation functions read from ``tune_controller``; anything else is the
    engine's scheduler context (``trial_status``, ``latest_checkpoint``, ...)."""

    def __init__(self, scheduler: ResourceChangingScheduler) -> None:
        self._scheduler = scheduler
        self._resource_updater = _ResourceUpdater(scheduler.context)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scheduler.context, name)

    def get_trials(self) -> list[Any]:
        return [self._scheduler.trial_view(t) for t in self._scheduler.known_trials()]

    def get_live_trials(self) -> list[Any]:
        return [t for t in self.get_trials() if t.status not in (TERMINATED, ERROR)]


def _as_pgf(value: Any) -> Any:
    from kubetune.tune.resources import PlacementGroupFactory, resources_to_pgf

    if isinstance(value, dict) and "bundles" in value:
        return PlacementGroupFactory.from_dict(value)
    return resources_to_pgf(value)


def _as_resources(value: Any) -> dict[str, Any]:
    """A PlacementGroupFactory, Ray's dict forms or CreateTrial's, as CreateTrial's."""
    return dict(_as_pgf(value).to_dict())


class DistributeResources:
    def __init__(
        self,
        add_bundles: bool = False,
        increase_by: dict[str, float] | None = None,
        increase_by_times: int = -1,
        reserve_resources: dict[str, float] | None = None,
        total_cpus: float | None = None,
        base_cpus: float = 1.0,
    ) -> None:
        self.add_bundles = add_bundles
        self.increase_by = dict(increase_by or {"CPU": 1})
        self.increase_by_times = increase_by_times
        self.reserve = dict(reserve_resources or {})
        self.total_cpus = None if total_cpus is None else float(total_cpus)
        self.base_cpus = float(base_cpus)

    def __call__(
        self, tune_controller: Any, trial: Any, result: dict[str, Any], scheduler: Any
    ) -> Any:
        from kubetune.tune.resources import PlacementGroupFactory

        live = tune_controller.get_live_trials()
        if not live:
            return None
        total = self.total_cpus
        if total is None:
            total = float(tune_controller._resource_updater.get_num_cpus())
        step = float(self.increase_by.get("CPU", 1)) or 1.0
        free = total - self.reserve.get("CPU", 0.0) - self.base_cpus * len(live)
        steps = max(0, math.floor(free / len(live) / step))
        if self.increase_by_times >= 0:
            steps = min(steps, self.increase_by_times)
        return PlacementGroupFactory([{"CPU": self.base_cpus + steps * step}])


class ResourceChangingScheduler(TrialScheduler):
    def __init__(
        self,
        base_scheduler: TrialScheduler | None = None,
        resources_allocation_function: Callable[..., Any] | None = None,
    ) -> None:
        base = base_scheduler if base_scheduler is not None else FIFOScheduler()
        if not isinstance(base, TrialScheduler):
            raise ConfigError("base_scheduler", f"must be a TrialScheduler, got {base!r}")
        fn = resources_allocation_function
        if fn is None:
            fn = DistributeResources()
        if not callable(fn):
            raise ConfigError("resources_allocation_function", "must be callable")
        super().__init__(metric=base.metric, mode=base.mode, time_attr=base.time_attr)
        self.base = base
        self.needs_metric = base.needs_metric
        self._fn = fn
        self._allocations: dict[str, dict[str, Any]] = {}
        self._trials: list[str] = []
        self._configs: dict[str, dict[str, Any]] = {}  # for the Trial views (not saved)
        self._base_resources: dict[str, Any] | None = None

    def __getattr__(self, name: str) -> Any:  # the base's own extras (PBT's set_trial_config)
        if name in ("base", "_base_resources"):
            raise AttributeError(name)
        return getattr(self.base, name)

    # everything the base decides
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return self.base.set_search_properties(metric, mode, **spec)

    def set_context(self, context: SchedulerContext) -> None:
        super().set_context(context)
        self.base.set_context(context)

    def validate(self) -> None:
        self.base.validate()

    def required_result_keys(self) -> list[str]:
        return self.base.required_result_keys()

    def known_trials(self) -> list[str]:
        return list(self._trials)

    def _current(self, trial_id: str) -> dict[str, Any] | None:
        current = self._allocations.get(trial_id) or self.context.trial_resources(trial_id)
        return _as_resources(current) if current else None

    @property
    def _base_trial_resources(self) -> Any:
        """Ray's: the first trial's resources (a PlacementGroupFactory), None before any."""
        base = self._base_resources
        return _as_pgf(base) if base else None

    def trial_view(self, trial_id: str) -> TrialView:
        """The trial as Ray's allocation functions see it."""
        current = self._current(trial_id)
        return TrialView(
            trial_id,
            self._configs.get(trial_id, {}),
            self.context.trial_status(trial_id),
            _as_pgf(current) if current else None,
        )

    def resources_for(self, trial_id: str) -> dict[str, Any] | None:
        return self._allocations.get(trial_id)

    def on_trial_add(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any] | None:
        self._trials.append(trial_id)
        self._configs[trial_id] = config
        if self._base_resources is None:
            self._base_resources = self.context.trial_resources(trial_id)
        return self.base.on_trial_add(trial_id, config)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> str | Exploit:
        decision = self.base.on_trial_result(trial_id, result)
        if decision != self.CONTINUE:
            return decision
        if self._base_resources is None:
            self._base_resources = self.context.trial_resources(trial_id)
        new = self._fn(ControllerView(self), self.trial_view(trial_id), result, self)
        if new is None:
            return decision
        try:
            wanted = _as_resources(new)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                "resources_allocation_function", f"returned {new!r}, not resources: {exc}"
            ) from None
        if wanted == self._current(trial_id):
            return decision
        self._allocations[trial_id] = wanted
        return self.PAUSE  # Ray: pause it; it starts again with the new resources

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None) -> None:
        self.base.on_trial_complete(trial_id, result)

    def on_trial_error(self, trial_id: str) -> None:
        self.base.on_trial_error(trial_id)

    def on_trial_remove(self, trial_id: str) -> None:
        self.base.on_trial_remove(trial_id)

    def choose_trial_to_resume(self, paused: list[str], more_trials_waiting: bool) -> str | None:
        return self.base.choose_trial_to_resume(paused, more_trials_waiting)

    def decision_points(self, trial_id: str) -> DecisionPoints:
        # the allocation function may answer any result, and Ray pauses the trial on that very
        # result: it waits for each verdict instead of running ahead
        return replace(self.base.decision_points(trial_id), every_result=True)

    def referenced_checkpoints(self) -> set[tuple[str, str]]:
        return self.base.referenced_checkpoints()

    def pop_commands(self) -> list[SchedulerCommand]:
        return self.base.pop_commands()

    def get_state(self) -> dict[str, Any]:
        return {
            "base": self.base.get_state(),
            "allocations": self._allocations,
            "trials": list(self._trials),
            "base_resources": self._base_resources,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.base.set_state(state["base"])
        self._allocations = {k: dict(v) for k, v in state.get("allocations", {}).items()}
        self._trials = list(state.get("trials", []))
        self._base_resources = state.get("base_resources")

    @property
    def metric(self) -> str | None:
        return self.base.metric

    @property
    def mode(self) -> str | None:
        return self.base.mode

    @property
    def time_attr(self) -> str | None:
        return self.base.time_attr
