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
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubetune.engine import (
    Action,
    CheckpointRef,
    CreateTrial,
    DeleteCheckpoint,
    ExperimentEngine,
    ExperimentFinished,
    PauseTrial,
    RestartTrial,
    ResumeTrial,
    StopTrial,
    Verdict,
)
from kubetune.engine import trial as states
from kubetune.engine.snapshot import HEAD_KEY, SnapshotWriter, load_state
from kubetune.storage import Storage, StorageError
from kubetune_operator import objects
from kubetune_operator.views import LIVE, deletion_overdue, pod_failure_message
from kubetune_operator.writes import WriteQueue

log = logging.getLogger("kubetune_operator")

STATE_KEY = HEAD_KEY
SEGMENT_TRIALS = 32  # finished trials per snapshot segment: the head holds fewer, plus live ones
RESULT_FILE = "result.json"
VERDICT_ACTION = {
    Verdict.CONTINUE: "continue",
    Verdict.STOP: "stop",
    Verdict.PAUSE: "pause",
    Verdict.RESTART: "restart",
}
PHASE_BY_STATE = {
    states.PENDING: "PENDING",
    states.RUNNING: "RUNNING",
    states.PAUSED: "PAUSED",
    states.TERMINATED: "TERMINATED",
    states.ERROR: "ERROR",
}


class Api(Protocol):
    def create_trial(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def patch_trial(self, namespace: str, name: str, patch: dict[str, Any]) -> None: ...
    def patch_trial_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None: ...
    def create_pod(self, body: dict[str, Any]) -> None: ...
    def delete_pod(self, namespace: str, name: str, grace_s: int | None) -> None: ...
    def patch_experiment_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None: ...
    def event(
        self, obj: dict[str, Any], reason: str, message: str, warning: bool = False
    ) -> None: ...


PodBuilder = Callable[[dict[str, Any], dict[str, Any], int], dict[str, Any]]


@dataclass
class TrialTrack:
    """The operator's side of one trial (not in the engine's snapshot)."""

    trial_id: str
    obj_name: str
    spec: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0
    pod_name: str | None = None
    pod_live: bool = False
    pod_seen: bool = False
    stopping: bool = False  # we ended the attempt (stop/pause/restart/suspend)
    last_iter: int | None = None  # newest processed training_iteration of this attempt
    verdicts: dict[int, tuple[str, str]] = field(default_factory=dict)
    answered_seq: int | None = None
    next_attempt: dict[str, Any] | None = None
    phase: str | None = None
    unschedulable: str | None = None
    uid: str = ""
    deleting_seen: tuple[str, float] | None = None  # (pod, when we first saw it terminating)


@dataclass
class Observed:
    trials: dict[str, dict[str, Any]]  # TuneTrial name -> trial_view
    pods: dict[str, dict[str, Any]]  # Pod name -> pod_view


def decision_points_dict(action: Any) -> dict[str, Any]:
    dp = getattr(action, "decision_points", None)
    return dp.to_dict() if dp is not None else {}


class ExperimentRuntime:
    def __init__(
        self,
        experiment: dict[str, Any],
        engine: ExperimentEngine,
        storage: Storage,
        api: Api,
        build_pod: PodBuilder,
        grace_s: int = 60,
        writes: WriteQueue | None = None,
    ) -> None:
        self.experiment = experiment
        self.namespace: str = experiment["metadata"]["namespace"]
        self.name: str = experiment["metadata"]["name"]
        self.engine = engine
        self.storage = storage
        self.api = api
        self.build_pod = build_pod
        self.grace_s = grace_s
        self.tracks: dict[str, TrialTrack] = {}
        # the tracks a step looks at: a live pod or an attempt to start (the others are
        # settled until an engine action wakes them), so a step costs O(running), not O(trials)
        self.busy: dict[str, TrialTrack] = {}
        self.by_object: dict[str, str] = {}
        self.suspended = False
        self.deferred: list[Action] = []
        self.dirty = True
        self.results_processed = 0
        self.decision_latencies: list[float] = []
        self.finished_reported = False
        self.last_status: dict[str, Any] | None = None
        self.pending: list[Action] = []
        self.restored = False
        self.writes = writes if writes is not None else WriteQueue(threads=0)
        self._writes: dict[str, list[tuple[Callable[[], Any], bool, list[Future[Any]]]]] = {}
        self._barrier: Future[Any] | None = None
        self.snapshots = SnapshotWriter(
            SEGMENT_TRIALS, wrap=lambda st: {"engine": st, "experiment": self.name}
        )
        self.timings: list[float] = []

    # -- writes: one ordered chain per object, chains in parallel (see writes.py) -----------
    def _defer(
        self,
        key: str,
        fn: Callable[[], Any],
        urgent: bool = False,
        after: Future[Any] | None = None,
    ) -> None:
        self._writes.setdefault(key, []).append((fn, urgent, [after] if after else []))

    def flush(self) -> None:
        """Hand the writes collected so far to the queue (they run while the loop goes on)."""
        chains, self._writes = self._writes, {}
        for key, chain in chains.items():
            for fn, urgent, after in chain:
                self.writes.submit(key, fn, urgent=urgent, after=after)
        if self.writes.inline:
            errors = self.writes.take_errors()
            if errors:
                raise errors[0]

    def close(self) -> None:
        self.writes.close()

    # -- identity --------------------------------------------------------------------------
    def track(self, trial_id: str) -> TrialTrack:
        tr = self.tracks.get(trial_id)
        if tr is None:
            obj_name = objects.trial_object_name(self.name, trial_id)
            tr = self.tracks[trial_id] = TrialTrack(trial_id, obj_name)
            self.by_object[obj_name] = trial_id
        return tr

    def storage_name(self, tr: TrialTrack) -> str:
        """The trial's folder under PREFIX/EXPERIMENT/ (where its sidecar uploads)."""
        return tr.obj_name

    def checkpoint_uri(self, ref: CheckpointRef | None) -> str | None:
        if ref is None:
            return None
        donor = self.track(ref.trial_id)
        return self.storage.uri(f"{self.storage_name(donor)}/{ref.checkpoint_dir_name}")

    # -- snapshot ---------------------------------------------------------------------------
    def save_snapshot(self) -> Future[Any]:
        """Store the engine's state (new segments of finished trials, then the head) off the
        loop's thread; writes that must follow it take the returned future as ``after``."""
        began = time.monotonic()
        blobs = self.snapshots.render(self.engine)
        took = time.monotonic() - began
        if took > 0.2:
            size = sum(len(b) for _, b in blobs)
            log.info("%s: snapshot of %d bytes took %.2f s to render", self.name, size, took)
        future: Future[Any] | None = None
        for key, data in blobs:
            future = self.writes.submit(
                "~snapshot",
                lambda k=key, d=data: self.storage.put_bytes(k, d),  # type: ignore[misc]
                urgent=True,
            )
        self.dirty = False
        assert future is not None
        return future

    @staticmethod
    def load_snapshot(
        storage: Storage,
    ) -> tuple[dict[str, Any], list[str], dict[str, Any]] | None:
        """What :meth:`save_snapshot` stored: the whole state (segments merged), and the
        segments with the marks of their records for ``self.snapshots.adopt`` (continuing
        them in the same storage); None when there is no snapshot."""
        if not storage.exists(STATE_KEY):
            return None
        head = json.loads(storage.get_bytes(STATE_KEY))
        engine_state, sealed = load_state(head["engine"], storage.get_bytes)
        segments = list(head["engine"].get("segments") or [])
        return {**head, "engine": engine_state}, segments, sealed

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
            pods = [p for p in observed.pods.values() if p.get("trialObject") == tr.obj_name]
            if pods:
                newest = max(pods, key=lambda p: p.get("attempt") or 0)
                tr.attempt = newest.get("attempt") or 0
                tr.pod_name = newest["name"]
                tr.pod_seen = True
                # An attempt of an active trial is watched until its end is handled, even if
                # it ended while the operator was down (its results are then caught up).
                active = self.engine.trial_status(trial_id) in (states.RUNNING, states.PENDING)
                tr.pod_live = active or (newest["phase"] in LIVE and not newest["deleting"])
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
        for tr in list(self.busy.values()):
            view = observed.trials.get(tr.obj_name)
            if view is not None:
                actions.extend(self._consume_report(tr, view, now))
            actions.extend(self._observe_pod(tr, observed, now))
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

    # -- results ----------------------------------------------------------------------------
    def _feed(
        self, tr: TrialTrack, result: dict[str, Any], now: float, gated: bool
    ) -> list[Action]:
        if self.engine.trial_status(tr.trial_id) not in (states.RUNNING, states.PENDING):
            return []
        response = self.engine.on_result(tr.trial_id, result, now)
        self.results_processed += 1
        self.dirty = True
        it = _iteration(result)
        if it is not None:
            tr.last_iter = it
            tr.verdicts = {k: v for k, v in tr.verdicts.items() if k > it - 16}
            tr.verdicts[it] = (VERDICT_ACTION[response.verdict], _reason(response.actions))
        return list(response.actions)

    def _read_results(self, tr: TrialTrack) -> list[dict[str, Any]]:
        try:
            data = self.storage.get_bytes(f"{self.storage_name(tr)}/{RESULT_FILE}")
        except (StorageError, OSError):
            return []
        rows = []
        for line in data.decode("utf-8", "replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line: the next upload completes it
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def _catch_up_from_storage(self, tr: TrialTrack, now: float) -> list[Action]:
        """The lossless path: results that the report window no longer holds."""
        summary = self.engine.trial_summary(tr.trial_id)
        out: list[Action] = []
        for row in self._read_results(tr)[summary["num_results"] :]:
            out.extend(self._feed(tr, row, now, gated=False))
        return out

    def _consume_report(self, tr: TrialTrack, view: dict[str, Any], now: float) -> list[Action]:
        report = view.get("report") or {}
        if not report or report.get("attempt") != tr.attempt or not tr.pod_live:
            return []
        out: list[Action] = []
        results = [r for r in report.get("results") or [] if isinstance(r, dict)]
        count, first = report.get("resultCount"), report.get("firstResult")
        if isinstance(count, int) and isinstance(first, int):
            # The sidecar numbers results across attempts, as result.json holds them.
            seen = self.engine.trial_summary(tr.trial_id)["num_results"]
            if count > seen and first > seen:
                out.extend(self._catch_up_from_storage(tr, now))
                seen = self.engine.trial_summary(tr.trial_id)["num_results"]
            new = results[max(0, seen - first) :] if count > seen else []
        else:
            new = [r for r in results if (_iteration(r) or 0) > (tr.last_iter or 0)]
            gap = new and tr.last_iter is not None and (_iteration(new[0]) or 0) > tr.last_iter + 1
            if gap:
                out.extend(self._catch_up_from_storage(tr, now))
                new = [r for r in results if (_iteration(r) or 0) > (tr.last_iter or 0)]
        for result in new:
            out.extend(self._feed(tr, result, now, gated=False))
        gate = report.get("gate")
        if isinstance(gate, dict) and isinstance(gate.get("seq"), int):
            seq = gate["seq"]
            it = _iteration(gate) or report.get("iteration")  # the gated result is the newest
            if tr.answered_seq is None or seq > tr.answered_seq:
                if it is not None and it not in tr.verdicts and (tr.last_iter or 0) < it:
                    out.extend(self._catch_up_from_storage(tr, now))
                verdict = tr.verdicts.get(it) if it is not None else None
                if verdict is None and self.engine.trial_status(tr.trial_id) not in (
                    states.RUNNING,
                    states.PENDING,
                ):
                    verdict = ("stop", "trial ended")
                if verdict is not None:
                    self._answer(tr, seq, verdict)
                    received = view.get("receivedAt")
                    if isinstance(received, float):
                        self.decision_latencies.append(time.monotonic() - received)
        return out

    def _reported_everything(self, tr: TrialTrack, view: dict[str, Any] | None) -> bool:
        """Whether this attempt's sidecar reported its final state (the runner had exited,
        every line was stored) and the engine has every line: then reading result.json
        back from storage would add nothing."""
        report = (view or {}).get("report") or {}
        count = report.get("resultCount")
        return (
            report.get("attempt") == tr.attempt
            and bool(report.get("exit"))
            and report.get("uploaded") is True
            and isinstance(count, int)
            and count == self.engine.trial_summary(tr.trial_id)["num_results"]
        )

    def _answer(self, tr: TrialTrack, seq: int, verdict: tuple[str, str]) -> None:
        tr.answered_seq = seq
        body = {"seq": seq, "action": verdict[0], "reason": verdict[1]}
        self._defer(
            f"{tr.obj_name}#verdict",
            lambda: self.api.patch_trial(self.namespace, tr.obj_name, {"spec": {"verdict": body}}),
            urgent=True,
        )
        if verdict[0] != "continue":
            tr.stopping = True

    # -- pods -------------------------------------------------------------------------------
    def _observe_pod(self, tr: TrialTrack, observed: Observed, now: float) -> list[Action]:
        if tr.pod_name is None or not tr.pod_live:
            return []
        pod = observed.pods.get(tr.pod_name)
        status = self.engine.trial_status(tr.trial_id)
        active = status in (states.RUNNING, states.PENDING)
        if pod is None:
            if not tr.pod_seen:
                return []
            tr.pod_live = False
            if active and not tr.stopping and not self.suspended:
                self._post(f"pod {tr.pod_name} disappeared", "TrialPodLost", warning=True)
                return self.engine.on_trial_lost(tr.trial_id, now)
            return []
        tr.pod_seen = True
        phase = pod["phase"]
        if phase in LIVE:
            if pod.get("unschedulable") != tr.unschedulable:
                tr.unschedulable = pod.get("unschedulable")
                self._set_trial_status(
                    tr,
                    {
                        "conditions": [
                            objects.condition(
                                "Scheduled",
                                tr.unschedulable is None,
                                "Unschedulable" if tr.unschedulable else "Scheduled",
                                tr.unschedulable or "the pod is bound to a node",
                                None,
                            )
                        ]
                    },
                )
            if pod.get("started") and status == states.PENDING:
                self._set_trial_status(tr, {"phase": "RUNNING"})
                return self.engine.on_trial_started(tr.trial_id, now)
            if pod["deleting"]:
                return self._observe_deleting(tr, pod, active, now)
            return []
        # The attempt has ended: take every result it produced, then tell the engine.
        tr.pod_live = False
        out: list[Action] = []
        if active and not self._reported_everything(tr, observed.trials.get(tr.obj_name)):
            out.extend(self._catch_up_from_storage(tr, now))
            status = self.engine.trial_status(tr.trial_id)
            active = status in (states.RUNNING, states.PENDING)
        if not active or tr.stopping or self.suspended:
            return out
        patch: dict[str, Any] = {}
        if phase == "Succeeded":
            out.extend(self.engine.on_trial_complete(tr.trial_id, now))
            patch["reason"] = "completed"
        else:
            message = pod_failure_message(pod)
            self._post(f"{tr.obj_name}: {message}", "TrialAttemptFailed", warning=True)
            out.extend(self.engine.on_trial_error(tr.trial_id, message, now))
            patch.update(reason="AttemptFailed", message=message)
        status = self.engine.trial_status(tr.trial_id)
        if status in (states.TERMINATED, states.ERROR):
            self._set_trial_status(tr, {"phase": PHASE_BY_STATE[status], **patch})
        return out

    # Seconds past a deleted pod's grace period after which its kubelet is presumed gone.
    LOST_SLACK_S = 15.0

    def _observe_deleting(
        self, tr: TrialTrack, pod: dict[str, Any], active: bool, now: float
    ) -> list[Action]:
        """A live pod being deleted (by us, or by someone else: eviction, drain, taint-based
        eviction from a lost node). Normally its kubelet stops it within the grace period and
        we see it end (a failure of the attempt unless we asked). A kubelet that is gone never
        confirms, and the pod would stay Terminating forever: once it outlives its grace period
        by ``LOST_SLACK_S``, we force-delete it (grace 0) and, unless we ended the attempt
        ourselves, count the attempt as failed and retry from the latest checkpoint in a new
        pod. We judge by the overdue deletion alone, not by reading the Node (namespaced
        installs cannot read Nodes, and a live kubelet always confirms in time); a pod of a
        cut-off node that still runs can then overlap its successor for a while, as with
        Jobs' replacement pods, and its sidecar can no longer report (its token dies with the
        pod object)."""
        if tr.deleting_seen is None or tr.deleting_seen[0] != pod["name"]:
            tr.deleting_seen = (pod["name"], now)
        if not deletion_overdue(pod, tr.deleting_seen[1], now, self.grace_s, self.LOST_SLACK_S):
            return []
        name = pod["name"]
        self._defer(tr.obj_name, lambda: self.api.delete_pod(self.namespace, name, 0))
        tr.pod_live = False
        if not active or tr.stopping or self.suspended:
            return []
        out = self._catch_up_from_storage(tr, now)
        if self.engine.trial_status(tr.trial_id) not in (states.RUNNING, states.PENDING):
            return out
        cause = f" ({pod['disruption']})" if pod.get("disruption") else ""
        message = (
            f"pod {name} lost: deleted{cause} but still terminating "
            f"{now - tr.deleting_seen[1]:.0f} s later, past its grace period; the kubelet of "
            f"node {pod.get('node') or '?'} does not answer; force-deleted"
        )
        self._post(f"{tr.obj_name}: {message}", "TrialPodLost", warning=True)
        out.extend(self.engine.on_trial_error(tr.trial_id, message, now))
        status = self.engine.trial_status(tr.trial_id)
        if status in (states.TERMINATED, states.ERROR):
            patch = {"reason": "AttemptFailed", "message": message}
            self._set_trial_status(tr, {"phase": PHASE_BY_STATE[status], **patch})
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
            if not tr.spec.get("experiment"):
                summary = self.engine.trial_summary(action.trial_id)
                tr.spec.update(
                    objects.trial_spec(
                        self.name,
                        action.trial_id,
                        config,
                        self.engine.config.resources,
                        tr.spec["restoreFrom"],
                        tr.spec["decisionPoints"],
                        tr.spec["checkpointIndexStart"],
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

    def _delete_pod(self, tr: TrialTrack) -> None:
        """Delete with the pod's own grace period (the podTemplate's
        terminationGracePeriodSeconds, else the operator's default: what its sidecar's GRACE_S
        was given), so the trial gets the time to checkpoint that the user asked for."""
        name = tr.pod_name or ""
        self._defer(tr.obj_name, lambda: self.api.delete_pod(self.namespace, name, None))

    def _create_trial(self, tr: TrialTrack, body: dict[str, Any]) -> None:
        tr.uid = self.api.create_trial(body)["metadata"].get("uid", "")

    def _create_pod(
        self, tr: TrialTrack, trial_obj: dict[str, Any], attempt: int, pod: dict[str, Any]
    ) -> None:
        if not pod:
            trial_obj = {**trial_obj, "metadata": {**trial_obj["metadata"], "uid": tr.uid}}
            pod = self.build_pod(self.experiment, trial_obj, attempt)
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
            pod = self.build_pod(self.experiment, trial_obj, tr.attempt)
            tr.pod_name = pod["metadata"]["name"]
            if not tr.uid:
                # its TuneTrial create is still queued (writes.py): build the pod again once
                # that create has returned the uid the pod's owner reference needs
                pod = {}
            self._defer(
                tr.obj_name, functools.partial(self._create_pod, tr, trial_obj, tr.attempt, pod)
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

    def _set_trial_status(self, tr: TrialTrack, patch: dict[str, Any]) -> None:
        if patch.get("phase") is not None and patch.get("phase") == tr.phase and len(patch) == 1:
            return
        tr.phase = patch.get("phase", tr.phase)
        body = {"status": patch}
        self._defer(
            tr.obj_name, lambda: self.api.patch_trial_status(self.namespace, tr.obj_name, body)
        )

    def _post(self, message: str, reason: str, warning: bool = False) -> None:
        experiment = self.experiment
        self._defer("~events", lambda: self.api.event(experiment, reason, message, warning))

    # -- experiment status ------------------------------------------------------------------
    def status(self, generation: int | None) -> dict[str, Any]:
        counts = self.engine.counts()
        finished: ExperimentFinished | None = self.engine.finished
        unschedulable = next((t for t in self.busy.values() if t.unschedulable), None)
        if finished is not None:
            phase = "Succeeded" if finished.status == "SUCCEEDED" else "Failed"
            reason = "Succeeded" if phase == "Succeeded" else "TrialFailed"
            message = finished.reason
        elif self.suspended:
            phase, reason, message = "Suspended", "Suspended", "spec.suspend is true"
        elif unschedulable is not None:
            phase, reason = "Running", "TrialUnschedulable"
            message = f"trial {unschedulable.obj_name} cannot be scheduled: "
            message += str(unschedulable.unschedulable)
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
            "_reason": reason,
        }
        best = self.best_trial()
        if best is not None:
            status["bestTrial"] = best
        return status

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


def _iteration(result: dict[str, Any]) -> int | None:
    value = result.get("training_iteration")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _checkpoint_index(name: str) -> int | None:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _reason(actions: list[Action]) -> str:
    for a in actions:
        if isinstance(a, StopTrial):
            return a.reason
        if isinstance(a, PauseTrial):
            return "paused by the scheduler"
        if isinstance(a, RestartTrial):
            return "exploit"
    return ""
