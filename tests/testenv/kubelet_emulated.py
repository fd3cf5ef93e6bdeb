"""Emulated mode: pods "run" a scripted behaviour instead of processes (scale benchmarks).

No thread per pod: the kubelet's thread pool writes statuses and its timer thread ends each
pod after the duration the behaviour asked for. Init containers complete at once, native
sidecars are started and ready while the pod runs and are stopped (exit 0) at its end.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .kubelet_api import ApiError, confirm_deletion, patch_pod_status
from .kubelet_status import (
    INIT,
    REGULAR,
    SIDECAR,
    ContainerRun,
    build_status,
    compute_phase,
    now_rfc3339,
)
from .kubelet_volumes import PodVolumes

if TYPE_CHECKING:
    from .kubelet import TestKubelet

log = logging.getLogger("kubetune.testenv.kubelet")

JSON = dict[str, Any]


@dataclass
class EmulatedExit:
    """How an emulated pod ends: after ``duration`` seconds its regular containers exit with
    ``exit_code`` (or ``exit_codes[name]``)."""

    exit_code: int = 0
    duration: float = 0.0
    exit_codes: dict[str, int] | None = None


@dataclass
class PathMap:
    """mountPath -> host path for one container (an emulated pod has no process to mount in)."""

    mounts: dict[str, str] = field(default_factory=dict)

    def map(self, path: str) -> str:
        for mount in sorted(self.mounts, key=len, reverse=True):
            if path == mount:
                return self.mounts[mount]
            prefix = mount.rstrip("/") + "/"
            if path.startswith(prefix):
                return os.path.join(self.mounts[mount], path[len(prefix) :])
        return path


@dataclass
class EmulatedPod:
    """What a behaviour gets: the pod and where its volumes live on this machine."""

    pod: JSON
    pod_dir: Path
    volumes: dict[str, Path]

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    def path(self, path: str, container: str | None = None) -> Path:
        """Where ``path`` (as seen by ``container``, default the first) is on this machine."""
        containers = self.pod["spec"]["containers"] + (self.pod["spec"].get("initContainers") or [])
        c = next((c for c in containers if container in (None, c["name"])), None)
        pm = PathMap()
        for m in (c or {}).get("volumeMounts") or []:
            if m["name"] in self.volumes:
                pm.mounts[m["mountPath"]] = str(self.volumes[m["name"]] / m.get("subPath", ""))
        return Path(pm.map(path))


Behaviour = Callable[[EmulatedPod], int | EmulatedExit | None]


class EmulatedPodRunner:
    def __init__(self, kubelet: TestKubelet, pod: JSON, node: str) -> None:
        self.kl = kubelet
        self.pod = pod
        self.node = node
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.lock = threading.Lock()
        self.state = "new"  # new | running | done | gone
        self.timer: int | None = None
        self.start_time = now_rfc3339()
        self.runs: list[ContainerRun] = []
        for c in pod["spec"].get("initContainers") or []:
            kind = SIDECAR if c.get("restartPolicy") == "Always" else INIT
            self.runs.append(ContainerRun(c["name"], c.get("image", ""), kind))
        for c in pod["spec"].get("containers") or []:
            self.runs.append(ContainerRun(c["name"], c.get("image", ""), REGULAR))
        self.conditions: dict[str, JSON] = {}
        self.finished = threading.Event()

    def start(self) -> None:
        self.kl.executor.submit(self._begin)

    def update(self, pod: JSON) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            self.kl.executor.submit(self._delete, True)

    def deleted(self, pod: JSON) -> None:
        self.kl.executor.submit(self._delete, False)

    def shutdown(self, grace: float = 1.0) -> None:
        with self.lock:
            if self.timer is not None and self.kl.timers is not None:
                self.kl.timers.cancel(self.timer)
            self.state = "gone"
        self.finished.set()

    def join(self, timeout: float) -> None:
        return None

    # -- lifecycle ------------------------------------------------------------------------
    def _begin(self) -> None:
        try:
            pod_dir = self.kl.make_pod_dir(self.namespace, self.name, self.uid)
            volumes = PodVolumes(None, self.pod, pod_dir, self.kl.root, {})
            volumes.setup(None, with_content=False)
            outcome = self.kl.behaviour(EmulatedPod(self.pod, pod_dir, volumes.dirs))
        except Exception:
            log.exception("pod %s/%s: behaviour failed", self.namespace, self.name)
            outcome = EmulatedExit(exit_code=1)
        if not isinstance(outcome, EmulatedExit):
            outcome = EmulatedExit(exit_code=int(outcome or 0))
        with self.lock:
            if self.state != "new":
                return
            self.state = "running"
            for r in self.runs:
                r.running(f"kubetune-emulated://{self.uid[:8]}-{r.name}")
                if r.kind == INIT:
                    r.terminated(0)
                else:
                    r.started = r.ready = True
            self._patch()
            assert self.kl.timers is not None
            self.timer = self.kl.timers.call_at(
                time.monotonic() + outcome.duration,
                lambda: self._submit_finish(outcome),
            )

    def _submit_finish(self, outcome: EmulatedExit) -> None:
        self.kl.executor.submit(self._finish, outcome)

    def _finish(self, outcome: EmulatedExit) -> None:
        with self.lock:
            if self.state != "running":
                return
            self.state = "done"
            codes = outcome.exit_codes or {}
            for r in self.runs:
                if r.kind == REGULAR:
                    r.terminated(codes.get(r.name, outcome.exit_code))
            for r in self.runs:
                if r.kind == SIDECAR:
                    r.terminated(0)
            self._patch()

    def _delete(self, confirm: bool) -> None:
        with self.lock:
            if self.state == "gone":
                return
            if self.timer is not None and self.kl.timers is not None:
                self.kl.timers.cancel(self.timer)
            was_running = self.state == "running"
            self.state = "gone"
            if was_running and confirm:
                for r in self.runs:
                    if r.state == "running":
                        r.terminated(143)
                self._patch(terminal=True)
        if confirm:
            confirm_deletion(self.kl.api, self.namespace, self.name, self.uid)
        self.kl.forget(self.uid)
        self.finished.set()

    def _patch(self, terminal: bool = False) -> None:
        phase = compute_phase(self.pod, self.runs, False)
        if terminal and phase not in ("Succeeded", "Failed"):
            phase = "Failed"
        status = build_status(
            self.pod,
            self.runs,
            phase,
            sandbox_ready=True,
            start_time=self.start_time,
            host_ip=self.kl.host_ip,
            previous=self.conditions,
        )
        try:
            patch_pod_status(self.kl.api, self.namespace, self.name, self.uid, status)
        except ApiError as e:
            if e.status not in (404, 409):
                log.warning("pod %s/%s: status patch: %s", self.namespace, self.name, e)
            return
        self.conditions = {c["type"]: c for c in status["conditions"]}


class Timers:
    """One thread that calls functions at given monotonic times (emulated mode)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="kubelet-timers", daemon=True)
        self._thread.start()

    def call_at(self, when: float, fn: Callable[[], None]) -> int:
        with self._cond:
            tid = next(self._ids)
            heapq.heappush(self._heap, (when, tid, fn))
            self._cond.notify()
            return tid

    def cancel(self, tid: int) -> None:
        with self._cond:
            self._cancelled.add(tid)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, tid, fn = heapq.heappop(self._heap)
                if tid in self._cancelled:
                    self._cancelled.discard(tid)
                    continue
            try:
                fn()
            except Exception:
                log.exception("timer callback failed")
