"""One experiment's reconcile loop, without I/O of its own.

:class:`ExperimentRuntime` owns the engine of one TuneExperiment. ``step()`` takes what the
watches observed (views of its TuneTrials and Pods, see ``views.py``), feeds new results and
pod endings to the engine, and carries out the engine's actions through an ``api`` object (the
methods of :class:`kubetune_operator.api.KubeApi`; tests pass a recorder) and a
:class:`kubetune.storage.Storage` rooted at ``PREFIX/EXPERIMENT/``.

Bookkeeping that is not in the engine's snapshot is rebuilt from the observed objects after
a restart: the attempt of a trial is the highest ``kubetune.io/attempt`` label of its pods, and
results the snapshot has not seen are replayed from ``TRIAL/result.json`` in storage.

Ordering that keeps restarts safe: the engine snapshot is written before any TuneTrial of a
new trial is created (so a restarted operator knows every trial that may exist), children
have deterministic names (a 409 on create means "already done"), and a pod that vanished
without our asking counts as a failure of its attempt (retried from the latest checkpoint).
"""

from __future__ import annotations

import functools
import time
from typing import Any

from kubetune.engine import (
    Action,
    CheckpointRef,
    CreateTrial,
    DeleteCheckpoint,
    ExperimentFinished,
    PauseTrial,
    RestartTrial,
    ResumeTrial,
    StopTrial,
)
from kubetune.engine import trial as states
from kubetune.storage import StorageError
from kubetune_operator import objects
from kubetune_operator.observe import Observing
from kubetune_operator.runtime_core import (
    PHASE_BY_STATE,
    RESULT_FILE,
    SEGMENT_TRIALS,
    STATE_KEY,
    VERDICT_ACTION,
    Api,
    Observed,
    PodBuilder,
    TrialTrack,
    _checkpoint_index,
    _iteration,
    decision_points_dict,
    log,
)
from kubetune_operator.views import LIVE
from kubetune_operator.workers import WorkerTracking, as_pods

# importable from here as before the split into runtime_core.py and observe.py
__all__ = [
    "PHASE_BY_STATE",
    "RESULT_FILE",
    "SEGMENT_TRIALS",
    "STATE_KEY",
    "VERDICT_ACTION",
    "Api",
    "ExperimentRuntime",
    "Observed",
    "PodBuilder",
    "TrialTrack",
    "decision_points_dict",
]


class ExperimentRuntime(Observing, WorkerTracking):
    # -- restart ----------------------------------------------------------------------------
    def restore(self, observed: Observed, now: float) -> None:
        """After a restart: adopt trials and pods, replay results the snapshot has not seen."""
        actions: list[Action] = []
        for trial_id in self.engine.trial_ids():
            tr = self.track(trial_id)
            self.busy[trial_id] = tr
            summary = self.engine.trial_summary(trial_id)
            rows = self._read_results(tr)
            for row in rows[summary["num_results"] :]:
                actions.extend(self._feed(tr, row, now, gated=False))
            last = self.engine.trial_summary(trial_id).get("last_result") or {}
            tr.last_iter = _iteration(last)
            pods = self.rank0_pods(tr, observed)
            if pods:
                newest = max(pods, key=lambda p: p.get("attempt") or 0)
                tr.attempt = newest.get("attempt") or 0
                tr.pod_name = newest["name"]
                tr.pod_seen = True
                # An attempt of an active trial is watched until its end is handled, even if
                # it ended while the operator was down (its results are then caught up).
                active = self.engine.trial_status(trial_id) in (states.RUNNING, states.PENDING)
                tr.pod_live = active or (newest["phase"] in LIVE and not newest["deleting"])
                self.adopt_gang(tr, observed)
            view = observed.trials.get(tr.obj_name)
            if view is not None:
                tr.uid = view.get("uid") or ""
                tr.spec = view.get("spec") or {}
                tr.attempt = max(tr.attempt, view.get("attempts") or 0)
                verdict = view.get("verdict") or {}
                if isinstance(verdict.get("seq"), int):
                    tr.answered_seq = verdict["seq"]
            status = self.engine.trial_status(trial_id)
            if (
                status in (states.RUNNING, states.PENDING)
                and not tr.pod_live
                and (not pods or view is None)
            ):
                actions.extend(self.engine.resume_trial(trial_id, now, from_checkpoint=True))
            elif view is not None:
                self._repair_trial_status(tr, view, status)
        # TuneTrials the snapshot does not know cannot exist (the snapshot is written before
        # they are created), except those of an experiment with no snapshot: start afresh.
        self.pending.extend(actions)
        self.restored = True

    def _repair_trial_status(self, tr: TrialTrack, view: dict[str, Any], status: str) -> None:
        """A status write that failed before a restart or rebuild is not retried as such:
        set the phase and attempt the engine and the pods say, where the object differs."""
        tr.phase = view.get("phase")
        patch: dict[str, Any] = {}
        phase = PHASE_BY_STATE.get(status)
        if phase and phase != tr.phase and not (phase == "PENDING" and tr.phase == "RUNNING"):
            patch["phase"] = phase
            if status in (states.TERMINATED, states.ERROR):
                summary = self.engine.trial_summary(tr.trial_id)
                patch["reason"] = summary.get("stop_reason") or "completed"
        if tr.pod_name and (view.get("attempts") or 0) != tr.attempt:
            patch.update(attempts=tr.attempt, podName=tr.pod_name)
        if patch:
            self._set_trial_status(tr, patch)

    # -- the loop ---------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self.pending.extend(self.engine.start(now))

    def step(self, observed: Observed, now: float, suspend: bool = False) -> None:
        actions: list[Action] = list(self.pending)
        self.pending.clear()
        if suspend != self.suspended:
            actions.extend(self._set_suspended(suspend, now))
        self._refresh_workloads(observed, now)
        for tr in list(self.busy.values()):
            view = observed.trials.get(tr.obj_name)
            if view is not None:
                actions.extend(self._consume_report(tr, view, now))
            actions.extend(self._observe_pod(tr, observed, now))
            actions.extend(self.observe_workers(tr, observed, now))
        t1 = time.monotonic()
        self.flush()  # verdicts first: trials are waiting for them
        t2 = time.monotonic()
        if not self.suspended:
            actions.extend(self.engine.on_tick(now))
        self._apply(actions, now)
        t3 = time.monotonic()
        self.flush()
        t4 = time.monotonic()
        self._start_attempts()
        self.flush()
        for trial_id in [
            t for t, tr in self.busy.items() if not tr.pod_live and not tr.next_attempt
        ]:
            del self.busy[trial_id]
        self.timings = [t1, t2, t3, t4, time.monotonic()]

    # -- suspend ----------------------------------------------------------------------------
    def _set_suspended(self, suspend: bool, now: float) -> list[Action]:
        self.suspended = suspend
        out: list[Action] = []
        if suspend:
            for tr in self.tracks.values():
                if tr.pod_live and not tr.stopping:
                    tr.stopping = True
                    self._delete_pod(tr)
            self._post("running trials paused, none started", "Suspended")
            return out
        for trial_id, tr in self.tracks.items():
            if self.engine.trial_status(trial_id) in (states.RUNNING, states.PENDING) and (
                not tr.pod_live
            ):
                out.extend(self.engine.resume_trial(trial_id, now, from_checkpoint=True))
        out.extend(self.deferred)
        self.deferred = []
        self._post("trials resumed", "Resumed")
        return out

    # -- actions ----------------------------------------------------------------------------
    def _apply(self, actions: list[Action], now: float) -> None:
        creates = [a for a in actions if isinstance(a, CreateTrial)]
        if creates and not self.suspended:
            # before the children exist (see the module docstring): their creates wait for it
            self._barrier = self.save_snapshot()
        for action in actions:
            self._apply_one(action, now)
        self._barrier = None

    def _apply_one(self, action: Action, now: float) -> None:
        if isinstance(action, (CreateTrial, ResumeTrial)) and self.suspended:
            self.deferred.append(action)
            return
        if isinstance(action, CreateTrial):
            tr = self.track(action.trial_id)
            tr.spec = objects.trial_spec(
                self.name,
                action.trial_id,
                action.config,
                action.resources,
                self.checkpoint_uri(action.restore_from),
                decision_points_dict(action),
                0,
                action.experiment_tag,
            )
            body = objects.tune_trial(self.experiment, action.trial_id, action.trial_name, tr.spec)
            self._defer(tr.obj_name, lambda: self._create_trial(tr, body), after=self._barrier)
            tr.next_attempt = {"restore": False}
            self.busy[tr.trial_id] = tr
        elif isinstance(action, (ResumeTrial, RestartTrial)):
            tr = self.track(action.trial_id)
            config = action.new_config if isinstance(action, RestartTrial) else action.config
            tr.spec = {
                **tr.spec,
                "config": config,
                "restoreFrom": self.checkpoint_uri(action.restore_from),
                "decisionPoints": decision_points_dict(action),
                "checkpointIndexStart": self._next_checkpoint_index(action.trial_id),
                "desiredState": "Running",
            }
            if isinstance(action, ResumeTrial) and action.resources is not None:
                tr.spec["resources"] = action.resources  # the next pod asks for them
            if not tr.spec.get("experiment"):
                summary = self.engine.trial_summary(action.trial_id)
                tr.spec.update(
                    objects.trial_spec(
                        self.name,
                        action.trial_id,
                        config,
                        self.engine.trial_resources(action.trial_id)
                        or self.engine.config.resources,
                        tr.spec["restoreFrom"],
                        tr.spec["decisionPoints"],
                        tr.spec["checkpointIndexStart"],
                        summary.get("experiment_tag"),
                    )
                )
                body = objects.tune_trial(
                    self.experiment, action.trial_id, summary["trial_name"], tr.spec
                )
                self._defer(tr.obj_name, lambda: self._create_trial(tr, body), after=self._barrier)
            tr.next_attempt = {"restore": True}
            self.busy[tr.trial_id] = tr
            if tr.pod_live and not tr.stopping:
                self._end_attempt(tr)
            if isinstance(action, RestartTrial):
                self._post(f"{tr.obj_name} restarts from {tr.spec['restoreFrom']}", "TrialExploit")
        elif isinstance(action, StopTrial):
            tr = self.track(action.trial_id)
            tr.next_attempt = None
            if tr.pod_live and not tr.stopping:
                self._end_attempt(tr)
            phase = "ERROR" if action.status == states.ERROR else "TERMINATED"
            self._set_trial_status(tr, {"phase": phase, "reason": action.reason})
        elif isinstance(action, PauseTrial):
            tr = self.track(action.trial_id)
            tr.next_attempt = None
            if tr.pod_live and not tr.stopping:
                self._end_attempt(tr)
            self._set_trial_status(tr, {"phase": "PAUSED", "reason": "scheduler"})
        elif isinstance(action, DeleteCheckpoint):
            # Only the engine deletes stored checkpoints (the sidecar frees the pod's disk): it
            # never names one that a pending restore (retry, PBT exploit) still needs.
            tr = self.track(action.trial_id)
            self._defer(
                f"{tr.obj_name}#storage",
                functools.partial(
                    self._delete_checkpoint, f"{self.storage_name(tr)}/{action.checkpoint_dir_name}"
                ),
            )
        elif isinstance(action, ExperimentFinished):
            self.dirty = True

    def _delete_checkpoint(self, prefix: str) -> None:
        try:
            self.storage.delete_prefix(prefix)
        except (StorageError, OSError) as exc:  # a leftover costs space, not correctness
            log.warning("cannot delete checkpoint %s: %s", prefix, exc)

    def _end_attempt(self, tr: TrialTrack) -> None:
        """Stop the current pod: it ends by itself when its gate got a verdict, else SIGTERM."""
        tr.stopping = True
        if tr.answered_seq is not None and tr.last_iter in tr.verdicts:
            action = tr.verdicts[tr.last_iter][0]
            if action != "continue":
                return  # the verdict ends the attempt without a delete
        self._delete_pod(tr)

    def _create_trial(self, tr: TrialTrack, body: dict[str, Any]) -> None:
        tr.uid = self.api.create_trial(body)["metadata"].get("uid", "")

    def _create_pod(
        self, tr: TrialTrack, trial_obj: dict[str, Any], attempt: int, pods: list[dict[str, Any]]
    ) -> None:
        if not pods:
            trial_obj = {**trial_obj, "metadata": {**trial_obj["metadata"], "uid": tr.uid}}
            pods = as_pods(self.build_pod(self.experiment, trial_obj, attempt))
        for pod in pods:  # a multi-worker attempt's pods all at once (kubetune_operator.workers)
            self.api.create_pod(pod)

    def _next_checkpoint_index(self, trial_id: str) -> int:
        names = self.engine.trial_summary(trial_id).get("checkpoints") or []
        latest = self.engine.latest_checkpoint(trial_id)
        indices = [_checkpoint_index(n) for n in [*names, latest] if n]
        return max([i + 1 for i in indices if i is not None], default=0)

    def _start_attempts(self) -> None:
        for tr in self.busy.values():
            if tr.next_attempt is None or tr.pod_live or self.suspended:
                continue
            status = self.engine.trial_status(tr.trial_id)
            if status not in (states.RUNNING, states.PENDING):
                tr.next_attempt = None
                continue
            if not self._restore_source_stored(tr):
                continue  # its sidecar is still uploading it: try again on the next step
            tr.attempt += 1
            trial_obj = {
                "apiVersion": objects.API_VERSION,
                "kind": "TuneTrial",
                "metadata": {
                    "name": tr.obj_name,
                    "namespace": self.namespace,
                    "uid": tr.uid,
                },
                "spec": tr.spec,
            }
            if tr.attempt > 1:
                spec = {"spec": tr.spec}
                self._defer(
                    tr.obj_name,
                    lambda n=tr.obj_name, p=spec: self.api.patch_trial(  # type: ignore[misc]
                        self.namespace, n, p
                    ),
                )
            pods = as_pods(self.build_pod(self.experiment, trial_obj, tr.attempt))
            tr.pod_name = pods[0]["metadata"]["name"]
            self.begin_gang(tr, pods)
            if not tr.uid:
                # its TuneTrial create is still queued (writes.py): build the pods again once
                # that create has returned the uid the pods' owner reference needs
                pods = []
            self._defer(
                tr.obj_name, functools.partial(self._create_pod, tr, trial_obj, tr.attempt, pods)
            )
            tr.pod_live, tr.pod_seen, tr.stopping = True, False, False
            tr.next_attempt = None
            tr.last_iter = (
                _iteration(self.engine.trial_summary(tr.trial_id).get("last_result") or {})
                if tr.spec.get("restoreFrom")
                else None
            )
            tr.answered_seq = None
            tr.verdicts = {}
            self._set_trial_status(
                tr,
                {
                    "phase": "PENDING",
                    "attempts": tr.attempt,
                    "podName": tr.pod_name,
                    "failures": self.engine.trial_summary(tr.trial_id)["num_failures"],
                },
            )

    def _restore_source_stored(self, tr: TrialTrack, patience_s: float = 120.0) -> bool:
        """Whether the checkpoint the next attempt restores is in storage (a donor's newest
        checkpoint may still be uploading); after ``patience_s`` the attempt starts anyway and
        a missing checkpoint fails it like any other error."""
        uri = tr.spec.get("restoreFrom")
        root = self.storage.uri("").rstrip("/") + "/"
        if not uri or not uri.startswith(root):
            return True
        try:
            if self.storage.list_keys(uri[len(root) :].rstrip("/") + "/"):
                tr.next_attempt = {**(tr.next_attempt or {}), "waiting_since": None}
                return True
        except (StorageError, OSError):
            return True
        since = (tr.next_attempt or {}).get("waiting_since") or time.monotonic()
        tr.next_attempt = {**(tr.next_attempt or {}), "waiting_since": since}
        return time.monotonic() - since > patience_s

    # -- experiment status ------------------------------------------------------------------
    def status(self, generation: int | None) -> dict[str, Any]:
        counts = self.engine.counts()
        finished: ExperimentFinished | None = self.engine.finished
        unschedulable = next((t for t in self.busy.values() if t.unschedulable), None)
        waiting = self.admission_waiting()
        if finished is not None:
            phase, reason, message = self.finished_phase()
        elif self.suspended:
            phase, reason, message = "Suspended", "Suspended", "spec.suspend is true"
        elif unschedulable is not None:
            phase, reason = "Running", "TrialUnschedulable"
            message = f"trial {unschedulable.obj_name} cannot be scheduled: "
            message += str(unschedulable.unschedulable)
        elif waiting:
            phase, reason = "Running", "TrialsWaitingForAdmission"
            message = f"{counts[states.RUNNING]} running, {counts[states.PENDING]} pending"
            message += f" ({len(waiting)} waiting for Kueue admission)"
        else:
            phase, reason = "Running", "TrialsRunning"
            message = f"{counts[states.RUNNING]} running, {counts[states.PENDING]} pending"
        status: dict[str, Any] = {
            "phase": phase,
            "observedGeneration": generation,
            "trials": {
                "total": sum(counts.values()),
                "pending": counts[states.PENDING],
                "running": counts[states.RUNNING],
                "paused": counts[states.PAUSED],
                "terminated": counts[states.TERMINATED],
                "error": counts[states.ERROR],
            },
            "message": message,
            "storageUri": self.storage.uri(""),
            "preemptions": self.engine.num_preemptions(),
            "_reason": reason,
            "_admission": None if waiting is None else [list(w) for w in waiting],
        }
        best = self.best_trial()
        if best is not None:
            status["bestTrial"] = best
        return status

    def finished_phase(self) -> tuple[str, str, str]:
        """(phase, reason, message) of a finished experiment. Ray's fit() returns a ResultGrid
        whatever the trials did (the engine keeps that), but an experiment none of whose
        trials succeeded is ``Failed`` here (reason AllTrialsErrored), not ``Succeeded``."""
        finished = self.engine.finished
        assert finished is not None
        if finished.status != "SUCCEEDED":
            return "Failed", "TrialFailed", finished.reason
        counts = self.engine.counts()
        if counts[states.ERROR] and not counts[states.TERMINATED]:
            first = next(
                (
                    self.engine.trial_summary(t)
                    for t in self.engine.trial_ids()
                    if self.engine.trial_status(t) == states.ERROR
                ),
                {},
            )
            error = (str(first.get("error") or "").strip().splitlines() or ["?"])[-1][:300]
            name = self.track(first["trial_id"]).obj_name if first else "?"
            return (
                "Failed",
                "AllTrialsErrored",
                f"all {counts[states.ERROR]} trials ended in ERROR; {name}: {error}",
            )
        message = finished.reason
        if counts[states.ERROR]:
            message += f" ({counts[states.ERROR]} of {sum(counts.values())} trials errored)"
        return "Succeeded", "Succeeded", message

    def best_trial(self) -> dict[str, Any] | None:
        cfg = self.engine.config
        if not cfg.metric or not cfg.mode:
            return None
        try:
            trial_id = self.engine.best_trial()
        except Exception:
            return None
        if trial_id is None:
            return None
        summary = self.engine.trial_summary(trial_id)
        value = (summary.get("last_result") or {}).get(cfg.metric)
        ref = summary.get("best_checkpoint")
        out: dict[str, Any] = {
            "name": self.track(trial_id).obj_name,
            "config": summary["config"],
        }
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out["metric"] = value
        if ref:
            out["checkpoint"] = self.checkpoint_uri(CheckpointRef.from_dict(ref))
        return out
