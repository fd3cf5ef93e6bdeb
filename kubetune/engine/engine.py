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

import json
import math
from collections.abc import Container, Mapping
from typing import Any

from kubetune._util import unflattened_lookup
from kubetune.engine.actions import (
    Action,
    CheckpointRef,
    CreateTrial,
    DeleteCheckpoint,
    ExperimentFinished,
    PauseTrial,
    RestartTrial,
    ResultResponse,
    ResumeTrial,
    StopTrial,
    Verdict,
)
from kubetune.engine.checkpoints import register_checkpoint
from kubetune.engine.config import SCOPES, CheckpointSettings, EngineConfig
from kubetune.engine.result_check import add_experiment_metric, result_problem
from kubetune.engine.trial import (
    ACTIVE,
    ERROR,
    FINISHED,
    PAUSED,
    PENDING,
    RUNNING,
    TERMINATED,
    MetricStats,
    TrialRecord,
)
from kubetune.schedulers.trial_scheduler import (
    Exploit,
    FIFOScheduler,
    MissingResultKeyError,
    TrialScheduler,
)
from kubetune.search.basic_variant import BasicVariantGenerator
from kubetune.search.concurrency_limiter import ConcurrencyLimiter
from kubetune.search.errors import ConfigError, check_mode
from kubetune.search.searcher import Searcher
from kubetune.search.variant_generator import has_unresolved
from kubetune.stoppers import NoopStopper, Stopper, StopSpec, to_stopper

STATE_VERSION = 1
_NUMBER = (int, float)


def _lookup(result: Mapping[str, Any], key: str) -> Any:
    if key in result:
        return result[key]
    try:
        return unflattened_lookup(key, result)
    except KeyError:
        return None


class ExperimentEngine:
    """See the module docstring."""

    def __init__(
        self,
        config: EngineConfig,
        search_alg: Searcher | None = None,
        scheduler: TrialScheduler | None = None,
        stopper: StopSpec | list[StopSpec] = None,
        seed: int | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.seed = seed if seed is not None else 0
        if search_alg is None:
            search_alg = BasicVariantGenerator(random_state=self.seed)
        if not isinstance(search_alg, Searcher):
            raise ConfigError("search_alg", f"must be a Searcher, got {type(search_alg).__name__}")
        if scheduler is None:
            scheduler = FIFOScheduler()
        if not isinstance(scheduler, TrialScheduler):
            raise ConfigError(
                "scheduler", f"must be a TrialScheduler, got {type(scheduler).__name__}"
            )
        self.searcher = search_alg
        self.scheduler = scheduler
        self.stopper: Stopper = to_stopper(stopper)
        self._has_stopper = not isinstance(self.stopper, NoopStopper)

        self._grid_searcher = _is_grid_searcher(search_alg)
        if not self._grid_searcher and _has_grid(config.param_space):
            raise ConfigError(
                "param_space",
                f"grid_search is only supported by the default searcher, not by "
                f"{type(search_alg).__name__}",
            )
        self.searcher.set_search_properties(
            config.metric, config.mode, config.param_space, num_samples=config.num_samples
        )
        scheduler.set_search_properties(config.metric, config.mode)
        scheduler.set_context(self)
        scheduler.validate()
        if not self._grid_searcher and _searcher_uses_metric(search_alg):
            if not search_alg.metric:
                raise ConfigError(
                    "metric",
                    f"{type(search_alg).__name__} needs `metric` (tune config or searcher)",
                )
            if search_alg.mode is None:
                raise ConfigError("mode", f"{type(search_alg).__name__} needs `mode` ('min'/'max')")

        self._required: list[tuple[str, str]] = [
            (k, type(scheduler).__name__) for k in scheduler.required_result_keys()
        ]
        if not self._grid_searcher and _searcher_uses_metric(search_alg):
            metrics = search_alg.metric
            for m in metrics if isinstance(metrics, list) else [metrics]:
                if all(m != k for k, _ in self._required):
                    self._required.append((m, type(search_alg).__name__))
        add_experiment_metric(self._required, config.metric)

        self._prefix = config.id_prefix()
        self._max_concurrent = config.max_concurrent_trials or 0
        if (
            config.num_samples == -1
            and not self._max_concurrent
            and not isinstance(search_alg, ConcurrencyLimiter)
        ):
            raise ConfigError(
                "max_concurrent_trials",
                "num_samples=-1 (no limit) needs max_concurrent_trials (or a ConcurrencyLimiter)",
            )
        self._cap = None if (self._grid_searcher or config.num_samples < 0) else config.num_samples
        self._ckpt: CheckpointSettings = config.checkpoint
        self._score_sign = 1.0 if self._ckpt.checkpoint_score_order == "max" else -1.0

        self.trials: dict[str, TrialRecord] = {}
        self._order: list[str] = []
        self._num_active = 0
        self._num_paused = 0
        self._created = 0
        self._searcher_done = False
        self._started = False
        self._stopping = False
        self._finished: ExperimentFinished | None = None
        self._start_time: float | None = None
        self._restore_pins: dict[str, list[str]] = {}  # target trial -> [donor, checkpoint]

    # ----------------------------------------------------------------- context for schedulers

    def trial_status(self, trial_id: str) -> str:
        rec = self.trials.get(trial_id)
        return rec.status if rec else TERMINATED

    def has_waiting_trials(self) -> bool:
        if self._num_paused:
            return True
        return self._slots_full() and self._may_have_more()

    def more_trials_expected(self) -> bool:
        return self._may_have_more()

    def latest_checkpoint(self, trial_id: str) -> str | None:
        rec = self.trials.get(trial_id)
        return rec.latest_checkpoint if rec else None

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
            rec.status = RUNNING
        return self._after_event(now)

    def on_result(self, trial_id: str, result: dict[str, Any], now: float) -> ResultResponse:
        rec = self._get(trial_id)
        out: list[Action] = []
        status = rec.status
        if status != RUNNING:
            if status == PENDING:
                rec.status = RUNNING
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
            rec.status = PENDING
            restore = self._restore_source(rec)
            if restore is not None:
                self._pin(rec.trial_id, restore)
            out.append(
                ResumeTrial(
                    trial_id,
                    rec.config,
                    restore,
                    reason="retry",
                    decision_points=self.scheduler.decision_points(trial_id),
                )
            )
        else:
            self._fail_for_good(rec, error_message, now, out, stop=False)
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
        rec.status = PENDING
        if not from_checkpoint:
            # from scratch: the earlier run's checkpoints stay stored (the keep-rule still
            # counts them) but no retry of the new run restores one of them
            rec.latest_checkpoint = None
            rec.pending_restore = None
        restore = self._restore_source(rec) if from_checkpoint else None
        if restore is not None:
            self._pin(rec.trial_id, restore)
        out.append(
            ResumeTrial(
                trial_id,
                rec.config,
                restore,
                reason="restore",
                decision_points=self.scheduler.decision_points(trial_id),
            )
        )
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

    # ---------------------------------------------------------------------------- queries

    @property
    def finished(self) -> ExperimentFinished | None:
        return self._finished

    def is_finished(self) -> bool:
        return self._finished is not None

    def num_active(self) -> int:
        return self._num_active

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in (PENDING, RUNNING, PAUSED, TERMINATED, ERROR)}
        for rec in self.trials.values():
            out[rec.status] += 1
        return out

    def trial_ids(self) -> list[str]:
        return list(self._order)

    def best_checkpoint(self, trial_id: str) -> CheckpointRef | None:
        rec = self._get(trial_id)
        if not rec.checkpoints:
            return None
        if self._ckpt.checkpoint_score_attribute:
            name = rec.checkpoints[-1][2]
        else:
            name = rec.latest_checkpoint
        return CheckpointRef(trial_id, name) if name else None

    def trial_summary(self, trial_id: str) -> dict[str, Any]:
        rec = self._get(trial_id)
        best = self.best_checkpoint(trial_id)
        latest = rec.latest_checkpoint
        return {
            "trial_id": rec.trial_id,
            "trial_name": rec.name,
            "experiment_tag": rec.tag,
            "status": rec.status,
            "config": rec.config,
            "last_result": rec.last_result,
            "num_results": rec.num_results,
            "num_failures": rec.num_failures,
            "error": rec.error,
            "stop_reason": rec.stop_reason,
            "best_checkpoint": best.to_dict() if best else None,
            "latest_checkpoint": CheckpointRef(trial_id, latest).to_dict() if latest else None,
            "checkpoints": [c[2] for c in rec.checkpoints],
        }

    def best_trial(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> str | None:
        """Ray's ``get_best_trial``: the trial with the best ``metric`` under ``scope``."""
        metric = metric or self.config.metric
        mode = mode or self.config.mode
        if not metric:
            raise ConfigError("metric", "best trial needs `metric` (argument or tune config)")
        if mode is None:
            raise ConfigError("mode", "best trial needs `mode` ('min' or 'max')")
        check_mode(mode)
        if scope not in SCOPES:
            raise ConfigError("scope", f"must be one of {', '.join(SCOPES)}, got {scope!r}")
        tracked = metric == self.config.metric
        if not tracked and scope != "last":
            raise ConfigError(
                "scope",
                f"only 'last' is available for `{metric}`: the engine keeps statistics for the "
                f"experiment metric `{self.config.metric}` only",
            )
        best_id: str | None = None
        best_value = -math.inf
        sign = 1.0 if mode == "max" else -1.0
        for tid in self._order:
            rec = self.trials[tid]
            if tracked:
                if rec.stats is None:
                    continue
                value = rec.stats.value(scope, mode)
            else:
                if rec.last_result is None:
                    continue
                value = _lookup(rec.last_result, metric)
                if not isinstance(value, _NUMBER):
                    continue
            if filter_nan_and_inf and not math.isfinite(value):
                continue
            if math.isnan(value):
                continue
            if best_id is None or sign * value > best_value:
                best_id, best_value = tid, sign * value
        return best_id

    # ------------------------------------------------------------------------- internals

    def _get(self, trial_id: str) -> TrialRecord:
        rec = self.trials.get(trial_id)
        if rec is None:
            raise KeyError(f"unknown trial {trial_id!r}")
        return rec

    def _slots_full(self) -> bool:
        return bool(self._max_concurrent) and self._num_active >= self._max_concurrent

    def _may_have_more(self) -> bool:
        if self._searcher_done or self._stopping:
            return False
        return self._cap is None or self._created < self._cap

    def _fill_needed(self) -> bool:
        return not self._slots_full() and (self._may_have_more() or self._num_paused > 0)

    def _budget_exhausted(self, now: float) -> bool:
        budget = self.config.time_budget_s
        return (
            budget is not None
            and self._start_time is not None
            and not self._stopping
            and now - self._start_time >= budget
        )

    def _after_event(self, now: float) -> list[Action]:
        out: list[Action] = []
        self._after(now, out)
        return out

    def _after(self, now: float, out: list[Action]) -> None:
        if not self._started or self._finished:
            return
        if self._budget_exhausted(now):
            self._stop_everything("time budget exhausted", now, out)
            return
        if self._has_stopper:
            self.stopper.set_clock(now)
            if self.stopper.stop_all():
                self._stop_everything("stopper.stop_all()", now, out)
                return
        self._fill(now, out)
        self._maybe_finish(out)

    def _fill(self, now: float, out: list[Action]) -> None:
        if self._stopping:
            return
        while not self._slots_full():
            paused = self._paused_ids() if self._num_paused else []
            more = self._may_have_more()
            tid = self.scheduler.choose_trial_to_resume(paused, more) if paused else None
            if tid is not None:
                self._resume(self.trials[tid], out)
                continue
            if more and self._create_trial(now, out):
                continue
            if paused:
                tid = self.scheduler.choose_trial_to_resume(paused, False)
                if tid is not None:
                    self._resume(self.trials[tid], out)
                    continue
                if self._num_active == 0 and not self._may_have_more():
                    # nothing runs and the scheduler resumes none of them: they would wait
                    # forever (e.g. a HyperBand bracket that can never fill)
                    for pid in paused:
                        rec = self.trials[pid]
                        self._complete(
                            rec, rec.last_result, now, out, reason="not resumed", emit=True
                        )
            break
        self._apply_scheduler_commands(now, out)

    def _paused_ids(self) -> list[str]:
        return [tid for tid in self._order if self.trials[tid].status == PAUSED]

    def _create_trial(self, now: float, out: list[Action]) -> bool:
        index = self._created
        trial_id = f"{self._prefix}{index:05d}"
        suggestion = self.searcher.suggest(trial_id)
        if suggestion is None:
            return False
        if not isinstance(suggestion, dict):
            if suggestion == Searcher.FINISHED:
                self._searcher_done = True
                return False
            raise ConfigError(
                "search_alg", f"suggest() returned {suggestion!r}, not a dict, None or FINISHED"
            )
        config = suggestion
        if has_unresolved(config):
            raise ConfigError(
                "search_alg", f"suggest() returned a config with unresolved domains: {config!r}"
            )
        changed = self.scheduler.on_trial_add(trial_id, config)
        if changed is not None:
            config = changed
        self._created += 1
        tag = self.searcher.trial_tag(trial_id) or str(index)
        name = f"{self.config.trainable_name}_{trial_id}"
        rec = TrialRecord(trial_id, index, name, tag, config, dict(self.config.resources))
        rec.created_at = now
        self.trials[trial_id] = rec
        self._order.append(trial_id)
        self._num_active += 1
        out.append(
            CreateTrial(
                trial_id=trial_id,
                trial_name=name,
                experiment_tag=tag,
                config=config,
                resources=rec.resources,
                restore_from=None,
                decision_points=self.scheduler.decision_points(trial_id),
            )
        )
        return True

    def _restore_source(self, rec: TrialRecord) -> CheckpointRef | None:
        if rec.pending_restore is not None:
            return CheckpointRef(rec.pending_restore["trial_id"], rec.pending_restore["name"])
        if rec.latest_checkpoint:
            return CheckpointRef(rec.trial_id, rec.latest_checkpoint)
        return None

    def _pin(self, target: str, ref: CheckpointRef) -> None:
        self._restore_pins[target] = [ref.trial_id, ref.checkpoint_dir_name]

    def _resume(self, rec: TrialRecord, out: list[Action]) -> None:
        restore = self._restore_source(rec)
        rec.pending_restore = None
        rec.status = PENDING
        self._num_paused -= 1
        self._num_active += 1
        if restore is not None:
            self._pin(rec.trial_id, restore)
        out.append(
            ResumeTrial(
                rec.trial_id,
                rec.config,
                restore,
                reason="unpause",
                decision_points=self.scheduler.decision_points(rec.trial_id),
            )
        )

    def _pause(self, rec: TrialRecord, out: list[Action]) -> None:
        rec.status = PAUSED
        self._num_active -= 1
        self._num_paused += 1
        out.append(PauseTrial(rec.trial_id))

    def _exploit(self, rec: TrialRecord, exploit: Exploit, out: list[Action]) -> str:
        ref = CheckpointRef(exploit.donor_trial_id, exploit.donor_checkpoint)
        rec.config = exploit.new_config
        self._pin(rec.trial_id, ref)
        if self.has_waiting_trials():
            # yield the slot (Ray pauses the exploited trial); resume restores from the donor
            rec.pending_restore = {"trial_id": ref.trial_id, "name": ref.checkpoint_dir_name}
            self._pause(rec, out)
            return Verdict.PAUSE
        out.append(
            RestartTrial(
                rec.trial_id,
                exploit.new_config,
                ref,
                decision_points=self.scheduler.decision_points(rec.trial_id),
                info=exploit.info,
            )
        )
        return Verdict.RESTART

    def _apply_scheduler_commands(self, now: float, out: list[Action]) -> None:
        for cmd in self.scheduler.pop_commands():
            rec = self.trials.get(cmd.trial_id)
            if rec is None or rec.status in FINISHED:
                continue
            if cmd.kind == "stop":
                self.searcher.on_trial_complete(rec.trial_id, result=rec.last_result)
                self._end(rec, TERMINATED, cmd.reason or "scheduler", now)
                out.append(StopTrial(rec.trial_id, cmd.reason or "scheduler"))
                self.scheduler.on_trial_remove(rec.trial_id)
            elif cmd.kind == "resume" and rec.status == PAUSED and not self._slots_full():
                self._resume(rec, out)

    def _end(self, rec: TrialRecord, status: str, reason: str, now: float) -> None:
        if rec.status in ACTIVE:
            self._num_active -= 1
        elif rec.status == PAUSED:
            self._num_paused -= 1
        rec.status = status
        rec.stop_reason = reason
        rec.ended_at = now
        rec.pending_restore = None
        self._restore_pins.pop(rec.trial_id, None)

    def _complete(
        self,
        rec: TrialRecord,
        result: dict[str, Any] | None,
        now: float,
        out: list[Action],
        reason: str,
        emit: bool,
    ) -> None:
        self._end(rec, TERMINATED, reason, now)
        self.searcher.on_trial_complete(rec.trial_id, result=result)
        self.scheduler.on_trial_complete(rec.trial_id, result)
        if emit:
            out.append(StopTrial(rec.trial_id, reason))

    def _fail_for_good(
        self, rec: TrialRecord, message: str, now: float, out: list[Action], stop: bool
    ) -> None:
        rec.error = message
        self._end(rec, ERROR, "error", now)
        self.searcher.on_trial_complete(rec.trial_id, result=rec.last_result, error=True)
        self.scheduler.on_trial_error(rec.trial_id)
        if stop:
            out.append(StopTrial(rec.trial_id, f"error: {message}", status=ERROR))
        if self.config.fail_fast:
            self._stop_everything(f"fail_fast: trial {rec.trial_id} failed", now, out, "FAILED")

    def _stop_everything(
        self, reason: str, now: float, out: list[Action], status: str = "SUCCEEDED"
    ) -> None:
        self._stopping = True
        for tid in self._order:
            rec = self.trials[tid]
            if rec.status in ACTIVE or rec.status == PAUSED:
                self._end(rec, TERMINATED, reason, now)
                self.searcher.on_trial_complete(tid, result=rec.last_result)
                self.scheduler.on_trial_remove(tid)
                out.append(StopTrial(tid, reason))
        self.scheduler.pop_commands()
        self._finish(out, status, reason)

    def _maybe_finish(self, out: list[Action]) -> None:
        if self._finished or self._num_active or self._num_paused:
            return
        if self._may_have_more():
            return
        self._finish(out, "SUCCEEDED", "all trials finished")

    def _finish(self, out: list[Action], status: str, reason: str) -> None:
        if self._finished:
            return
        best = None
        if self.config.metric and self.config.mode:
            best = self.best_trial()
        self._finished = ExperimentFinished(status, reason, best)
        out.append(self._finished)

    # ------------------------------------------------------------------------ checkpoints

    def _register_checkpoint(
        self, rec: TrialRecord, name: str, result: Mapping[str, Any], out: list[Action]
    ) -> None:
        if name == rec.latest_checkpoint:
            return
        rec.seq += 1
        keep = self._ckpt.num_to_keep
        pinned: set[str] = set()
        if keep is not None and len(rec.checkpoints) + 1 > keep:
            pinned = {c for t, c in self._pinned() if t == rec.trial_id}
        rec.checkpoints, deleted = register_checkpoint(
            rec.checkpoints,
            name,
            result,
            rec.seq,
            num_to_keep=keep,
            score_attribute=self._ckpt.checkpoint_score_attribute,
            score_order=self._ckpt.checkpoint_score_order,
            pinned=pinned,
        )
        rec.latest_checkpoint = name
        for cname in deleted:
            out.append(DeleteCheckpoint(rec.trial_id, cname))

    def _pinned(self) -> set[tuple[str, str]]:
        pinned = set(self.scheduler.referenced_checkpoints())
        for donor, name in self._restore_pins.values():
            pinned.add((donor, name))
        for rec in self.trials.values():
            if rec.pending_restore is not None:
                pinned.add((rec.pending_restore["trial_id"], rec.pending_restore["name"]))
        return pinned

    # ------------------------------------------------------------------------------ state

    def to_state(self, omit: Container[str] = ()) -> dict[str, Any]:
        """The engine's state as JSON-ready data; the records of trials in ``omit`` are left
        out (``kubetune.engine.snapshot`` stores finished trials once, in segments)."""
        from kubetune.search.spec import to_manifest

        try:
            space: Any = to_manifest(self.config.param_space)
        except ConfigError:
            space = None  # holds sample_from: the caller re-supplies the config on restore
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(space),
            "seed": self.seed,
            "trials": [self.trials[t].to_dict() for t in self._order if t not in omit],
            "num_active": self._num_active,
            "num_paused": self._num_paused,
            "created": self._created,
            "searcher_done": self._searcher_done,
            "started": self._started,
            "stopping": self._stopping,
            "finished": self._finished.to_dict() if self._finished else None,
            "start_time": self._start_time,
            "restore_pins": dict(self._restore_pins),
            "searcher": {"type": type(self.searcher).__name__, "state": self.searcher.get_state()},
            "scheduler": {
                "type": type(self.scheduler).__name__,
                "state": self.scheduler.get_state(),
            },
            "stopper": self.stopper.get_state(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_state(), separators=(",", ":"))

    @classmethod
    def from_json(
        cls,
        state: str | dict[str, Any],
        search_alg: Searcher | None = None,
        scheduler: TrialScheduler | None = None,
        stopper: StopSpec | list[StopSpec] = None,
        config: EngineConfig | None = None,
    ) -> ExperimentEngine:
        """Rebuild an engine from :meth:`to_json`; pass the same kinds of objects as before."""
        from kubetune.search.spec import from_manifest

        st: dict[str, Any] = json.loads(state) if isinstance(state, str) else state
        if st.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported engine state version {st.get('version')!r}")
        if config is None:
            space = st["config"]["param_space"]
            if space is None:
                raise ConfigError(
                    "config",
                    "the param space holds sample_from functions: pass config= to from_json",
                )
            config = EngineConfig.from_dict(st["config"], from_manifest(space))
        for key, obj in (("searcher", search_alg), ("scheduler", scheduler)):
            if obj is not None and type(obj).__name__ != st[key]["type"]:
                raise ConfigError(
                    key, f"state was saved with {st[key]['type']}, got {type(obj).__name__}"
                )
        engine = cls(
            config, search_alg=search_alg, scheduler=scheduler, stopper=stopper, seed=st["seed"]
        )
        engine.searcher.set_state(st["searcher"]["state"])
        engine.scheduler.set_state(st["scheduler"]["state"])
        engine.stopper.set_state(st["stopper"])
        for d in st["trials"]:
            rec = TrialRecord.from_dict(d)
            engine.trials[rec.trial_id] = rec
            engine._order.append(rec.trial_id)
        engine._num_active = st["num_active"]
        engine._num_paused = st["num_paused"]
        engine._created = st["created"]
        engine._searcher_done = st["searcher_done"]
        engine._started = st["started"]
        engine._stopping = st["stopping"]
        fin = st["finished"]
        engine._finished = (
            ExperimentFinished(fin["status"], fin["reason"], fin["best_trial_id"]) if fin else None
        )
        engine._start_time = st["start_time"]
        engine._restore_pins = {k: list(v) for k, v in st["restore_pins"].items()}
        return engine


def _unwrap(searcher: Searcher) -> Searcher:
    while hasattr(searcher, "searcher") and isinstance(searcher.searcher, Searcher):
        searcher = searcher.searcher
    return searcher


def _is_grid_searcher(searcher: Searcher) -> bool:
    return isinstance(_unwrap(searcher), BasicVariantGenerator)


def _searcher_uses_metric(searcher: Searcher) -> bool:
    return not _is_grid_searcher(searcher)


def _has_grid(space: Any) -> bool:
    from kubetune.search.variant_generator import parse_space

    return bool(parse_space(space)[1]) if isinstance(space, Mapping) else False
