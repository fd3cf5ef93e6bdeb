"""The engine's transitions: filling slots, pausing, resuming, ending trials and the run."""

from __future__ import annotations

from typing import Any

from kubetune.engine.actions import (
    Action,
    CheckpointRef,
    CreateTrial,
    ExperimentFinished,
    PauseTrial,
    RestartTrial,
    ResumeTrial,
    StopTrial,
    Verdict,
)
from kubetune.engine.queries import EngineQueries
from kubetune.engine.trial import (
    ACTIVE,
    ERROR,
    FINISHED,
    MAX_EXPLOITS_RECORDED,
    PAUSED,
    PENDING,
    TERMINATED,
    TrialRecord,
)
from kubetune.schedulers.trial_scheduler import Exploit
from kubetune.search.errors import ConfigError
from kubetune.search.searcher import Searcher
from kubetune.search.variant_generator import has_unresolved


class EngineTransitions(EngineQueries):
    """State changes shared by the events (see ``engine.py`` for the rules they keep)."""

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
            # a paused trial waits while another waits to start: the resources it would need
            # go to that one first (Ray's time sharing); it is resumed once none waits
            paused = self._paused_ids() if self._num_paused and not self._pending else []
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
        dirname = None
        if self.trial_namer is not None:  # trial_name_creator / trial_dirname_creator
            name, dirname = self.trial_namer(trial_id, tag, config, name)
        rec = TrialRecord(trial_id, index, name, tag, config, dict(self.config.resources))
        rec.dirname = dirname
        rec.created_at = now
        self.trials[trial_id] = rec
        self._order.append(trial_id)
        self._set_status(rec, PENDING)
        self._num_active += 1
        out.append(
            CreateTrial(
                trial_id=trial_id,
                trial_name=name,
                experiment_tag=tag,
                config=config,
                resources=rec.resources,
                restore_from=None,
                decision_points=self._decision_points(trial_id),
            )
        )
        return True

    def _resume(self, rec: TrialRecord, out: list[Action]) -> None:
        restore = self._restore_source(rec)
        rec.pending_restore = None
        self._set_status(rec, PENDING)
        self._num_paused -= 1
        self._num_active += 1
        out.append(self._resume_action(rec, restore, "unpause", self._new_resources(rec)))

    def _resume_action(
        self,
        rec: TrialRecord,
        restore: CheckpointRef | None,
        reason: str,
        resources: dict[str, Any] | None = None,
    ) -> ResumeTrial:
        """Start ``rec`` again from ``restore`` (pinned: the keep-rule must not delete it)."""
        if restore is not None:
            self._pin(rec.trial_id, restore)
        return ResumeTrial(
            rec.trial_id,
            rec.config,
            restore,
            reason=reason,
            decision_points=self._decision_points(rec.trial_id),
            resources=resources,
        )

    def _new_resources(self, rec: TrialRecord) -> dict[str, Any] | None:
        """Resources the scheduler reallocated to the trial (ResourceChangingScheduler paused
        it for them, as Ray does): they apply from this start on, and are recorded."""
        wanted = self.scheduler.resources_for(rec.trial_id)
        if wanted is None or wanted == rec.resources:
            return None
        rec.resources = dict(wanted)
        return rec.resources

    def _pause(self, rec: TrialRecord, out: list[Action]) -> None:
        self._set_status(rec, PAUSED)
        self._num_active -= 1
        self._num_paused += 1
        out.append(PauseTrial(rec.trial_id))

    def _exploit(self, rec: TrialRecord, exploit: Exploit, out: list[Action]) -> str:
        ref = CheckpointRef(exploit.donor_trial_id, exploit.donor_checkpoint)
        rec.config = exploit.new_config
        if len(rec.exploits) < MAX_EXPLOITS_RECORDED:
            rec.exploits.append(
                {
                    "donor": exploit.donor_trial_id,
                    "checkpoint": exploit.donor_checkpoint,
                    "iteration": (rec.last_result or {}).get("training_iteration"),
                    "result": rec.num_results,
                }
            )
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
                decision_points=self._decision_points(rec.trial_id),
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
        self._set_status(rec, status)
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
