"""A test kubelet: fake Nodes for the real scheduler, and the pods bound to them run here.

There is no container runtime on the test machines, so this module plays the kubelet against
the real control plane of ``tests.testenv.controlplane``::

    kubelet = TestKubelet(cp.kubelet_kubeconfig, nodes=[NodeSpec("gpu-0", gpus=2)]).start()
    ...                     # create pods: the scheduler binds them, the kubelet runs them
    kubelet.logs("ns", "pod", "main")
    kubelet.crash()         # or: the machine dies (processes killed, the API hears nothing)
    kubelet.stop()          # kills every process, force-deletes its pods, removes its nodes

Nodes
    Each :class:`NodeSpec` becomes a Node with the given capacity (= allocatable), labels and
    taints, a Ready condition, a Lease in ``kube-node-lease`` renewed every
    ``heartbeat_interval`` seconds and a node status posted every ``status_interval``
    seconds, so the scheduler and the node-lifecycle controller treat it as healthy.

Pods (process mode, the default)
    A watch per node (``fieldSelector=spec.nodeName=<node>``) hands each pod to a worker
    (tests/testenv/kubelet_process.py). Init containers run in order; a native sidecar
    (init container with ``restartPolicy: Always``) keeps running, is restarted when it exits,
    and its startupProbe (exec, httpGet or tcpSocket) gates the next containers. Regular
    containers then start as local processes: ``command`` + ``args`` (an image's entrypoint
    does not exist here, so a command is required; ``python``/``python3`` run
    ``sys.executable``, and ``python``/``python3`` on the processes' PATH are shims to it, so
    ``sh -c "python ..."`` works too), ``workingDir``, ``env`` with ``valueFrom`` (fieldRef,
    resourceFieldRef, secretKeyRef, configMapKeyRef) and ``envFrom``. The process environment
    is small: PATH, HOME, LANG, the ``extra_env`` given to the kubelet, the pod's env,
    ``KUBERNETES_SERVICE_HOST``/``PORT`` (the test API server, whose serving certificate is
    signed by the CA that the ``kube-root-ca.crt`` ConfigMap holds, so in-cluster config works)
    and the two variables below. Pod status is written as the kubelet writes it (conditions,
    init/containerStatuses with exit codes and reasons, phase; podIP/hostIP 127.0.0.1)
    through the pods/status subresource. On deletion: SIGTERM to the regular containers, then
    to the sidecars in reverse order, SIGKILL after the grace period, then the Pod object is
    deleted with grace 0 (the kubelet's confirmation).

Volumes and mounts
    Every volume is a directory on this machine, by default
    ``<pod_dir>/volumes/<volume name>`` (emptyDir, secret, configMap, downwardAPI, projected
    with real service-account tokens from the TokenRequest API bound to the pod, with the
    audience and expirationSeconds of the spec, refreshed at 80% of their life); hostPath is
    the path itself. Each container's process runs in a mount namespace of its own in which
    every volume is bound at its ``mountPath`` (``subPath`` and ``readOnly`` applied), so the
    code inside opens the paths it would open in a real pod, e.g. the in-cluster token at
    ``/var/run/secrets/kubernetes.io/serviceaccount/token``
    (tests/testenv/kubelet_mounts.py). The rest of the container's file system is this
    machine's (there are no images): a missing mount point or ``workingDir`` is created in a
    tmpfs of the namespace, never on the host, and a mountPath over a directory the process
    needs (the interpreter's, the repository's) hides it, as it would in a container. The
    working directory defaults to ``/``. Exec probes run inside the container's namespace
    (``nsenter``). Needs root, or unprivileged user namespaces.

    ``automountServiceAccountToken: false`` is honoured by the API server's admission (no
    ``kube-api-access-*`` volume is added), so no token exists unless a projected volume asks.

Logs
    Each container's stdout and stderr go to ``<pod_dir>/logs/<container>.log`` (appended
    across restarts): :meth:`TestKubelet.logs`.

Emulated mode (``mode="emulated"``)
    No process at all, for scale benchmarks: ``behaviour(EmulatedPod)`` is called when a pod
    arrives and returns an exit code, or an :class:`EmulatedExit` (exit code, duration,
    per-container codes); it may write files into the pod's emptyDir directories. The pod
    goes Running at once and terminates after the duration; a timer thread and a small
    thread pool serve thousands of pods.

Not emulated
    livenessProbe and readinessProbe are not run (a container is ready once started),
    lifecycle hooks, Events, ``kubectl logs``/``exec``, resource enforcement, image pulls.
    Pod status also follows ``activeDeadlineSeconds`` (Failed, reason DeadlineExceeded) and
    restartPolicy OnFailure/Always with a short back-off (``restart_backoff``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol

from .kubelet_api import ApiError, KubeRest, confirm_deletion, pod_path
from .kubelet_emulated import Behaviour, EmulatedExit, EmulatedPod, EmulatedPodRunner, Timers
from .kubelet_nodes import LEASE_NS, NodeSpec, lease_body, node_body, node_specs, node_status
from .kubelet_process import ProcessPodRunner
from .kubelet_status import POD_IP, now_micro, now_rfc3339
from .kubelet_volumes import write_shims

__all__ = [
    "Behaviour",
    "EmulatedExit",
    "EmulatedPod",
    "NodeSpec",
    "TestKubelet",
    "node_specs",
]

log = logging.getLogger("kubetune.testenv.kubelet")

JSON = dict[str, Any]


class _Runner(Protocol):
    def start(self) -> None: ...
    def update(self, pod: JSON) -> None: ...
    def deleted(self, pod: JSON) -> None: ...
    def shutdown(self, grace: float = 1.0) -> None: ...
    def join(self, timeout: float) -> None: ...


class TestKubelet:
    """The test kubelet (see the module docstring).

    ``kubeconfig``: whom to talk to (``ControlPlane.kubelet_kubeconfig``), or ``api``.
    ``nodes``: the nodes to register (default: one ``NodeSpec()`` with a random name).
    ``mode``: ``"process"`` or ``"emulated"`` (then ``behaviour`` scripts each pod).
    ``root_dir``: where pod directories go (default: a temp dir removed by ``stop()``).
    ``heartbeat_interval`` / ``lease_duration_seconds`` / ``status_interval``: the Lease
    renewal period, the Lease's duration, the node status period.
    ``restart_backoff``: (first, cap) seconds before restarting a container.
    ``extra_env``: added to every process's environment (before the pod's own env).
    ``image_entrypoints``: image -> entrypoint argv for containers without ``command``.
    ``command_map``: ``argv[0]`` -> local argv prefix (e.g. an image's binary -> a module).
    ``delete_pods_on_stop``: force-delete the pods bound to this kubelet's nodes on stop.
    ``wait_schedulable``: ``start()``/``add_node()`` return once the node is schedulable.
    ``workers``: thread pool size (emulated mode, deletion confirmations).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        kubeconfig: str | Path | None = None,
        *,
        nodes: Sequence[NodeSpec] | None = None,
        mode: Literal["process", "emulated"] = "process",
        behaviour: Behaviour | None = None,
        root_dir: str | Path | None = None,
        api: KubeRest | None = None,
        heartbeat_interval: float = 2.0,
        lease_duration_seconds: int = 40,
        status_interval: float = 10.0,
        restart_backoff: tuple[float, float] = (0.5, 5.0),
        extra_env: Mapping[str, str] | None = None,
        delete_pods_on_stop: bool = True,
        workers: int = 8,
        keep_root: bool = False,
        wait_schedulable: bool = True,
        image_entrypoints: Mapping[str, Sequence[str]] | None = None,
        command_map: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if api is None:
            if kubeconfig is None:
                raise ValueError("give a kubeconfig or an api")
            api = KubeRest.from_kubeconfig(kubeconfig)
        self.api = api
        self.mode = mode
        self.behaviour: Behaviour = behaviour or (lambda pod: 0)
        self._own_root = root_dir is None
        self.root = Path(root_dir or tempfile.mkdtemp(prefix="kubetune-kubelet-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_root = keep_root
        self.heartbeat_interval = heartbeat_interval
        self.lease_duration_seconds = lease_duration_seconds
        self.status_interval = status_interval
        self.restart_backoff = restart_backoff
        self.delete_pods_on_stop = delete_pods_on_stop
        self.wait_schedulable = wait_schedulable
        self.image_entrypoints = dict(image_entrypoints or {})
        self.command_map = dict(command_map or {})
        self.host_ip = POD_IP
        self.python = sys.executable
        self.nodes: dict[str, NodeSpec] = {}
        self._pending_nodes = list(nodes or [NodeSpec()])
        self._node_uids: dict[str, str] = {}
        self._watches: dict[str, Any] = {}
        self._watch_threads: dict[str, threading.Thread] = {}
        self._pods: dict[str, _Runner] = {}
        self._done_uids: set[str] = set()
        self._pod_dirs: dict[tuple[str, str], Path] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._crashed = threading.Event()
        self._started = False
        self._kubelet_version = "v0.0.0"
        self._transition = now_rfc3339()
        bin_dir = self.root / "bin"
        write_shims(bin_dir)
        # where each container's namespace builds its root (a mount point only, never written)
        self.container_root = self.root / "container-root"
        self.container_root.mkdir(exist_ok=True)
        env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"}
        for key in ("HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"):
            if key in os.environ:
                env[key] = os.environ[key]
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra_env or {})
        self.base_env = env
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kubelet")
        self.timers: Timers | None = None
        self._heartbeat_thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> TestKubelet:
        if self._started:
            return self
        self._started = True
        with contextlib.suppress(ApiError):
            self._kubelet_version = str(self.api.get("/version").get("gitVersion", "v0.0.0"))
        if self.mode == "emulated":
            self.timers = Timers()
        for spec in self._pending_nodes:
            self.add_node(spec)
        self._pending_nodes = []
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeat_loop, name="kubelet-heartbeat", daemon=True
        )
        self._heartbeat_thread.start()
        return self

    def stop(self) -> None:
        """Kill every process, force-delete this kubelet's pods, delete its nodes."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for stream in list(self._watches.values()):
            stream.close()
        with self._lock:
            runners = list(self._pods.values())
        for r in runners:
            r.shutdown()
        for r in runners:
            r.join(10)
        for t in self._watch_threads.values():
            t.join(5)
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(5)
        if self.timers is not None:
            self.timers.stop()
        self.executor.shutdown(wait=True, cancel_futures=True)
        for name in list(self.nodes):
            if self.delete_pods_on_stop:
                self._force_delete_pods(name)
            self._delete_node(name)
        self.api.close()
        if self._own_root and not self.keep_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def crash(self) -> None:
        """The machine dies: its processes are killed at once (SIGKILL) and nothing reaches
        the API any more (no Lease renewal, no node or pod status, no deletion confirmed), so
        its Nodes and pods stay as they are until the control plane acts: the node-lifecycle
        controller marks the nodes unreachable after its ``--node-monitor-grace-period``,
        taint-based eviction deletes the pods, and their deletion is never confirmed.
        ``stop()`` still cleans up afterwards (force-deletes the pods, removes the nodes)."""
        self._crashed.set()
        for stream in list(self._watches.values()):
            stream.close()
        with self._lock:
            runners = list(self._pods.values())
        for r in runners:
            r.shutdown(grace=0.0)
        for r in runners:
            r.join(10)

    def __enter__(self) -> TestKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- nodes ----------------------------------------------------------------------------
    @property
    def node_names(self) -> list[str]:
        return list(self.nodes)

    def allocatable(self, node: str) -> dict[str, str]:
        return self.nodes[node].resources()

    def add_node(self, spec: NodeSpec) -> str:
        """Register a node (a random name if none is given) and start watching its pods."""
        if not spec.name:
            spec.name = f"kt-node-{uuid.uuid4().hex[:6]}"
        name = spec.name
        self.nodes[name] = spec
        self._register(spec)
        stream_ready = threading.Event()
        t = threading.Thread(
            target=self._watch_loop, args=(name, stream_ready), name=f"watch-{name}", daemon=True
        )
        self._watch_threads[name] = t
        t.start()
        stream_ready.wait(10)
        if self.wait_schedulable:
            self._wait_untainted(name)
        return name

    def _wait_untainted(self, name: str, timeout: float = 60.0) -> None:
        """Wait until the node-lifecycle controller lifts the ``not-ready`` taint that the
        API server's admission puts on every new node (the scheduler would skip it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            node = self.api.get(f"/api/v1/nodes/{name}")
            taints = (node.get("spec") or {}).get("taints") or []
            if not any(t.get("key") == "node.kubernetes.io/not-ready" for t in taints):
                return
            time.sleep(0.05)
        raise TimeoutError(f"node {name} still tainted not-ready after {timeout}s")

    def remove_node(self, name: str) -> None:
        stream = self._watches.pop(name, None)
        self.nodes.pop(name, None)
        if stream is not None:
            stream.close()
        self._delete_node(name)

    def _node_status(self, spec: NodeSpec) -> JSON:
        return node_status(spec, self.host_ip, self._kubelet_version, self._transition)

    def _register(self, spec: NodeSpec) -> None:
        body = node_body(spec)
        try:
            node = self.api.create("/api/v1/nodes", body)
        except ApiError as e:
            if e.status != 409:
                raise
            node = self.api.merge_patch(f"/api/v1/nodes/{spec.name}", body)
        self._node_uids[spec.name] = node["metadata"]["uid"]
        self._transition = now_rfc3339()
        self.api.merge_patch(
            f"/api/v1/nodes/{spec.name}/status",
            {"status": self._node_status(spec)},
        )
        try:
            self._renew_lease(spec.name)
        except ApiError as e:  # kube-node-lease may not exist yet: the heartbeat retries
            log.warning("node %s lease: %s", spec.name, e)

    def _renew_lease(self, name: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/{name}"
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "renewTime": now_micro(),
        }
        try:
            self.api.merge_patch(path, {"spec": spec})
        except ApiError as e:
            if e.status != 404:
                raise
            self.api.create(
                f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases",
                lease_body(name, self._node_uids.get(name, ""), spec),
            )

    def _heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self._stopping.wait(self.heartbeat_interval):
            if self._crashed.is_set():
                continue
            post_status = time.monotonic() - last_status >= self.status_interval
            for name, spec in list(self.nodes.items()):
                try:
                    self._renew_lease(name)
                    if post_status:
                        self.api.merge_patch(
                            f"/api/v1/nodes/{name}/status",
                            {"status": self._node_status(spec)},
                        )
                except ApiError as e:
                    if e.status == 404 and name in self.nodes and not self._stopping.is_set():
                        with contextlib.suppress(Exception):
                            self._register(spec)
                    else:
                        log.warning("node %s heartbeat: %s", name, e)
                except Exception as e:
                    log.warning("node %s heartbeat: %s", name, e)
            if post_status:
                last_status = time.monotonic()

    def _delete_node(self, name: str) -> None:
        for path in (
            f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/{name}",
            f"/api/v1/nodes/{name}",
        ):
            with contextlib.suppress(Exception):
                self.api.delete(path)

    def _force_delete_pods(self, node: str) -> None:
        try:
            pods = self.api.get("/api/v1/pods", fieldSelector=f"spec.nodeName={node}")
        except Exception:
            return
        for pod in pods.get("items") or []:
            meta = pod["metadata"]
            with contextlib.suppress(Exception):
                self.api.delete(
                    pod_path(meta["namespace"], meta["name"]),
                    {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
                )

    # -- pods -----------------------------------------------------------------------------
    def _watch_loop(self, node: str, ready: threading.Event) -> None:
        rv = ""
        selector = f"spec.nodeName={node}"
        while not self._stopping.is_set() and not self._crashed.is_set() and node in self.nodes:
            try:
                if not rv:
                    listing = self.api.get("/api/v1/pods", fieldSelector=selector)
                    rv = listing["metadata"]["resourceVersion"]
                    items = listing.get("items") or []
                    for pod in items:
                        self._on_event("ADDED", pod, node)
                    self._forget_vanished(node, {p["metadata"]["uid"] for p in items})
                stream = self.api.watch("/api/v1/pods", fieldSelector=selector, resourceVersion=rv)
                self._watches[node] = stream
                ready.set()
                if self._stopping.is_set():
                    stream.close()
                for event in stream:
                    etype = event.get("type")
                    obj = event.get("object") or {}
                    if etype == "ERROR":
                        if obj.get("code") == 410:
                            rv = ""
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if etype in ("ADDED", "MODIFIED", "DELETED"):
                        self._on_event(str(etype), obj, node)
            except ApiError as e:
                if e.status == 410:
                    rv = ""
                elif not self._stopping.is_set():
                    log.warning("watch pods on %s: %s", node, e)
                    self._stopping.wait(0.5)
            except Exception as e:
                if not self._stopping.is_set():
                    log.warning("watch pods on %s: %s", node, e)
                    self._stopping.wait(0.5)
        ready.set()

    def _on_event(self, etype: str, pod: JSON, node: str) -> None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        with self._lock:
            runner = self._pods.get(uid)
            if etype == "DELETED":
                if runner is not None:
                    runner.deleted(pod)
                return
            if runner is not None:
                runner.update(pod)
                return
            if uid in self._done_uids or self._stopping.is_set() or self._crashed.is_set():
                return
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                # terminal before we saw it (e.g. a former kubelet): only confirm deletion
                if meta.get("deletionTimestamp"):
                    self.executor.submit(self._confirm_deletion, pod)
                return
            if self.mode == "emulated":
                new: _Runner = EmulatedPodRunner(self, pod, node)
            else:
                new = ProcessPodRunner(self, pod, node)
            self._pods[uid] = new
        new.start()

    def _forget_vanished(self, node: str, present: set[str]) -> None:
        """After a re-list: pods deleted while the watch was down get their DELETED."""
        with self._lock:
            gone = [
                (uid, r)
                for uid, r in self._pods.items()
                if getattr(r, "node", None) == node and uid not in present
            ]
        for _, runner in gone:
            runner.deleted({})

    def _confirm_deletion(self, pod: JSON) -> None:
        meta = pod["metadata"]
        confirm_deletion(self.api, meta["namespace"], meta["name"], meta["uid"], quiet=True)

    def forget(self, uid: str) -> None:
        """A runner is finished with its pod (deleted or kubelet stopping)."""
        with self._lock:
            self._pods.pop(uid, None)
            self._done_uids.add(uid)

    def make_pod_dir(self, namespace: str, name: str, uid: str) -> Path:
        path = self.root / "pods" / f"{namespace}_{name}_{uid[:8]}"
        (path / "logs").mkdir(parents=True, exist_ok=True)
        (path / "volumes").mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._pod_dirs[(namespace, name)] = path
        return path

    # -- for tests ------------------------------------------------------------------------
    def pod_dir(self, namespace: str, name: str) -> Path:
        """The directory of the newest pod of that name that this kubelet ran."""
        with self._lock:
            return self._pod_dirs[(namespace, name)]

    def logs(self, namespace: str, name: str, container: str) -> str:
        """What the container wrote to stdout and stderr (all its restarts)."""
        path = self.pod_dir(namespace, name) / "logs" / f"{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_phase(
        self, namespace: str, name: str, *phases: str, timeout: float = 30.0
    ) -> JSON:
        """Poll the pod until its phase is one of ``phases`` (default: a terminal one)."""
        want = phases or ("Succeeded", "Failed")
        deadline = time.monotonic() + timeout
        pod: JSON = {}
        while time.monotonic() < deadline:
            pod = self.api.get(pod_path(namespace, name))
            if (pod.get("status") or {}).get("phase") in want:
                return pod
            time.sleep(0.05)
        raise TimeoutError(f"pod {namespace}/{name} not in {want} after {timeout}s: {pod}")

    def running_pods(self) -> int:
        with self._lock:
            return len(self._pods)
