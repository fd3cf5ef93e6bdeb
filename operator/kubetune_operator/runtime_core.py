"""The state and plumbing of one experiment's runtime (see ``controller.py``): its tracks of
trials, the ordered write chains, trial and storage identities, the engine snapshot, and the
small status and event writes every part of the loop uses."""

from __future__ import annotations

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
    ExperimentEngine,
    PauseTrial,
    RestartTrial,
    StopTrial,
    Verdict,
)
from kubetune.engine import trial as states
from kubetune.engine.snapshot import HEAD_KEY, SnapshotWriter, load_state
from kubetune.storage import Storage
from kubetune_operator import objects
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


# one pod, or every pod of a multi-worker attempt, rank 0 first (kubetune_operator.workers)
PodBuilder = Callable[[dict[str, Any], dict[str, Any], int], dict[str, Any] | list[dict[str, Any]]]


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
    disruption: tuple[str, str] | None = None  # (pod, why the cluster is ending it)


@dataclass
class Observed:
    trials: dict[str, dict[str, Any]]  # TuneTrial name -> trial_view
    pods: dict[str, dict[str, Any]]  # Pod name -> pod_view
    # Pod name -> why the cluster ended it, for deleted pods whose last state said so
    gone: dict[str, str] = field(default_factory=dict)


def decision_points_dict(action: Any) -> dict[str, Any]:
    dp = getattr(action, "decision_points", None)
    return dp.to_dict() if dp is not None else {}


class RuntimeCore:
    """What every part of the runtime shares; :class:`ExperimentRuntime` is the whole."""

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

    def _delete_pod(self, tr: TrialTrack) -> None:
        """Delete with the pod's own grace period (the podTemplate's
        terminationGracePeriodSeconds, else the operator's default: what its sidecar's GRACE_S
        was given), so the trial gets the time to checkpoint that the user asked for."""
        name = tr.pod_name or ""
        self._defer(tr.obj_name, lambda: self.api.delete_pod(self.namespace, name, None))

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
