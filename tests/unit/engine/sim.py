"""A deterministic in-memory backend that drives an ExperimentEngine, for tests.

Running trials report one result per round, in trial order (like parallel trials advancing in
lockstep). Trials restore their iteration from the checkpoint they resume from; checkpoints are
named ``checkpoint_{iteration:06d}``. Every engine call is recorded as an event so that a run can
be replayed against a restored engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubetune.engine import (
    Action,
    CreateTrial,
    ExperimentEngine,
    ExperimentFinished,
    PauseTrial,
    RestartTrial,
    ResumeTrial,
    StopTrial,
)
from kubetune.engine.trial import FINISHED

Curve = Callable[[dict[str, Any], str, int], dict[str, Any]]


def ckpt_name(iteration: int) -> str:
    return f"checkpoint_{iteration:06d}"


def ckpt_iter(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


class Sim:
    def __init__(
        self,
        engine: ExperimentEngine,
        curve: Curve,
        max_iter: int = 20,
        checkpoint_every: int = 0,
        fail_at: dict[tuple[str, int], str] | None = None,
        max_rounds: int = 500,
        capacity: int | None = None,
    ) -> None:
        self.engine = engine
        self.curve = curve
        self.max_iter = max_iter
        self.checkpoint_every = checkpoint_every
        self.fail_at = dict(fail_at or {})  # (trial index suffix, iteration) -> "error"|"lost"
        self.max_rounds = max_rounds
        # like a backend with resources for ``capacity`` trials: created and resumed trials
        # queue (FIFO) and start (``on_trial_started``) when one of those places is free
        self.capacity = capacity
        self.queue: list[tuple[str, int]] = []
        self.started: list[str] = []
        self.checkpoint_names: dict[str, set[str]] = {}
        self.running: dict[str, int] = {}  # trial -> iterations done
        self.configs: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.actions: list[dict[str, Any]] = []
        self.verdicts: list[tuple[str, int, str]] = []
        self.max_active_seen = 0
        self.now = 0.0
        self.finished: ExperimentFinished | None = None
        self.round = 0
        self.on_event: Callable[[Sim], None] | None = None

    # -- applying actions -------------------------------------------------------------------
    def apply(self, actions: Any) -> None:
        for a in actions:
            self.actions.append(json.loads(json.dumps(a.to_dict())))
            self._apply_one(a)
        if self.capacity is not None:
            self._launch()
        self.max_active_seen = max(self.max_active_seen, len(self.running))
        if self.on_event is not None:
            self.on_event(self)

    def _launch(self) -> None:
        while self.queue and len(self.running) < (self.capacity or 0):
            tid, it = self.queue.pop(0)
            self.running[tid] = it
            self.started.append(tid)
            self.apply(self.engine.on_trial_started(tid, self.step_time()))

    def _enqueue(self, tid: str, it: int) -> None:
        self.queue = [q for q in self.queue if q[0] != tid]
        if self.capacity is None:
            self.running[tid] = it
        else:
            self.running.pop(tid, None)
            self.queue.append((tid, it))

    def _apply_one(self, a: Action) -> None:
        if isinstance(a, CreateTrial):
            self._enqueue(a.trial_id, 0)
            self.configs[a.trial_id] = a.config
            if a.trial_id not in self.order:
                self.order.append(a.trial_id)
        elif isinstance(a, ResumeTrial):
            it = ckpt_iter(a.restore_from.checkpoint_dir_name) if a.restore_from else 0
            self._enqueue(a.trial_id, it)
            self.configs[a.trial_id] = a.config
        elif isinstance(a, RestartTrial):
            self.running[a.trial_id] = ckpt_iter(a.restore_from.checkpoint_dir_name)
            self.configs[a.trial_id] = a.new_config
        elif isinstance(a, (StopTrial, PauseTrial)):
            self.running.pop(a.trial_id, None)
            self.queue = [q for q in self.queue if q[0] != a.trial_id]
        elif isinstance(a, ExperimentFinished):
            assert self.finished is None, "ExperimentFinished emitted twice"
            self.finished = a

    # -- the loop ----------------------------------------------------------------------------
    def step_time(self) -> float:
        self.now += 1.0
        return self.now

    def start(self) -> None:
        self.apply(self.engine.start(self.now))

    def run_round(self) -> None:
        self.round += 1
        for tid in [t for t in self.order if t in self.running]:
            if tid not in self.running:
                continue  # stopped by an earlier action this round
            if self.running[tid] >= self.max_iter:  # resumed at its end: the trainable returns
                self.running.pop(tid)
                self.apply(self.engine.on_trial_complete(tid, self.step_time()))
                continue
            it = self.running[tid] + 1
            key = (tid.rsplit("_", 1)[1], it)
            failure = self.fail_at.pop(key, None)
            if failure == "error":
                self.running.pop(tid)
                self.apply(self.engine.on_trial_error(tid, f"boom at {it}", self.step_time()))
                continue
            if failure == "lost":
                self.running.pop(tid)
                self.apply(self.engine.on_trial_lost(tid, self.step_time()))
                continue
            self.running[tid] = it
            result = {"training_iteration": it, **self.curve(self.configs[tid], tid, it)}
            if self.checkpoint_every and it % self.checkpoint_every == 0:
                # a trial that went back (an exploit, a restore) writes new checkpoints under
                # new names, as the trial runner does (never reusing a name)
                used = self.checkpoint_names.setdefault(tid, set())
                name = ckpt_name(it)
                if name in used:
                    name = f"checkpoint_r{len(used)}_{it:06d}"
                used.add(name)
                result["checkpoint_dir_name"] = name
            if it >= self.max_iter:
                result["done"] = False
            resp = self.engine.on_result(tid, result, self.step_time())
            self.verdicts.append((tid, it, resp.verdict))
            if resp.verdict == "CONTINUE" and it >= self.max_iter and tid in self.running:
                self.running.pop(tid)
                self.apply(resp.actions)
                self.apply(self.engine.on_trial_complete(tid, self.step_time()))
                continue
            self.apply(resp.actions)
        if not self.running and self.finished is None:
            self.apply(self.engine.on_tick(self.step_time()))
            if self.capacity is not None:
                self._launch()

    def run(self) -> Sim:
        self.start()
        while self.finished is None and self.round < self.max_rounds:
            self.run_round()
        assert self.finished is not None, "experiment did not finish"
        return self

    def stopped_at(self) -> dict[str, int]:
        """Trial -> iteration it was at when it ended."""
        out = {}
        for tid in self.order:
            rec = self.engine.trials[tid]
            assert rec.status in FINISHED
            out[tid] = rec.last_result["training_iteration"] if rec.last_result else 0
        return out
