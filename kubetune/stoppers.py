"""Stop criteria (Ray's ``tune.stopper``): decide from results whether a trial or all stop.

A :class:`Stopper` is called with every result: ``stopper(trial_id, result) -> bool`` stops that
trial, ``stopper.stop_all() -> bool`` ends the experiment. :func:`to_stopper` turns the ``stop``
argument of a run config (a dict of criteria, a function, a Stopper, a list of them, or None)
into one Stopper.

Dict criteria follow Ray: ``{"training_iteration": 10, "mean_accuracy": 0.98}`` stops a trial
when *any* key's value in the result is ``>=`` the given number; nested keys are written with
``/`` (``"eval/loss"``). Time for :class:`TimeoutStopper` comes from the caller (``now``) so that
stopping is deterministic; without one it reads ``time.monotonic()``.

State of the stateful stoppers is JSON (``get_state``/``set_state``). Function stoppers hold
Python code and carry no state; the caller re-supplies them on restore.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubetune._util import unflattened_lookup
from kubetune.search.errors import ConfigError, check_mode

__all__ = [
    "CombinedStopper",
    "ExperimentPlateauStopper",
    "FunctionStopper",
    "MaximumIterationStopper",
    "NoopStopper",
    "Stopper",
    "TimeoutStopper",
    "TrialPlateauStopper",
    "to_stopper",
]


def _lookup(result: Mapping[str, Any], key: str) -> Any:
    try:
        return unflattened_lookup(key, result)
    except KeyError:
        return None


def _std(values: Any) -> float:
    """Population standard deviation (numpy's default)."""
    n = len(values)
    mean = sum(values) / n
    return math.sqrt(sum((x - mean) ** 2 for x in values) / n)


def _at_least(name: str, value: float, low: int) -> None:
    if value < low:
        raise ConfigError(name, f"must be >= {low}, got {value}")


class Stopper:
    """Base class: override ``__call__`` and/or ``stop_all``."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return False

    def set_clock(self, now: float) -> None:
        """The engine passes event time here before calling, for time-based stoppers."""

    def get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        pass


class NoopStopper(Stopper):
    pass


class DictStopper(Stopper):
    """Ray's dict criteria: stop when any ``result[key] >= value``.

    Values are numbers or booleans, compared as Ray compares them (``{"done": True}`` stops a
    trial whose result says ``done: True``)."""

    def __init__(self, criteria: Mapping[str, Any]) -> None:
        for key, value in criteria.items():
            if not isinstance(value, (int, float)):
                raise ConfigError(f"stop.{key}", f"must be a number or a boolean, got {value!r}")
        self.criteria = dict(criteria)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        for key, threshold in self.criteria.items():
            value = _lookup(result, key)
            if value is None:
                continue
            if isinstance(value, (int, float)) and value >= threshold:
                return True
        return False


class FunctionStopper(Stopper):
    """A function ``fn(trial_id, result) -> bool`` as a stopper (Python only)."""

    def __init__(self, function: Callable[[str, dict[str, Any]], bool]) -> None:
        self._fn = function

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return bool(self._fn(trial_id, result))

    @classmethod
    def is_valid_function(cls, fn: Any) -> bool:
        return callable(fn) and not isinstance(fn, Stopper)


class MaximumIterationStopper(Stopper):
    """Stop each trial after ``max_iter`` results."""

    def __init__(self, max_iter: int) -> None:
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ConfigError("max_iter", f"must be an integer >= 1, got {max_iter!r}")
        self._max_iter = max_iter
        self._iter: dict[str, int] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        n = self._iter.get(trial_id, 0) + 1
        self._iter[trial_id] = n
        return n >= self._max_iter

    def get_state(self) -> dict[str, Any]:
        return {"iter": dict(self._iter)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._iter = {k: int(v) for k, v in state.get("iter", {}).items()}


class TrialPlateauStopper(Stopper):
    """Stop a trial whose ``metric`` has plateaued (Ray's semantics).

    After at least ``grace_period`` results and with ``num_results`` values in the window, the
    trial stops when the standard deviation of the window is ``< std``. ``metric_threshold`` with
    ``mode`` restricts that to trials already better than the threshold.
    """

    def __init__(
        self,
        metric: str,
        std: float = 0.01,
        num_results: int = 4,
        grace_period: int = 4,
        metric_threshold: float | None = None,
        mode: str | None = None,
    ) -> None:
        if not metric:
            raise ConfigError("metric", "TrialPlateauStopper needs `metric`")
        check_mode(mode)
        if metric_threshold is not None and mode is None:
            raise ConfigError("mode", "is required with `metric_threshold` (min or max)")
        _at_least("num_results", num_results, 1)
        _at_least("std", std, 0)
        self._metric = metric
        self._std = std
        self._num_results = num_results
        self._grace_period = grace_period
        self._threshold = metric_threshold
        self._mode = mode
        self._iter: dict[str, int] = {}
        self._window: dict[str, deque[float]] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        value = _lookup(result, self._metric)
        if not isinstance(value, (int, float)):
            return False
        n = self._iter.get(trial_id, 0) + 1
        self._iter[trial_id] = n
        window = self._window.setdefault(trial_id, deque(maxlen=self._num_results))
        window.append(float(value))
        if n < self._grace_period or len(window) < self._num_results:
            return False
        if self._threshold is not None:
            if self._mode == "min" and value > self._threshold:
                return False
            if self._mode == "max" and value < self._threshold:
                return False
        return _std(window) < self._std

    def get_state(self) -> dict[str, Any]:
        return {"iter": dict(self._iter), "window": {k: list(v) for k, v in self._window.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        self._iter = {k: int(v) for k, v in state.get("iter", {}).items()}
        self._window = {
            k: deque((float(x) for x in v), maxlen=self._num_results)
            for k, v in state.get("window", {}).items()
        }


class ExperimentPlateauStopper(Stopper):
    """Stop the whole experiment when the best ``top`` values stop improving (Ray's rule).

    The ``top`` best results seen so far (by ``mode``) are kept; once there are ``top`` of them,
    their standard deviation is ``<= std`` and that held for at least ``patience`` consecutive
    results, every trial stops.
    """

    def __init__(
        self, metric: str, std: float = 0.001, top: int = 10, mode: str = "min", patience: int = 0
    ) -> None:
        if not metric:
            raise ConfigError("metric", "ExperimentPlateauStopper needs `metric`")
        check_mode(mode, allow_none=False)
        _at_least("top", top, 1)
        _at_least("patience", patience, 0)
        _at_least("std", std, 0)
        self._metric = metric
        self._std = std
        self._top = top
        self._mode = mode
        self._patience = patience
        self._values: list[float] = []
        self._iterations = 0

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        value = _lookup(result, self._metric)
        if isinstance(value, (int, float)):
            self._values.append(float(value))
            self._values.sort(reverse=self._mode == "max")
            del self._values[self._top :]
            if self._plateaued():
                self._iterations += 1
            else:
                self._iterations = 0
        return self.stop_all()

    def _plateaued(self) -> bool:
        return len(self._values) == self._top and _std(self._values) <= self._std

    def stop_all(self) -> bool:
        return self._plateaued() and self._iterations >= self._patience

    def get_state(self) -> dict[str, Any]:
        return {"values": list(self._values), "iterations": self._iterations}

    def set_state(self, state: dict[str, Any]) -> None:
        self._values = [float(v) for v in state.get("values", [])]
        self._iterations = int(state.get("iterations", 0))


class TimeoutStopper(Stopper):
    """Stop every trial once ``timeout`` seconds have passed since the first check."""

    def __init__(self, timeout: float | Any) -> None:
        seconds = timeout.total_seconds() if hasattr(timeout, "total_seconds") else timeout
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise ConfigError("timeout", f"must be a positive number of seconds, got {timeout!r}")
        self._budget = float(seconds)
        self._start: float | None = None
        self._now: float | None = None

    def set_clock(self, now: float) -> None:
        self._now = now
        if self._start is None:
            self._start = now

    def _time(self) -> float:
        now = self._now if self._now is not None else time.monotonic()
        if self._start is None:
            self._start = now
        return now

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        now = self._time()
        assert self._start is not None
        return now - self._start >= self._budget

    def get_state(self) -> dict[str, Any]:
        return {"start": self._start}

    def set_state(self, state: dict[str, Any]) -> None:
        self._start = state.get("start")


class CombinedStopper(Stopper):
    """Stops a trial (or all) when any of its stoppers does."""

    def __init__(self, *stoppers: Stopper) -> None:
        for i, s in enumerate(stoppers):
            if not isinstance(s, Stopper):
                raise ConfigError(f"stoppers[{i}]", f"must be a Stopper, got {type(s).__name__}")
        self._stoppers = list(stoppers)

    def set_clock(self, now: float) -> None:
        for s in self._stoppers:
            s.set_clock(now)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        # every stopper sees every result (they may keep state), so no short-circuit
        verdicts = [s(trial_id, result) for s in self._stoppers]
        return any(verdicts)

    def stop_all(self) -> bool:
        return any(s.stop_all() for s in self._stoppers)

    def get_state(self) -> dict[str, Any]:
        return {"stoppers": [s.get_state() for s in self._stoppers]}

    def set_state(self, state: dict[str, Any]) -> None:
        for s, st in zip(self._stoppers, state.get("stoppers", [])):
            s.set_state(st)


StopSpec = Stopper | Mapping[str, Any] | Callable[[str, dict[str, Any]], bool] | None


def to_stopper(stop: StopSpec | Sequence[StopSpec]) -> Stopper:
    """The user's ``stop`` argument (dict, function, Stopper, list of those, or None)."""
    if stop is None:
        return NoopStopper()
    if isinstance(stop, Stopper):
        return stop
    if isinstance(stop, Mapping):
        return DictStopper(stop)
    if isinstance(stop, (list, tuple)):
        return CombinedStopper(*(to_stopper(s) for s in stop))
    if callable(stop):
        return FunctionStopper(stop)
    raise ConfigError(
        "stop", f"must be a dict, a function, a Stopper or None, got {type(stop).__name__}"
    )
