"""The scheduler interface (Ray's ``TrialScheduler``), decision points and FIFO.

A scheduler sees results and answers ``CONTINUE``, ``PAUSE`` or ``STOP`` for the trial that
reported (PBT may answer an :class:`Exploit`: restart this trial from another trial's
checkpoint with a new config). It may also act on *other* trials (HyperBand stops the bad
trials of a rung and resumes the good ones); those commands are collected by the engine with
:meth:`TrialScheduler.pop_commands`.

The scheduler learns about trials it does not own through a :class:`SchedulerContext` that the
engine provides (status of each trial, whether trials are waiting for a slot, latest
checkpoints). Its state is a JSON-able dict; Python callables (PBT's ``custom_explore_fn``) are
re-supplied by constructing the scheduler again before ``set_state``.

**Decision points** (DESIGN.md §3.4): :meth:`TrialScheduler.decision_points` tells a trial at
which values of the scheduler's ``time_attr`` a verdict may come, so the trial runner waits for
the verdict there and runs ahead elsewhere. See :class:`DecisionPoints`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from kubetune._decision import DecisionPoints
from kubetune._util import unflattened_lookup
from kubetune.search.errors import ConfigError, check_mode

PENDING = "PENDING"
RUNNING = "RUNNING"
PAUSED = "PAUSED"
TERMINATED = "TERMINATED"
ERROR = "ERROR"


class MissingResultKeyError(ValueError):
    """A result lacks a key that the scheduler (or searcher) needs."""

    def __init__(self, trial_id: str, key: str, owner: str) -> None:
        super().__init__(
            f"trial {trial_id} reported a result without `{key}`, which {owner} needs "
            f"(report it with every result, or change the metric / time_attr)"
        )
        self.trial_id = trial_id
        self.key = key
        self.owner = owner


def result_value(result: dict[str, Any], key: str, trial_id: str, owner: str) -> Any:
    """``result[key]`` (``a/b`` reaches into nested dicts), or MissingResultKeyError."""
    if key in result:
        return result[key]
    try:
        return unflattened_lookup(key, result)
    except KeyError:
        raise MissingResultKeyError(trial_id, key, owner) from None


@dataclass(frozen=True)
class Exploit:
    """PBT's verdict: restart the trial from ``donor_trial_id``'s checkpoint with ``new_config``."""

    donor_trial_id: str
    donor_checkpoint: str
    new_config: dict[str, Any]
    operations: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SchedulerCommand:
    """An action on another trial: ``kind`` is ``"stop"`` or ``"resume"``."""

    kind: str
    trial_id: str
    reason: str = ""


class SchedulerContext(Protocol):
    def trial_status(self, trial_id: str) -> str: ...

    def has_waiting_trials(self) -> bool: ...

    def more_trials_expected(self) -> bool: ...

    def latest_checkpoint(self, trial_id: str) -> str | None: ...

    def trial_resources(self, trial_id: str) -> dict[str, Any] | None: ...


class _StandaloneContext:
    """Used when a scheduler runs without an engine: every trial runs, none waits."""

    def __init__(self) -> None:
        self.statuses: dict[str, str] = {}
        self.checkpoints: dict[str, str] = {}
        self.waiting = False

    def trial_status(self, trial_id: str) -> str:
        return self.statuses.get(trial_id, RUNNING)

    def has_waiting_trials(self) -> bool:
        return self.waiting

    def more_trials_expected(self) -> bool:
        return False

    def latest_checkpoint(self, trial_id: str) -> str | None:
        return self.checkpoints.get(trial_id)

    def trial_resources(self, trial_id: str) -> dict[str, Any] | None:
        return None


class TrialScheduler:
    """Base class. Subclasses override ``on_trial_result`` and friends."""

    CONTINUE = "CONTINUE"
    PAUSE = "PAUSE"
    STOP = "STOP"
    NOOP = "NOOP"

    needs_metric = True

    def __init__(
        self, metric: str | None = None, mode: str | None = None, time_attr: str | None = None
    ) -> None:
        check_mode(mode)
        self._metric = metric
        self._mode = mode
        self._time_attr = time_attr
        self._metric_op = 1.0 if mode != "min" else -1.0
        self._commands: list[SchedulerCommand] = []
        self.context: SchedulerContext = _StandaloneContext()

    @property
    def metric(self) -> str | None:
        return self._metric

    @property
    def mode(self) -> str | None:
        return self._mode

    @property
    def time_attr(self) -> str | None:
        return self._time_attr

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        check_mode(mode)
        if self._metric is None and metric:
            self._metric = metric
        if self._mode is None and mode:
            self._mode = mode
            self._metric_op = 1.0 if mode == "max" else -1.0
        return True

    def set_context(self, context: SchedulerContext) -> None:
        self.context = context

    def validate(self) -> None:
        """Raise ConfigError if the scheduler cannot run (missing metric/mode)."""
        if not self.needs_metric:
            return
        name = type(self).__name__
        if not self._metric:
            raise ConfigError(
                "metric", f"{name} needs `metric` (pass it to {name} or to the tune config)"
            )
        if self._mode is None:
            raise ConfigError(
                "mode",
                f"{name} needs `mode` ('min' or 'max'; pass it to {name} or the tune config)",
            )

    def required_result_keys(self) -> list[str]:
        """Keys every (non-final) result must carry for this scheduler."""
        if not self.needs_metric:
            return []
        keys = [k for k in (self._metric, self._time_attr) if k]
        return keys

    def _score(self, value: Any) -> float:
        return self._metric_op * float(value)

    def on_trial_add(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any] | None:
        """A new trial; may return a changed config (PBT fills in mutated keys)."""
        return None

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> str | Exploit:
        return self.CONTINUE

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None) -> None:
        """The trial ended on its own or by a stop criterion."""

    def on_trial_error(self, trial_id: str) -> None:
        """The trial failed for good (no retry left)."""

    def on_trial_remove(self, trial_id: str) -> None:
        """The trial was stopped by this scheduler or by the experiment."""

    def choose_trial_to_resume(self, paused: list[str], more_trials_waiting: bool) -> str | None:
        """Which paused trial to resume into a free slot, if any (FIFO by default).

        ``paused`` is in trial creation order. ``more_trials_waiting``: the searcher may still
        produce new trials; Ray's FIFO starts those before resuming paused ones.
        """
        if more_trials_waiting or not paused:
            return None
        return paused[0]

    def decision_points(self, trial_id: str) -> DecisionPoints:
        return DecisionPoints(time_attr=self._time_attr or "training_iteration")

    def resources_for(self, trial_id: str) -> dict[str, Any] | None:
        """Resources this scheduler gives the trial from its next start (bundles and strategy,
        as ``PlacementGroupFactory.to_dict``), or None: the ones it has."""
        return None

    def referenced_checkpoints(self) -> set[tuple[str, str]]:
        """(trial_id, checkpoint) pairs the scheduler may still restore from: not deletable."""
        return set()

    def pop_commands(self) -> list[SchedulerCommand]:
        out, self._commands = self._commands, []
        return out

    def get_state(self) -> dict[str, Any]:
        return {"metric": self._metric, "mode": self._mode}

    def set_state(self, state: dict[str, Any]) -> None:
        self._metric = state.get("metric", self._metric)
        self._mode = state.get("mode", self._mode)
        self._metric_op = 1.0 if self._mode != "min" else -1.0


class FIFOScheduler(TrialScheduler):
    """Runs every trial to completion (stop criteria still apply)."""

    needs_metric = False

    def __init__(self) -> None:
        super().__init__()
