"""Asynchronous successive halving (ASHA; Ray's ``AsyncHyperBandScheduler``).

Each bracket has rungs at ``grace_period * reduction_factor ** (k + s)`` (``s`` the bracket
index) below ``max_t``. The first result of a trial that reaches a rung is compared with the
``(1 - 1/reduction_factor)`` quantile (linear interpolation, NaN ignored) of the scores already
recorded at that rung; below it the trial stops. A trial reaching ``max_t`` stops
(``stop_last_trials``). A result without the metric or the time attribute is an error
(:class:`~kubetune.schedulers.trial_scheduler.MissingResultKeyError`), not silently ignored.
"""

from __future__ import annotations

import bisect
import math
import random
from typing import Any

from kubetune._seed import fresh_seed
from kubetune.schedulers.trial_scheduler import (
    DecisionPoints,
    TrialScheduler,
    result_value,
)
from kubetune.search.errors import ConfigError


def _positive(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(name, f"must be a positive number, got {value!r}")


def percentile(sorted_values: list[float], q: float) -> float:
    """numpy's default (linear) percentile of an already sorted list."""
    n = len(sorted_values)
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    t = pos - lo
    a, b = sorted_values[lo], sorted_values[hi]
    # numpy's _lerp: interpolate from the nearer end, so that e.g. the median of 0.1 and 0.5
    # is exactly 0.3 (ties at a cutoff must fall the same way as in Ray)
    if t >= 0.5:
        return b - (b - a) * (1 - t)
    return a + (b - a) * t


class _Rung:
    __slots__ = ("milestone", "recorded", "sorted")

    def __init__(self, milestone: float) -> None:
        self.milestone = milestone
        self.recorded: dict[str, float] = {}
        self.sorted: list[float] = []  # recorded scores without NaN, ascending

    def record(self, trial_id: str, score: float) -> None:
        self.recorded[trial_id] = score
        if not math.isnan(score):
            bisect.insort(self.sorted, score)


class _Bracket:
    def __init__(
        self, min_t: float, max_t: float, rf: float, s: int, stop_last_trials: bool
    ) -> None:
        self.rf = rf
        n_rungs = int(math.log(max_t / min_t) / math.log(rf) - s + 1)
        # highest milestone first, as Ray iterates them
        self.rungs = [_Rung(min_t * rf ** (k + s)) for k in reversed(range(n_rungs))]
        self.stop_last_trials = stop_last_trials
        self.quantile = (1 - 1 / rf) * 100

    def cutoff(self, rung: _Rung) -> float | None:
        if not rung.recorded:
            return None
        if not rung.sorted:
            return math.nan
        return percentile(rung.sorted, self.quantile)

    def on_result(self, trial_id: str, cur_iter: float, score: float) -> str:
        action = TrialScheduler.CONTINUE
        for rung in self.rungs:
            reached = cur_iter >= rung.milestone and trial_id in rung.recorded
            if reached and not self.stop_last_trials:
                break
            if cur_iter < rung.milestone or trial_id in rung.recorded:
                continue
            cutoff = self.cutoff(rung)
            if cutoff is not None and score < cutoff:
                action = TrialScheduler.STOP
            rung.record(trial_id, score)
            break
        return action


class AsyncHyperBandScheduler(TrialScheduler):
    """ASHA. ``ASHAScheduler`` is the same class."""

    def __init__(
        self,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 4,
        brackets: int = 1,
        stop_last_trials: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode, time_attr=time_attr)
        _positive(max_t, "max_t")
        _positive(grace_period, "grace_period")
        if isinstance(reduction_factor, bool) or not isinstance(reduction_factor, (int, float)):
            raise ConfigError("reduction_factor", f"must be a number, got {reduction_factor!r}")
        if reduction_factor <= 1:
            raise ConfigError("reduction_factor", f"must be > 1, got {reduction_factor!r}")
        if isinstance(brackets, bool) or not isinstance(brackets, int) or brackets < 1:
            raise ConfigError("brackets", f"must be an integer >= 1, got {brackets!r}")
        if grace_period > max_t:
            raise ConfigError("grace_period", f"({grace_period}) must be <= max_t ({max_t})")
        self._max_t = max_t
        self._grace_period = grace_period
        self._rf = reduction_factor
        self._stop_last_trials = stop_last_trials
        self._brackets = [
            _Bracket(grace_period, max_t, reduction_factor, s, stop_last_trials)
            for s in range(brackets)
        ]
        self._seed = seed if seed is not None else fresh_seed()
        self._trial_bracket: dict[str, int] = {}
        self._num_added = 0
        self._num_stopped = 0

    def on_trial_add(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any] | None:
        self.validate()
        if len(self._brackets) == 1:
            index = 0
        else:
            # Ray: bracket chosen with probability proportional to e ** (rungs - max rungs)
            sizes = [len(b.rungs) for b in self._brackets]
            top = max(sizes)
            weights = [math.e ** (n - top) for n in sizes]
            rng = random.Random(f"{self._seed}/{self._num_added}")
            index = rng.choices(range(len(self._brackets)), weights=weights)[0]
        self._num_added += 1
        self._trial_bracket[trial_id] = index
        return None

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> str:
        assert self._time_attr is not None and self._metric is not None
        t = result_value(result, self._time_attr, trial_id, type(self).__name__)
        value = result_value(result, self._metric, trial_id, type(self).__name__)
        if t >= self._max_t and self._stop_last_trials:
            action = self.STOP
        else:
            index = self._trial_bracket.get(trial_id)
            if index is None:
                self.on_trial_add(trial_id, {})
                index = self._trial_bracket[trial_id]
            action = self._brackets[index].on_result(trial_id, t, self._score(value))
        if action == self.STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None) -> None:
        index = self._trial_bracket.get(trial_id)
        if index is None or not result or self._time_attr is None or self._metric is None:
            return
        if self._time_attr in result and self._metric in result:
            self._brackets[index].on_result(
                trial_id, result[self._time_attr], self._score(result[self._metric])
            )

    def on_trial_remove(self, trial_id: str) -> None:
        pass

    def decision_points(self, trial_id: str) -> DecisionPoints:
        index = self._trial_bracket.get(trial_id, 0)
        points = sorted({r.milestone for r in self._brackets[index].rungs})
        if self._stop_last_trials:
            points = sorted({*points, self._max_t})
        return DecisionPoints(
            time_attr=self._time_attr or "training_iteration", milestones=tuple(points)
        )

    def rung_cutoffs(self, bracket: int = 0) -> dict[float, float | None]:
        """Milestone -> current cutoff of each rung (for tests and progress reports)."""
        b = self._brackets[bracket]
        return {r.milestone: b.cutoff(r) for r in b.rungs}

    def get_state(self) -> dict[str, Any]:
        return {
            **super().get_state(),
            "seed": self._seed,
            "num_added": self._num_added,
            "num_stopped": self._num_stopped,
            "trial_bracket": dict(self._trial_bracket),
            "rungs": [[dict(r.recorded) for r in b.rungs] for b in self._brackets],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._seed = int(state["seed"])
        self._num_added = int(state["num_added"])
        self._num_stopped = int(state["num_stopped"])
        self._trial_bracket = {k: int(v) for k, v in state["trial_bracket"].items()}
        for b, rungs in zip(self._brackets, state["rungs"]):
            for rung, recorded in zip(b.rungs, rungs):
                rung.recorded = {}
                rung.sorted = []
                for tid, score in recorded.items():
                    rung.record(tid, float(score))


ASHAScheduler = AsyncHyperBandScheduler
