"""The experiment state machine: events in, actions out (DESIGN.md §3.4).

Usage (a backend — local mode or the operator — drives it)::

    config = EngineConfig(param_space=..., metric="loss", mode="min", num_samples=20,
                          max_concurrent_trials=4)
    engine = ExperimentEngine(config, search_alg=None, scheduler=ASHAScheduler(),
                              stopper={"training_iteration": 50}, seed=0)
    actions = engine.start(now)                       # CreateTrial x 4
    engine.on_trial_started(trial_id, now)            # pod/process is up
    resp = engine.on_result(trial_id, result, now)    # resp.verdict: CONTINUE/STOP/PAUSE/RESTART
    engine.on_checkpoint(trial_id, "checkpoint_000003", result)   # or result["checkpoint_dir_name"]
    engine.on_trial_complete(trial_id, now)           # the trainable returned
    engine.on_trial_error(trial_id, "Traceback ...", now)
    engine.on_trial_lost(trial_id, now)               # its pod/process vanished
    engine.on_trial_preempted(trial_id, "EvictionByEvictionAPI", now)  # not a failure
    engine.on_tick(now)                               # time budget, searchers that said "not now"
    state = engine.to_json()                          # str; to_state() gives the dict
    engine = ExperimentEngine.from_json(state, search_alg=..., scheduler=..., stopper=...)

Every event returns the list of actions to carry out (``on_result`` a :class:`ResultResponse`
that iterates like that list and also carries the verdict for the reporting trial). Actions:
``CreateTrial``, ``StopTrial``, ``PauseTrial``, ``ResumeTrial``, ``RestartTrial``,
``DeleteCheckpoint``, ``ExperimentFinished`` (see :mod:`kubetune.engine.actions`).

Rules:

* A trial occupies a slot from ``CreateTrial``/``ResumeTrial`` until the engine emits
  ``StopTrial``/``PauseTrial`` for it or it completes or fails for good; the engine counts it as
  ended the moment it emits ``StopTrial``, and ignores later events of that trial.
  ``max_concurrent_trials`` bounds the slots.
* Results: stop criteria first (``stop`` dict/function/Stopper), then the scheduler. A result
  without the scheduler's metric or time attribute, or the searcher's metric, puts the trial in
  ERROR with a message naming the trial and the key; the experiment goes on. A result with
  ``done: true`` ends the trial.
* Failures: up to ``max_failures`` retries (``ResumeTrial(reason="retry")`` from the trial's
  latest checkpoint), then ERROR; ``fail_fast`` stops everything at the first error.
  Preemptions (``on_trial_preempted``: the cluster ended the attempt) are retried the same
  way (``reason="preempted"``) without limit and count in ``num_preemptions``, not failures.
* Checkpoints: Ray's ``num_to_keep`` rule (keep the best by ``checkpoint_score_attribute`` /
  order, or the newest; never the latest; never one still needed as a restore source).
* Determinism: no clocks, no global randomness: the same events give the same actions for a
  seed, also across ``to_json``/``from_json``. Python objects that are not JSON
  (``sample_from`` functions, PBT's ``custom_explore_fn``, function stoppers) are re-supplied by
  the caller on restore; everything else is in the state.
* Memory: per trial the engine keeps its config, its last result, O(1) statistics of the
  metric (last 10 values, sum, min, max) and its live checkpoint names.
"""

from __future__ import annotations

from typing import Any

from kubetune.engine.actions import Action, ResultResponse, StopTrial, Verdict
from kubetune.engine.checkpoints import _NUMBER
from kubetune.engine.checkpoints import lookup as _lookup
from kubetune.engine.result_check import result_problem
from kubetune.engine.state import STATE_VERSION, EngineState
from kubetune.engine.transitions import EngineTransitions
from kubetune.engine.trial import (
    ACTIVE,
    ERROR,
    FINISHED,
    PAUSED,
    PENDING,
    RUNNING,
    TERMINATED,
    MetricStats,
)
from kubetune.schedulers.trial_scheduler import Exploit, MissingResultKeyError, TrialScheduler

__all__ = ["STATE_VERSION", "ExperimentEngine"]


class ExperimentEngine(EngineState, EngineTransitions):
    """See the module docstring. The parts: ``core`` (shared state, scheduler context),
    ``queries``, ``transitions`` (slots and trial ends), ``state`` (JSON); here: the events."""

    # ----------------------------------------------------------------------------- events

    def start(self, now: float) -> list[Action]:
        """Begin the experiment: the first trials."""
        if self._started:
            return []
        self._started = True
        self._start_time = now
        self.stopper.set_clock(now)
        out: list[Action] = []
        self._fill(now, out)
        self._maybe_finish(out)
        return out

    def on_trial_started(self, trial_id: str, now: float) -> list[Action]:
        rec = self._get(trial_id)
        if rec.status == PENDING:
            self._set_status(rec, RUNNING)
        return self._after_event(now)

    def on_result(self, trial_id: str, result: dict[str, Any], now: float) -> ResultResponse:
        rec = self._get(trial_id)
        out: list[Action] = []
        status = rec.status
        if status != RUNNING:
            if status == PENDING:
                self._set_status(rec, RUNNING)
            elif status == PAUSED:
                return ResultResponse(Verdict.PAUSE, [])
            else:
                return ResultResponse(Verdict.STOP, [])
        if self._budget_exhausted(now):
            self._stop_everything("time budget exhausted", now, out)
            return ResultResponse(Verdict.STOP, out)

        rec.last_result = result
        rec.num_results += 1
        if trial_id in self._restore_pins:
            del self._restore_pins[trial_id]
        ckpt = result.get("checkpoint_dir_name")
        if ckpt:
            self._register_checkpoint(rec, ckpt, result, out)
        metric = self.config.metric
        if metric is not None:
            value = result[metric] if metric in result else _lookup(result, metric)
            if isinstance(value, _NUMBER) and not isinstance(value, bool):
                stats = rec.stats
                if stats is None:
                    stats = rec.stats = MetricStats()
                stats.add(float(value))

        done = bool(result.get("done"))
        if not done:
            problem = result_problem(trial_id, result, self._required, _lookup)
            if problem is not None:
                self._fail_for_good(rec, problem, now, out, stop=True)
                self._after(now, out)
                return ResultResponse(Verdict.STOP, out)

        self.searcher.on_trial_result(trial_id, result)
        if self._has_stopper:
            self.stopper.set_clock(now)
            if self.stopper(trial_id, result):
                self._complete(rec, result, now, out, reason="stop criteria", emit=True)
                if self.stopper.stop_all():
                    self._stop_everything("stopper.stop_all()", now, out)
                self._after(now, out)
                return ResultResponse(Verdict.STOP, out)
            if self.stopper.stop_all():
                self._stop_everything("stopper.stop_all()", now, out)
                return ResultResponse(Verdict.STOP, out)
        if done:
            self._complete(rec, result, now, out, reason="done", emit=False)
            self._after(now, out)
            return ResultResponse(Verdict.STOP, out)

        try:
            decision = self.scheduler.on_trial_result(trial_id, result)
        except MissingResultKeyError as err:
            self._fail_for_good(rec, str(err), now, out, stop=True)
            self._after(now, out)
            return ResultResponse(Verdict.STOP, out)

        verdict = Verdict.CONTINUE
        if isinstance(decision, Exploit):
            verdict = self._exploit(rec, decision, out)
        elif decision == TrialScheduler.STOP:
            verdict = Verdict.STOP
            self.searcher.on_trial_complete(trial_id, result=result)
            self._end(rec, TERMINATED, "scheduler", now)
            out.append(StopTrial(trial_id, "scheduler"))
            self.scheduler.on_trial_remove(trial_id)
        elif decision == TrialScheduler.PAUSE:
            verdict = Verdict.PAUSE
            self._pause(rec, out)
        self._apply_scheduler_commands(now, out)
        if verdict == Verdict.CONTINUE and not self._fill_needed():
            return ResultResponse(verdict, out)
        self._after(now, out)
        return ResultResponse(verdict, out)

    def on_checkpoint(
        self,
        trial_id: str,
        checkpoint_dir_name: str,
        result: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> list[Action]:
        """A checkpoint was persisted (if not reported in a result's ``checkpoint_dir_name``)."""
        rec = self._get(trial_id)
        out: list[Action] = []
        if rec.status in FINISHED and rec.latest_checkpoint == checkpoint_dir_name:
            return out
        self._register_checkpoint(rec, checkpoint_dir_name, result or rec.last_result or {}, out)
        return out

    def on_trial_complete(
        self, trial_id: str, now: float, result: dict[str, Any] | None = None
    ) -> list[Action]:
        """The trainable returned normally."""
        rec = self._get(trial_id)
        out: list[Action] = []
        if rec.status in FINISHED:
            return self._after_event(now)
        if result is not None:
            rec.last_result = result
        self._complete(rec, rec.last_result, now, out, reason="completed", emit=False)
        self._after(now, out)
        return out

    def on_trial_error(self, trial_id: str, error_message: str, now: float) -> list[Action]:
        rec = self._get(trial_id)
        out: list[Action] = []
        if rec.status in FINISHED or rec.status == PAUSED:
            return self._after_event(now)
        rec.num_failures += 1
        rec.error = error_message
        limit = self.config.max_failures
        if not self._stopping and (limit == -1 or rec.num_failures <= limit):
            self._set_status(rec, PENDING)
            out.append(self._resume_action(rec, self._restore_source(rec), "retry"))
        else:
            self._fail_for_good(rec, error_message, now, out, stop=False)
        self._after(now, out)
        return out

    def on_trial_preempted(self, trial_id: str, reason: str, now: float) -> list[Action]:
        """The trial was preempted, evicted or lost with its node (the cluster ended it, not
        its code): retried from its latest checkpoint without counting against
        ``max_failures``, as Ray does for preempted nodes since 2.9. ``reason`` is kept as
        the trial's last disruption; ``num_preemptions`` counts them."""
        rec = self._get(trial_id)
        out: list[Action] = []
        if rec.status in FINISHED or rec.status == PAUSED or self._stopping:
            return self._after_event(now)
        rec.num_preemptions += 1
        rec.last_disruption = reason
        self._preemptions += 1
        self._set_status(rec, PENDING)
        out.append(self._resume_action(rec, self._restore_source(rec), "preempted"))
        self._after(now, out)
        return out

    def on_trial_lost(self, trial_id: str, now: float) -> list[Action]:
        """The trial's pod or process vanished: a failure like any other (Ray counts it)."""
        return self.on_trial_error(trial_id, "trial lost: its pod or process disappeared", now)

    def on_tick(self, now: float) -> list[Action]:
        return self._after_event(now)

    def resume_trial(self, trial_id: str, now: float, from_checkpoint: bool = True) -> list[Action]:
        """After a driver restart (``Tuner.restore``): start a trial again.

        A trial that was running (or about to start) when the driver stopped is still active
        here; it restarts from its latest checkpoint (or from scratch). An errored trial is
        revived (``resume_errored`` / ``restart_errored``): its failures are forgotten and it
        takes a slot again, so a finished experiment goes on.
        """
        rec = self._get(trial_id)
        out: list[Action] = []
        if rec.status == ERROR:
            rec.error = None
            rec.num_failures = 0
            rec.ended_at = None
            self._num_active += 1
            if self._finished is not None and not self._stopping:
                self._finished = None
        elif rec.status not in ACTIVE:
            return out
        self._set_status(rec, PENDING)
        if not from_checkpoint:
            # from scratch: the earlier run's checkpoints stay stored (the keep-rule still
            # counts them) but no retry of the new run restores one of them
            rec.latest_checkpoint = None
            rec.pending_restore = None
        restore = self._restore_source(rec) if from_checkpoint else None
        out.append(self._resume_action(rec, restore, "restore"))
        return out

    def stop_trial(self, trial_id: str, now: float, reason: str) -> list[Action]:
        """End an active or paused trial as TERMINATED (``resume_unfinished=False``)."""
        rec = self._get(trial_id)
        out: list[Action] = []
        if rec.status in ACTIVE or rec.status == PAUSED:
            self._complete(rec, rec.last_result, now, out, reason=reason, emit=True)
            self.scheduler.on_trial_remove(trial_id)
            self._after(now, out)
        return out

    def stop_experiment(self, now: float, reason: str = "stopped by request") -> list[Action]:
        out: list[Action] = []
        if not self._finished:
            self._stop_everything(reason, now, out)
        return out
