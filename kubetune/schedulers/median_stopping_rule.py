"""Median stopping (Ray's ``MedianStoppingRule``, after Google Vizier).

At time ``t >= grace_period``, a trial whose best score so far is strictly worse than the median
of the other trials' running means (their scores between ``grace_period`` and ``t``, over trials
that have reached ``t``; non-finite means ignored) stops, once at least
``min_samples_required`` such means exist. With
too few comparable trials it PAUSEs to yield its slot when other trials are waiting and
``min_time_slice`` has passed since it last paused, as Ray does. Every result after the grace
period is a decision point.

Memory: the rule needs each trial's (time, score) history for the running means; it keeps those
two floats per result and nothing else.
"""

from __future__ import annotations

import math
import statistics
from array import array
from typing import Any

from kubetune.schedulers.trial_scheduler import DecisionPoints, TrialScheduler, result_value
from kubetune.search.errors import ConfigError


class MedianStoppingRule(TrialScheduler):
    def __init__(
        self,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        grace_period: float = 60.0,
        min_samples_required: int = 3,
        min_time_slice: float = 0,
        hard_stop: bool = True,
    ) -> None:
        super().__init__(metric=metric, mode=mode, time_attr=time_attr)
        if isinstance(grace_period, bool) or not isinstance(grace_period, (int, float)):
            raise ConfigError("grace_period", f"must be a number, got {grace_period!r}")
        if grace_period < 0:
            raise ConfigError("grace_period", f"must be >= 0, got {grace_period}")
        if not isinstance(min_samples_required, int) or min_samples_required < 1:
            raise ConfigError(
                "min_samples_required", f"must be an integer >= 1, got {min_samples_required!r}"
            )
        self._grace_period = grace_period
        self._min_samples_required = min_samples_required
        self._min_time_slice = min_time_slice
        self._hard_stop = hard_stop
        self._times: dict[str, array[float]] = {}
        self._scores: dict[str, array[float]] = {}
        self._stopped: set[str] = set()
        self._last_pause: dict[str, float] = {}

    def on_trial_add(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any] | None:
        self.validate()
        return None

    def _append(self, trial_id: str, t: float, score: float) -> None:
        self._times.setdefault(trial_id, array("d")).append(t)
        self._scores.setdefault(trial_id, array("d")).append(score)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> str:
        assert self._time_attr is not None and self._metric is not None
        owner = type(self).__name__
        t = float(result_value(result, self._time_attr, trial_id, owner))
        score = self._score(result_value(result, self._metric, trial_id, owner))
        if trial_id in self._stopped:
            return self.CONTINUE  # soft-stopped trial resumed: FIFO from now on (Ray)
        self._append(trial_id, t, score)
        if t < self._grace_period:
            return self.CONTINUE
        others = [tid for tid, ts in self._times.items() if ts[-1] >= t and tid != trial_id]
        means = [m for m in (self._running_mean(tid, t) for tid in others) if math.isfinite(m)]
        if len(means) < self._min_samples_required:
            pause = t - self._last_pause.get(trial_id, float("-inf")) > self._min_time_slice
            if pause and self.context.has_waiting_trials():
                self._last_pause[trial_id] = t
                return self.PAUSE
            return self.CONTINUE
        median = statistics.median(means)
        best = max(self._scores[trial_id])
        if best < median:  # strictly worse than the median (Ray 2.60)
            self._stopped.add(trial_id)
            return self.STOP if self._hard_stop else self.PAUSE
        return self.CONTINUE

    def _running_mean(self, trial_id: str, t: float) -> float:
        times = self._times[trial_id]
        scores = self._scores[trial_id]
        scoped = [s for tt, s in zip(times, scores) if self._grace_period <= tt <= t]
        return sum(scoped) / len(scoped) if scoped else float("nan")

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None) -> None:
        if not result or self._time_attr is None or self._metric is None:
            return
        if self._time_attr in result and self._metric in result:
            t = float(result[self._time_attr])
            self._append(trial_id, t, self._score(result[self._metric]))

    def decision_points(self, trial_id: str) -> DecisionPoints:
        return DecisionPoints(
            time_attr=self._time_attr or "time_total_s",
            start=self._grace_period,
            every_result=True,
        )

    def get_state(self) -> dict[str, Any]:
        return {
            **super().get_state(),
            "times": {k: list(v) for k, v in self._times.items()},
            "scores": {k: list(v) for k, v in self._scores.items()},
            "stopped": sorted(self._stopped),
            "last_pause": dict(self._last_pause),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._times = {k: array("d", v) for k, v in state["times"].items()}
        self._scores = {k: array("d", v) for k, v in state["scores"].items()}
        self._stopped = set(state["stopped"])
        self._last_pause = {k: float(v) for k, v in state["last_pause"].items()}
