"""``ResourceChangingScheduler`` and ``DistributeResources`` (Ray's names), decisions only.

``ResourceChangingScheduler(base_scheduler, resources_allocation_function)`` forwards every
call to ``base_scheduler`` (FIFO by default). After each result the allocation function
``fn(context, trial_id, result, scheduler)`` may return a trial's new resources (a dict such as
``{"CPU": 2}``); the scheduler records it in its JSON state and answers
:meth:`resources_for` with it.

**Not applied yet**: the engine and the backends do not change a running trial's resources
(Ray restarts the trial from its checkpoint with the new placement group). A script using this
scheduler runs with each trial's initial resources and gets the base scheduler's decisions.

``DistributeResources`` is Ray's default policy: the free CPUs (``total_cpus``, the machine's
by default, less ``reserve_resources``) are shared evenly between the live trials, in steps of
``increase_by`` (``{"CPU": 1}``), at most ``increase_by_times`` steps (-1: no limit).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
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
        self.total_cpus = float(total_cpus if total_cpus is not None else (os.cpu_count() or 1))
        self.base_cpus = float(base_cpus)

    def __call__(
        self, context: Any, trial_id: str, result: dict[str, Any], scheduler: Any
    ) -> dict[str, float] | None:
        live = [
            t
            for t in scheduler.known_trials()
            if context.trial_status(t) not in (TERMINATED, ERROR)
        ]
        if not live:
            return None
        step = float(self.increase_by.get("CPU", 1)) or 1.0
        free = self.total_cpus - self.reserve.get("CPU", 0.0) - self.base_cpus * len(live)
        steps = max(0, math.floor(free / len(live) / step))
        if self.increase_by_times >= 0:
            steps = min(steps, self.increase_by_times)
        return {"CPU": self.base_cpus + steps * step}


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
        self._allocations: dict[str, dict[str, float]] = {}
        self._trials: list[str] = []

    def __getattr__(self, name: str) -> Any:  # the base's own extras (PBT's set_trial_config)
        if name == "base":
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

    def resources_for(self, trial_id: str) -> dict[str, float] | None:
        return self._allocations.get(trial_id)

    def on_trial_add(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any] | None:
        self._trials.append(trial_id)
        return self.base.on_trial_add(trial_id, config)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> str | Exploit:
        decision = self.base.on_trial_result(trial_id, result)
        if decision == self.CONTINUE:
            new = self._fn(self.context, trial_id, result, self)
            if new is not None and new != self._allocations.get(trial_id):
                self._allocations[trial_id] = {str(k): float(v) for k, v in dict(new).items()}
        return decision

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None) -> None:
        self.base.on_trial_complete(trial_id, result)

    def on_trial_error(self, trial_id: str) -> None:
        self.base.on_trial_error(trial_id)

    def on_trial_remove(self, trial_id: str) -> None:
        self.base.on_trial_remove(trial_id)

    def choose_trial_to_resume(self, paused: list[str], more_trials_waiting: bool) -> str | None:
        return self.base.choose_trial_to_resume(paused, more_trials_waiting)

    def decision_points(self, trial_id: str) -> DecisionPoints:
        return self.base.decision_points(trial_id)

    def referenced_checkpoints(self) -> set[tuple[str, str]]:
        return self.base.referenced_checkpoints()

    def pop_commands(self) -> list[SchedulerCommand]:
        return self.base.pop_commands()

    def get_state(self) -> dict[str, Any]:
        return {
            "base": self.base.get_state(),
            "allocations": self._allocations,
            "trials": list(self._trials),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.base.set_state(state["base"])
        self._allocations = {k: dict(v) for k, v in state.get("allocations", {}).items()}
        self._trials = list(state.get("trials", []))

    @property
    def metric(self) -> str | None:
        return self.base.metric

    @property
    def mode(self) -> str | None:
        return self.base.mode

    @property
    def time_attr(self) -> str | None:
        return self.base.time_attr
