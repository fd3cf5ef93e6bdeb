"""Process mode: one pod's containers run as local processes, driven by one thread.

Each pod has a worker thread that owns all of the pod's state; other threads (process
waiters, probe workers, the kubelet's watch) only put events on its queue. That keeps the
lifecycle a plain sequential program: set up volumes, run init containers in order (a native
sidecar keeps running and its startup probe gates the next one), run the regular containers,
stop the sidecars in reverse order, write the final status; on deletion terminate gracefully
and confirm the deletion. Every process runs in its own session (process group), so the
whole group is signalled and nothing it spawned outlives the container, and in its own mount
namespace, its volumes bound at their mountPaths (kubelet_mounts).
"""

from __future__ import annotations

import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .kubelet_api import ApiError, confirm_deletion, patch_pod_status
from .kubelet_containers import probe_loop, probe_once, signal_group, start_process, wait_process
from .kubelet_status import (
    INIT,
    REGULAR,
    SIDECAR,
    ContainerRun,
    build_status,
    compute_phase,
    exit_code_of,
    now_rfc3339,
)
from .kubelet_volumes import (
    ConfigError,
    ObjectCache,
    PodVolumes,
    ProcessSpec,
    container_process,
)

if TYPE_CHECKING:
    from .kubelet import TestKubelet

log = logging.getLogger("kubetune.testenv.kubelet")

JSON = dict[str, Any]


class _Deleting(Exception):
    def __init__(self, grace: float, gone: bool) -> None:
        self.grace = grace
        self.gone = gone


class _Shutdown(Exception):
    def __init__(self, grace: float = 1.0) -> None:
        self.grace = grace


class _DeadlineExceeded(Exception):
    pass


def deletion_grace(pod: JSON) -> float:
    meta = pod.get("metadata", {})
    if meta.get("deletionGracePeriodSeconds") is not None:
        return float(meta["deletionGracePeriodSeconds"])
    return float(pod.get("spec", {}).get("terminationGracePeriodSeconds", 30))


class ProcessPodRunner:
    """Runs one pod's containers as processes (see the module docstring)."""

    def __init__(self, kubelet: TestKubelet, pod: JSON, node: str) -> None:
        self.kl = kubelet
        self.pod = pod
        self.node = node
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.pod_dir: Path = kubelet.make_pod_dir(self.namespace, self.name, self.uid)
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        spec = pod["spec"]
        self.containers: dict[str, JSON] = {}
        self.runs: dict[str, ContainerRun] = {}
        for c in spec.get("initContainers") or []:
            kind = SIDECAR if c.get("restartPolicy") == "Always" else INIT
            self._add(c, kind)
        for c in spec.get("containers") or []:
            self._add(c, REGULAR)
            if spec.get("initContainers"):
                self.runs[c["name"]].reason = "PodInitializing"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.gen: dict[str, int] = dict.fromkeys(self.runs, 0)
        self.probe_failures: dict[str, int] = dict.fromkeys(self.runs, 0)
        self.restart_due: dict[str, float] = {}
        self.backoff: dict[str, float] = {}
        self.specs: dict[str, ProcessSpec] = {}
        self.volumes: PodVolumes | None = None
        self.start_time = now_rfc3339()
        self.sandbox_ready = False
        self.terminating = False  # no restarts any more
        self.final = False  # terminal status written
        self.status_message = ""
        self.status_reason = ""
        self._last_status: JSON | None = None
        self._conditions: dict[str, JSON] = {}
        self._stop_probes = threading.Event()
        deadline = spec.get("activeDeadlineSeconds")
        self.active_deadline = time.monotonic() + float(deadline) if deadline else None
        self.thread = threading.Thread(
            target=self._run, name=f"pod-{self.namespace}/{self.name}", daemon=True
        )

    def _add(self, container: JSON, kind: str) -> None:
        self.containers[container["name"]] = container
        self.runs[container["name"]] = ContainerRun(
            name=container["name"], image=container.get("image", ""), kind=kind
        )

    # -- interface used by the kubelet ---------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def update(self, pod: JSON) -> None:
        self.events.put(("update", pod))

    def deleted(self, pod: JSON) -> None:
        self.events.put(("deleted", pod))

    def shutdown(self, grace: float = 1.0) -> None:
        self.events.put(("shutdown", grace))

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    # -- the pod's program ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            try:
                try:
                    self._lifecycle()
                except _DeadlineExceeded:
                    self._deadline_exceeded()
                while True:  # terminal: wait for the deletion to confirm it
                    self._pump(None)
            except _Deleting as d:
                self._terminate(d.grace, gone=d.gone)
        except _Shutdown as s:
            self._kill_all(grace=s.grace)
        except Exception:
            log.exception("pod %s/%s: test kubelet error", self.namespace, self.name)
            self._kill_all(grace=1.0)
        finally:
            self._stop_probes.set()
            self._kill_all(grace=0.0)
            self.kl.forget(self.uid)

    def _lifecycle(self) -> None:
        self._setup()
        for name, run in self.runs.items():
            if run.kind == INIT:
                if not self._run_init(name):
                    self._finish()
                    return
            elif run.kind == SIDECAR:
                self._start(name)
                while not self.runs[name].started:
                    self._pump(self._next_timeout())
        for name, run in self.runs.items():
            if run.kind == REGULAR:
                self._start(name)
        self._sync_status()
        while not self._regular_done():
            self._pump(self._next_timeout())
        self._finish()

    def _setup(self) -> None:
        """Volumes and container configs; retried while something is missing."""
        while True:
            cache = ObjectCache(self.kl.api, self.namespace)
            try:
                volumes = PodVolumes(
                    self.kl.api,
                    self.pod,
                    self.pod_dir,
                    self.kl.root,
                    self.kl.allocatable(self.node),
                )
                volumes.setup(cache)
                specs = {
                    name: container_process(
                        self.pod,
                        self.containers[name],
                        volumes,
                        cache,
                        base_env=self.kl.base_env,
                        api_host=self.kl.api.host,
                        api_port=self.kl.api.port,
                        allocatable=self.kl.allocatable(self.node),
                        image_entrypoints=self.kl.image_entrypoints,
                        command_map=self.kl.command_map,
                    )
                    for name in self.runs
                }
            except (ConfigError, ApiError) as e:
                for run in self.runs.values():
                    run.waiting("CreateContainerConfigError", str(e))
                self.status_message = ""
                self._sync_status()
                self._pump(1.0)
                continue
            self.volumes = volumes
            self.specs = specs
            self.sandbox_ready = True
            has_init = any(r.kind != REGULAR for r in self.runs.values())
            for run in self.runs.values():
                if run.state == "waiting":
                    pending_init = run.kind == REGULAR and has_init
                    run.waiting("PodInitializing" if pending_init else "ContainerCreating")
            return

    def _run_init(self, name: str) -> bool:
        """Run a plain init container to completion; False when the pod has failed."""
        policy = self.pod["spec"].get("restartPolicy", "Always")
        self._start(name)
        while True:
            self._pump(self._next_timeout())
            run = self.runs[name]
            if run.state != "terminated" or name in self.restart_due:
                continue
            if run.exit_code == 0:
                return True
            if policy == "Never":
                return False
            self._schedule_restart(name)

    def _deadline_exceeded(self) -> None:
        """activeDeadlineSeconds passed: the kubelet kills the pod and fails it."""
        self.active_deadline = None
        self.status_reason = "DeadlineExceeded"
        self.status_message = "Pod was active on the node longer than the specified deadline"
        self.terminating = True
        grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        self._stop_containers(time.monotonic() + grace)
        self._final_status_killed()

    def _regular_done(self) -> bool:
        return all(
            r.state == "terminated" and r.name not in self.restart_due
            for r in self.runs.values()
            if r.kind == REGULAR
        )

    def _finish(self) -> None:
        """Regular containers are done: stop the sidecars, write the terminal status."""
        self.terminating = True
        self.restart_due.clear()
        grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        self._stop_containers(time.monotonic() + grace)
        self.final = True
        self._sync_status()

    # -- containers -----------------------------------------------------------------------
    def _start(self, name: str) -> None:
        run = self.runs[name]
        spec = self.specs[name]
        if run.container_id:
            run.restart_count += 1
            run.waiting("ContainerCreating")
        self.gen[name] += 1
        gen = self.gen[name]
        self.probe_failures[name] = 0
        log_path = self.pod_dir / "logs" / f"{name}.log"
        try:
            proc, status_r = start_process(str(self.kl.container_root), spec, log_path)
        except OSError as e:
            run.running(f"kubetune-test://{self.uid[:8]}-{name}-failed-{gen}")
            self.events.put(("exit", name, gen, 128, 0, "StartError", f"{sys.executable}: {e}"))
            return
        # Running from here, as the kubelet says once the runtime started the container; the
        # waiter hears from the mount wrapper whether the command itself could be started.
        self.procs[name] = proc
        run.running(f"kubetune-test://{self.uid[:8]}-{name}-{proc.pid}")
        execd = threading.Event()
        probe = self.containers[name].get("startupProbe")
        if probe and run.kind in (SIDECAR, REGULAR):
            threading.Thread(
                target=self._probe_worker, args=(name, gen, probe, execd), daemon=True
            ).start()
        else:
            run.started = True
            run.ready = True
        threading.Thread(
            target=self._wait_proc, args=(name, gen, proc, status_r, execd), daemon=True
        ).start()

    def _wait_proc(
        self,
        name: str,
        gen: int,
        proc: subprocess.Popen[bytes],
        status_fd: int,
        execd: threading.Event,
    ) -> None:
        rc, error = wait_process(proc, status_fd, execd)
        if error:
            self.events.put(("exit", name, gen, 128, proc.pid, "StartError", error))
        else:
            self.events.put(("exit", name, gen, rc, proc.pid, "", ""))

    def _signal(self, name: str, sig: int) -> None:
        proc = self.procs.get(name)
        if proc is not None:
            signal_group(proc.pid, sig)

    def _on_exit(
        self, name: str, gen: int, rc: int, pid: int, reason: str = "", message: str = ""
    ) -> None:
        if pid > 0:  # what the container left behind dies with it, as in a cgroup
            signal_group(pid, signal.SIGKILL)
        if gen != self.gen[name]:
            return
        self.procs.pop(name, None)
        run = self.runs[name]
        code, sig = exit_code_of(rc)
        run.terminated(code, reason, message)
        run.signal = sig
        if self.terminating:
            return
        policy = self.pod["spec"].get("restartPolicy", "Always")
        if run.kind == SIDECAR or (
            run.kind == REGULAR and (policy == "Always" or (policy == "OnFailure" and code))
        ):
            self._schedule_restart(name)

    def _schedule_restart(self, name: str) -> None:
        initial, cap = self.kl.restart_backoff
        delay = self.backoff.get(name, 0.0)
        delay = initial if delay == 0.0 else min(delay * 2, cap)
        self.backoff[name] = delay
        self.restart_due[name] = time.monotonic() + delay
        self.runs[name].waiting(
            "CrashLoopBackOff", f"back-off {delay:g}s restarting failed container={name}"
        )

    def _due_restarts(self) -> None:
        now = time.monotonic()
        for name, due in list(self.restart_due.items()):
            if due <= now:
                del self.restart_due[name]
                self._start(name)

    def _refresh_tokens(self) -> None:
        if self.volumes is None:
            return
        for token in self.volumes.tokens:
            if token.refresh_at <= time.monotonic():
                try:
                    self.volumes.refresh_token(token)
                except Exception as e:  # keep the old token; retry soon
                    log.warning("pod %s/%s: token refresh: %s", self.namespace, self.name, e)
                    token.refresh_at = time.monotonic() + 5

    def _next_timeout(self) -> float:
        times = list(self.restart_due.values())
        if self.active_deadline is not None:
            times.append(self.active_deadline)
        if self.volumes is not None:
            times += [t.refresh_at for t in self.volumes.tokens]
        if not times:
            return 5.0
        return max(0.0, min(min(times) - time.monotonic(), 5.0))

    # -- probes ---------------------------------------------------------------------------
    def _probe_worker(self, name: str, gen: int, probe: JSON, execd: threading.Event) -> None:
        def check() -> bool:
            proc = self.procs.get(name)
            pid = proc.pid if proc is not None else None
            return probe_once(
                probe, self.containers[name], pid, self.specs[name].env, self.kl.python
            )

        probe_loop(
            probe,
            execd,
            self._stop_probes,
            lambda: self.gen[name] == gen,
            check,
            lambda ok, threshold: self.events.put(("probe", name, gen, ok, threshold)),
        )

    def _on_probe(self, name: str, gen: int, ok: bool, threshold: int) -> None:
        run = self.runs[name]
        if gen != self.gen[name] or run.state != "running":
            return
        if ok:
            run.started = True
            run.ready = True
            return
        self.probe_failures[name] += 1
        if self.probe_failures[name] >= threshold:
            # the kubelet kills a container whose startup probe keeps failing
            self._signal(name, signal.SIGKILL)

    # -- events ---------------------------------------------------------------------------
    def _pump(self, timeout: float | None) -> None:
        """Handle the next events (waiting up to ``timeout``), then sync the status."""
        try:
            ev: tuple[Any, ...] | None = self.events.get(timeout=timeout)
        except queue.Empty:
            ev = None
        while ev is not None:
            self._handle(ev)
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                ev = None
        if not self.terminating:
            self._due_restarts()
        self._refresh_tokens()
        self._sync_status()
        deadline = self.active_deadline
        if deadline is not None and time.monotonic() >= deadline and not self.final:
            raise _DeadlineExceeded()

    def _handle(self, ev: tuple[Any, ...]) -> None:
        kind = ev[0]
        if kind == "exit":
            self._on_exit(*ev[1:])
        elif kind == "probe":
            self._on_probe(ev[1], ev[2], ev[3], ev[4])
        elif kind == "update":
            self.pod = ev[1]
            if self.pod["metadata"].get("deletionTimestamp"):
                raise _Deleting(deletion_grace(self.pod), gone=False)
        elif kind == "deleted":
            raise _Deleting(0.0, gone=True)
        elif kind == "shutdown":
            raise _Shutdown(*ev[1:])

    # -- termination ----------------------------------------------------------------------
    def _stop_containers(self, deadline: float) -> None:
        """SIGTERM the regular containers (and a running plain init container), wait, then
        the sidecars one by one in reverse order; SIGKILL whatever outlives the deadline."""
        self.terminating = True
        self.restart_due.clear()
        first = [n for n in self.procs if self.runs[n].kind != SIDECAR]
        for name in first:
            self._signal(name, signal.SIGTERM)
        self._await_exit(first, deadline)
        sidecars = [n for n, r in self.runs.items() if r.kind == SIDECAR]
        for name in reversed(sidecars):
            if name in self.procs:
                self._signal(name, signal.SIGTERM)
                self._await_exit([name], deadline)

    def _await_exit(self, names: list[str], deadline: float) -> None:
        deferred: list[tuple[Any, ...]] = []
        try:
            self._await_exit_events(names, deadline, deferred)
        finally:
            for ev in deferred:  # a deletion seen meanwhile is handled afterwards
                self.events.put(ev)

    def _await_exit_events(
        self, names: list[str], deadline: float, deferred: list[tuple[Any, ...]]
    ) -> None:
        killed = False
        while any(n in self.procs for n in names):
            left = deadline - time.monotonic()
            if left <= 0 and not killed:
                for n in names:
                    self._signal(n, signal.SIGKILL)
                killed = True
                left = 5.0
            try:
                ev = self.events.get(timeout=max(left, 0.01))
            except queue.Empty:
                if killed:
                    return
                continue
            if ev[0] == "exit":
                self._on_exit(*ev[1:])
            elif ev[0] == "update":
                self.pod = ev[1]
                if self.pod["metadata"].get("deletionTimestamp"):
                    deadline = min(deadline, time.monotonic() + deletion_grace(self.pod))
                    deferred.append(ev)
            elif ev[0] == "deleted":
                deadline = time.monotonic()
                deferred.append(ev)
            elif ev[0] == "shutdown":
                raise _Shutdown(*ev[1:])

    def _terminate(self, grace: float, gone: bool) -> None:
        """Graceful deletion: stop everything within the grace period, confirm deletion."""
        self._stop_probes.set()
        self._stop_containers(time.monotonic() + grace)
        if gone:
            return
        self._final_status_killed()
        confirm_deletion(self.kl.api, self.namespace, self.name, self.uid)

    def _kill_all(self, grace: float) -> None:
        self._stop_probes.set()
        for name in list(self.procs):
            self._signal(name, signal.SIGTERM if grace else signal.SIGKILL)
        deadline = time.monotonic() + grace
        for name, proc in list(self.procs.items()):
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._signal(name, signal.SIGKILL)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self.procs.pop(name, None)

    # -- status ---------------------------------------------------------------------------
    def _final_status_killed(self) -> None:
        """The terminal status after a kill: a container still running counts as SIGKILLed."""
        for run in self.runs.values():
            if run.state != "terminated" and run.container_id:
                run.terminated(137)
        self.final = True
        self._sync_status(force_terminal=True)

    def _sync_status(self, force_terminal: bool = False) -> None:
        runs = list(self.runs.values())
        phase = compute_phase(self.pod, runs, bool(self.restart_due))
        if (force_terminal or self.final) and (
            phase not in ("Succeeded", "Failed") or self.status_reason
        ):
            phase = "Failed"
        elif not (force_terminal or self.final) and phase in ("Succeeded", "Failed"):
            # as the kubelet: terminal only once every container (sidecars too) has stopped
            phase = "Running"
        status = build_status(
            self.pod,
            runs,
            phase,
            sandbox_ready=self.sandbox_ready,
            start_time=self.start_time,
            host_ip=self.kl.host_ip,
            message=self.status_message,
            reason=self.status_reason,
            previous=self._conditions,
        )
        if status == self._last_status:
            return
        try:
            patch_pod_status(self.kl.api, self.namespace, self.name, self.uid, status)
        except ApiError as e:
            if e.status in (404, 409) and not self.terminating:
                raise _Deleting(0.0, gone=True) from e
            if e.status not in (404, 409):
                log.warning("pod %s/%s: status patch: %s", self.namespace, self.name, e)
            return
        self._last_status = status
        self._conditions = {c["type"]: c for c in status["conditions"]}
