"""Synchronous HyperBand (Ray's ``HyperBandScheduler``).

Trials fill brackets in order (within a band, bracket ``s = 0, 1, ...``; bracket ``s`` takes
``ceil(s_max_1 / (s + 1) * eta ** s)`` trials that first run to ``r0 = int(max_t * eta ** -s)``).
A trial that reaches its bracket's current milestone PAUSEs until every live trial of the bracket
has reached it; then the best ``ceil(n / eta)`` continue to ``min(r * eta, max_t)`` (paused ones
are resumed, the current one continues) and the others stop. When the last milestone is reached
the bracket's trials stop. Paused trials are resumed through :meth:`choose_trial_to_resume`,
brackets with the least completed work first, as Ray does.

One difference from Ray: Ray adds trials to brackets while they are still pending, so a bracket
is full before its first trial reaches a milestone. The engine creates trials only when a slot
frees, so a bracket is not halved before it is full unless no more trials will come.
"""

from __future__ import annotations

import math
from typing import Any

from kubetune.schedulers.trial_scheduler import (
    PAUSED,
    RUNNING,
    DecisionPoints,
    SchedulerCommand,
    TrialScheduler,
    result_value,
)
from kubetune.search.errors import ConfigError


class _Bracket:
    def __init__(self, n0: int, r0: int, max_t: int, eta: float, s: int, stop_last: bool) -> None:
        self.n0 = n0
        self.n = n0
        self.r0 = r0
        self.r = r0
        self.cumul_r = r0
        self.max_t = max_t
        self.eta = eta
        self.s = s
        self.halves = s
        self.stop_last_trials = stop_last
        self.live: dict[str, tuple[float, float] | None] = {}  # trial -> (time, score)
        self.all_trials: list[str] = []
        self.total_work = self._total_work(n0, r0, s)
        self.completed_progress = 0.0
        self.is_being_processed = False
        self.to_unpause: list[str] = []

    def _total_work(self, n: float, r: float, s: int) -> int:
        work = 0
        cumulative_r = r
        for _ in range(s + 1):
            work += int(n) * int(r)
            n = math.ceil(n / self.eta)
            r *= self.eta
            r = int(min(r, self.max_t - cumulative_r))
        return work

    def milestones(self) -> list[int]:
        out = [self.r0]
        r = self.r0
        for _ in range(self.s):
            r = int(min(r * self.eta, self.max_t))
            out.append(r)
        return out

    def filled(self) -> bool:
        return len(self.all_trials) == self.n0

    def add(self, trial_id: str) -> None:
        self.live[trial_id] = None
        self.all_trials.append(trial_id)

    @staticmethod
    def _time(entry: tuple[float, float] | None) -> float:
        return 0 if entry is None else entry[0]

    def cur_iter_done(self) -> bool:
        return all(self._time(e) >= self.cumul_r for e in self.live.values())

    def finished(self) -> bool:
        if not self.stop_last_trials:
            return False
        return self.halves == 0 and self.cur_iter_done()

    def continue_trial(self, trial_id: str) -> bool:
        if not self.stop_last_trials and self.halves == 0:
            return True
        return self._time(self.live[trial_id]) < self.cumul_r

    def update(self, trial_id: str, t: float, score: float) -> None:
        last = self._time(self.live[trial_id])
        self.completed_progress += t - last
        self.live[trial_id] = (t, score)
        if trial_id in self.to_unpause:
            self.to_unpause.remove(trial_id)

    def successive_halving(self) -> tuple[list[str], list[str]]:
        if self.halves == 0 and not self.stop_last_trials:
            return list(self.live), []
        assert self.halves > 0
        self.halves -= 1
        self.n = math.ceil(self.n / self.eta)
        self.r = int(min(self.r * self.eta, self.max_t))
        self.cumul_r = self.r

        def score(tid: str) -> float:
            entry = self.live[tid]
            return -math.inf if entry is None else entry[1]

        ordered = sorted(self.live, key=score)
        return ordered[-self.n :], ordered[: -self.n]

    def completion(self) -> float:
        return 0 if self.total_work == 0 else self.completed_progress / self.total_work

    def to_dict(self) -> dict[str, Any]:
        return {
            "n0": self.n0,
            "n": self.n,
            "r0": self.r0,
            "r": self.r,
            "cumul_r": self.cumul_r,
            "s": self.s,
            "halves": self.halves,
            "live": {k: (list(v) if v is not None else None) for k, v in self.live.items()},
            "all_trials": list(self.all_trials),
            "completed_progress": self.completed_progress,
            "is_being_processed": self.is_being_processed,
            "to_unpause": list(self.to_unpause),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], max_t: int, eta: float, stop_last: bool) -> _Bracket:
        b = cls(d["n0"], d["r0"], max_t, eta, d["s"], stop_last)
        b.n, b.r, b.cumul_r, b.halves = d["n"], d["r"], d["cumul_r"], d["halves"]
        b.live = {k: (tuple(v) if v is not None else None) for k, v in d["live"].items()}
        b.all_trials = list(d["all_trials"])
        b.completed_progress = d["completed_progress"]
        b.is_being_processed = d["is_being_processed"]
        b.to_unpause = list(d["to_unpause"])
        return b


class HyperBandScheduler(TrialScheduler):
    """Synchronous HyperBand; pauses trials at milestones (Ray's semantics)."""

    def __init__(
        self,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        max_t: int = 81,
        reduction_factor: float = 3,
        stop_last_trials: bool = True,
    ) -> None:
        super().__init__(metric=metric, mode=mode, time_attr=time_attr)
        if isinstance(max_t, bool) or not isinstance(max_t, (int, float)) or max_t < 1:
            raise ConfigError("max_t", f"must be a number >= 1, got {max_t!r}")
        if (
            isinstance(reduction_factor, bool)
            or not isinstance(reduction_factor, (int, float))
            or reduction_factor <= 1
        ):
            raise ConfigError("reduction_factor", f"must be > 1, got {reduction_factor!r}")
        self._eta = reduction_factor
        self._s_max_1 = round(math.log(max_t) / math.log(reduction_factor)) + 1
        self._max_t = max_t
        self._stop_last_trials = stop_last_trials
        self._bands: list[list[_Bracket | None]] = [[]]
        self._band_idx = 0
        self._cur: tuple[int, int] | None = None  # (band, bracket index) being filled
        self._trial_info: dict[str, tuple[int, int]] = {}
        self._num_stopped = 0

    def _n0(self, s: int) -> int:
        return math.ceil(self._s_max_1 / (s + 1) * self._eta**s)

    def _r0(self, s: int) -> int:
        return int(self._max_t * self._eta ** (-s))

    def _bracket(self, where: tuple[int, int]) -> _Bracket:
        b = self._bands[where[0]][where[1]]
        assert b is not None
        return b

    def on_trial_add(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any] | None:
        self.validate()
        if self._cur is None or self._bracket(self._cur).filled():
            while True:
                if len(self._bands[self._band_idx]) == self._s_max_1:
                    self._bands.append([])
                    self._band_idx += 1
                band = self._bands[self._band_idx]
                s = len(band)
                if self._r0(s) == 0:
                    band.append(None)  # bracket too small (Ray skips it)
                    continue
                band.append(
                    _Bracket(
                        self._n0(s),
                        self._r0(s),
                        int(self._max_t),
                        self._eta,
                        s,
                        self._stop_last_trials,
                    )
                )
                self._cur = (self._band_idx, len(band) - 1)
                break
        assert self._cur is not None
        self._bracket(self._cur).add(trial_id)
        self._trial_info[trial_id] = self._cur
        return None

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> str:
        assert self._time_attr is not None and self._metric is not None
        owner = type(self).__name__
        t = result_value(result, self._time_attr, trial_id, owner)
        value = result_value(result, self._metric, trial_id, owner)
        where = self._trial_info.get(trial_id)
        if where is None:
            return self.CONTINUE
        bracket = self._bracket(where)
        if trial_id not in bracket.live:
            return self.STOP
        bracket.update(trial_id, t, self._score(value))
        if bracket.continue_trial(trial_id):
            return self.CONTINUE
        return self._process_bracket(bracket, current=trial_id)

    def _process_bracket(self, bracket: _Bracket, current: str | None, force: bool = False) -> str:
        action = self.PAUSE
        if not bracket.cur_iter_done():
            return action
        if not bracket.filled() and not force and self.context.more_trials_expected():
            # Ray adds trials to brackets ahead of running them; the engine creates them only
            # when a slot frees, so wait for the bracket to fill before halving it
            return action
        if bracket.finished():
            for tid in list(bracket.live):
                if tid != current and self.context.trial_status(tid) == PAUSED:
                    self._commands.append(SchedulerCommand("stop", tid, "hyperband: bracket done"))
            return self.STOP
        bracket.is_being_processed = True
        good, bad = bracket.successive_halving()
        self._num_stopped += len(bad)
        for tid in bad:
            if tid == current:
                action = self.STOP
            else:
                self._commands.append(SchedulerCommand("stop", tid, "hyperband: halved"))
            del bracket.live[tid]
        for tid in good:
            if bracket.continue_trial(tid):
                if tid == current:
                    action = self.CONTINUE
                elif (
                    self.context.trial_status(tid) in (PAUSED, RUNNING)
                    and tid not in bracket.to_unpause
                ):
                    bracket.to_unpause.append(tid)
            elif bracket.finished() and bracket.stop_last_trials:
                if tid == current:
                    action = self.STOP
                else:
                    self._commands.append(SchedulerCommand("stop", tid, "hyperband: bracket done"))
                del bracket.live[tid]
        return action

    def _remove(self, trial_id: str) -> None:
        where = self._trial_info.get(trial_id)
        if where is None:
            return
        bracket = self._bracket(where)
        bracket.live.pop(trial_id, None)
        if trial_id in bracket.to_unpause:
            bracket.to_unpause.remove(trial_id)
        if not bracket.finished() and not bracket.is_being_processed and bracket.live:
            self._process_bracket(bracket, current=None)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None) -> None:
        self._remove(trial_id)

    def on_trial_error(self, trial_id: str) -> None:
        self._remove(trial_id)

    def on_trial_remove(self, trial_id: str) -> None:
        self._remove(trial_id)

    def choose_trial_to_resume(self, paused: list[str], more_trials_waiting: bool) -> str | None:
        paused_set = set(paused)
        if not more_trials_waiting:
            # no more trials will join: brackets left unfilled are processed now
            for band in self._bands:
                for b in band:
                    if (
                        b is not None
                        and b.live
                        and not b.filled()
                        and not b.finished()
                        and b.cur_iter_done()
                        and not b.to_unpause
                    ):
                        # no new trial can start now (none will come, or the searcher has
                        # none to give, e.g. a ConcurrencyLimiter counting these paused
                        # trials): halve with the trials the bracket has, as Ray does
                        self._process_bracket(b, current=None, force=True)
        for band in self._bands:
            brackets = [b for b in band if b is not None]
            for bracket in sorted(brackets, key=lambda b: b.completion()):
                for tid in bracket.to_unpause:
                    if tid in paused_set:
                        return tid
        return None

    def decision_points(self, trial_id: str) -> DecisionPoints:
        where = self._trial_info.get(trial_id)
        milestones: tuple[float, ...] = ()
        if where is not None:
            milestones = tuple(self._bracket(where).milestones())
        return DecisionPoints(
            time_attr=self._time_attr or "training_iteration", milestones=milestones
        )

    def get_state(self) -> dict[str, Any]:
        return {
            **super().get_state(),
            "bands": [[b.to_dict() if b else None for b in band] for band in self._bands],
            "band_idx": self._band_idx,
            "cur": list(self._cur) if self._cur else None,
            "trial_info": {k: list(v) for k, v in self._trial_info.items()},
            "num_stopped": self._num_stopped,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._bands = [
            [
                _Bracket.from_dict(b, int(self._max_t), self._eta, self._stop_last_trials)
                if b
                else None
                for b in band
            ]
            for band in state["bands"]
        ]
        self._band_idx = int(state["band_idx"])
        self._cur = tuple(state["cur"]) if state["cur"] else None
        self._trial_info = {k: (int(v[0]), int(v[1])) for k, v in state["trial_info"].items()}
        self._num_stopped = int(state["num_stopped"])
