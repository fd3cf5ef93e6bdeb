"""Pod status as a kubelet writes it: container statuses, conditions and phase.

The rules follow the kubelet's (pkg/kubelet/kubelet_pods.go ``getPhase`` and
pkg/kubelet/status/generate.go) for what the tests and the operator look at:

* Regular containers decide the phase; terminated native sidecars (init containers with
  ``restartPolicy: Always``) never do.
* ``Initialized`` is True once every plain init container exited 0 and every native sidecar
  is *started* (running and its startup probe passed).
* ``ContainersReady``/``Ready`` are True when every regular container and every sidecar is
  ready; once the pod completes they are False with reason ``PodCompleted``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

POD_IP = "127.0.0.1"

INIT = "init"
SIDECAR = "sidecar"
REGULAR = "regular"


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class ContainerRun:
    """What the kubelet knows about one container of a pod (across its restarts)."""

    name: str
    image: str
    kind: str  # INIT, SIDECAR or REGULAR
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    exit_code: int | None = None
    signal: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    started: bool = False
    ready: bool = False
    restart_count: int = 0
    last_state: JSON = field(default_factory=dict)
    container_id: str = ""

    def running(self, container_id: str) -> None:
        self.state, self.reason, self.message = "running", "", ""
        self.exit_code = None
        self.signal = None
        self.started_at = now_rfc3339()
        self.finished_at = None
        self.container_id = container_id
        self.started = False
        self.ready = False

    def terminated(self, exit_code: int, reason: str = "", message: str = "") -> None:
        self.state = "terminated"
        self.exit_code = exit_code
        self.reason = reason or ("Completed" if exit_code == 0 else "Error")
        self.message = message
        self.finished_at = now_rfc3339()
        if self.started_at is None:
            self.started_at = self.finished_at
        self.started = False
        self.ready = False

    def waiting(self, reason: str, message: str = "") -> None:
        """Back to waiting (before a restart): the last run goes to ``lastState``."""
        if self.state == "terminated":
            self.last_state = {"terminated": self._terminated_dict()}
        self.state, self.reason, self.message = "waiting", reason, message
        self.started = False
        self.ready = False

    def _terminated_dict(self) -> JSON:
        term: JSON = {
            "exitCode": self.exit_code if self.exit_code is not None else 0,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.message:
            term["message"] = self.message
        if self.signal:
            term["signal"] = self.signal
        if self.container_id:
            term["containerID"] = self.container_id
        return term

    def to_status(self) -> JSON:
        state: JSON
        if self.state == "running":
            state = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {"terminated": self._terminated_dict()}
        else:
            waiting: JSON = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        status: JSON = {
            "name": self.name,
            "image": self.image or "kubetune-test/none",
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": state,
            "lastState": self.last_state,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


def _condition(
    ctype: str, ok: bool, previous: dict[str, JSON], reason: str = "", message: str = ""
) -> JSON:
    status = "True" if ok else "False"
    prev = previous.get(ctype)
    transition = (
        prev["lastTransitionTime"]
        if prev and prev.get("status") == status and prev.get("lastTransitionTime")
        else now_rfc3339()
    )
    cond: JSON = {
        "type": ctype,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": transition,
    }
    if not ok and reason:
        cond["reason"] = reason
    if not ok and message:
        cond["message"] = message
    return cond


OWN_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")


def compute_phase(pod: JSON, runs: list[ContainerRun], restart_pending: bool) -> str:
    """The pod phase from its containers (the kubelet's getPhase, simplified)."""
    policy = pod.get("spec", {}).get("restartPolicy", "Always")
    inits = [r for r in runs if r.kind == INIT]
    regular = [r for r in runs if r.kind == REGULAR]
    for r in inits:
        if r.state == "terminated" and r.exit_code not in (0, None) and policy == "Never":
            return "Failed"
    if any(r.state == "running" for r in regular):
        return "Running"
    if all(r.state == "terminated" for r in regular) and regular:
        if restart_pending:
            return "Running"
        if all(r.exit_code == 0 for r in regular):
            return "Succeeded" if policy != "Always" else "Running"
        return "Failed" if policy == "Never" else "Running"
    if any(r.state == "terminated" or r.restart_count for r in regular):
        # some exited and are waiting for their restart, others not started
        return "Running"
    return "Pending"


def build_status(
    pod: JSON,
    runs: list[ContainerRun],
    phase: str,
    *,
    sandbox_ready: bool,
    start_time: str,
    host_ip: str = POD_IP,
    message: str = "",
    reason: str = "",
    previous: dict[str, JSON] | None = None,
) -> JSON:
    """The complete ``status`` the kubelet owns, ready to be *strategic*-merge-patched
    (``KubeletApi.status_patch``): its ``conditions`` are the kubelet's own only, and the
    patch merges them by type, so conditions others set (DisruptionTarget from the scheduler
    or the Eviction API, Kueue's TerminationTarget) stay as a real kubelet keeps them, even
    ones set after the kubelet last read the pod.

    ``previous`` are the kubelet's own conditions as last written (for stable transition
    times); by default they are read from the pod."""
    old = pod.get("status") or {}
    if previous is None:
        previous = {
            c.get("type"): c for c in old.get("conditions") or [] if c.get("type") in OWN_CONDITIONS
        }
    inits = [r for r in runs if r.kind in (INIT, SIDECAR)]
    regular = [r for r in runs if r.kind == REGULAR]
    not_initialized = [
        r.name
        for r in inits
        if (r.kind == INIT and not (r.state == "terminated" and r.exit_code == 0))
        or (r.kind == SIDECAR and not r.started and phase not in ("Succeeded", "Failed"))
    ]
    terminal = phase in ("Succeeded", "Failed")
    unready = [r.name for r in regular + [r for r in inits if r.kind == SIDECAR] if not r.ready]
    ready = not unready and not terminal
    ready_reason = "PodCompleted" if terminal else "ContainersNotReady"
    ready_msg = "" if terminal else f"containers with unready status: [{' '.join(unready)}]"
    generation = pod.get("metadata", {}).get("generation")
    conditions = [
        _condition("PodReadyToStartContainers", sandbox_ready and not terminal, previous),
        _condition(
            "Initialized",
            not not_initialized,
            previous,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(not_initialized)}]",
        ),
        _condition("Ready", ready, previous, ready_reason, ready_msg),
        _condition("ContainersReady", ready, previous, ready_reason, ready_msg),
    ]
    if generation is not None:
        for c in conditions:
            c["observedGeneration"] = generation
    status: JSON = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": POD_IP,
        "podIPs": [{"ip": POD_IP}],
        "startTime": start_time,
        "containerStatuses": [r.to_status() for r in regular],
    }
    if inits:
        status["initContainerStatuses"] = [r.to_status() for r in inits]
    if generation is not None:
        status["observedGeneration"] = generation
    if message:
        status["message"] = message
    if reason:
        status["reason"] = reason
    return status


def exit_code_of(returncode: int) -> tuple[int, int | None]:
    """A container runtime's exit code for a Popen return code (signals -> 128 + n)."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None
