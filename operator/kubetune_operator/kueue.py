"""Kueue (kubernetes-sigs/kueue) for trial pods: pure functions, no API calls.

Kueue's plain-pod integration (``integrations.frameworks: [pod]``) admits pods that carry the
label ``kueue.x-k8s.io/queue-name``: its mutating webhook adds the scheduling gate
``kueue.x-k8s.io/admission`` (and the finalizer ``kueue.x-k8s.io/managed``), its controller
builds a Workload, and once the Workload fits the ClusterQueue's quota it removes the gate.

One trial attempt is one Workload:

- a single-pod attempt is a plain pod with the queue label (its Workload is owned by the pod);
- an attempt of N > 1 pods is one Kueue *pod group*: every pod has the label
  ``kueue.x-k8s.io/pod-group-name`` (the attempt's name, unique per attempt) and the annotation
  ``kueue.x-k8s.io/pod-group-total-count: N``. Kueue builds the group's Workload only once it
  has seen all N pods and ungates them together, so a trial is admitted whole or not at all.
  The pods also carry ``kueue.x-k8s.io/retriable-in-group: "false"``: a failed rank is never
  patched up with a replacement pod in the same group (the operator restarts the whole trial as
  a new attempt, a new group), so Kueue counts the group finished, and releases its quota, as
  soon as none of its pods is running or pending.

Kueue computes a group's pod sets from the pods' *specs* (a role hash of containers'
images, requests and ports, nodeSelector, affinity, tolerations, ...), not from labels or env:
ranks that differ only in env (RANK, MASTER_ADDR) are one role; at most 8 roles per group.

What the operator reads back: a pod that still has the gate is not admitted yet; why, Kueue says
in the Workload's conditions (``QuotaReserved``/``Admitted`` False with a reason and message
such as "couldn't assign flavors to pod set ...: insufficient unused quota for nvidia.com/gpu").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kubetune_operator.objects import condition

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GROUP_NAME_LABEL = "kueue.x-k8s.io/pod-group-name"
GROUP_COUNT_ANNOTATION = "kueue.x-k8s.io/pod-group-total-count"
RETRIABLE_ANNOTATION = "kueue.x-k8s.io/retriable-in-group"
ADMISSION_GATE = "kueue.x-k8s.io/admission"
API_GROUP = "kueue.x-k8s.io"
# v1beta2 is the storage version of current Kueue (>= 0.15); older installs serve v1beta1 only.
API_VERSIONS = ("v1beta2", "v1beta1")

# The trial's TuneTrial condition and the experiment's.
CONDITION = "Admitted"
EXPERIMENT_CONDITION = "TrialsAdmitted"


def queue_name(experiment: dict[str, Any], default: str | None) -> str | None:
    """The LocalQueue of an experiment's trial pods: ``spec.queueName``, else the operator's
    default (the chart's ``trial.queueName``); None: Kueue is not asked."""
    name = (experiment.get("spec") or {}).get("queueName") or default
    return str(name) if name else None


def mark_attempt(pods: list[dict[str, Any]], queue: str | None, group: str) -> None:
    """Label (in place) the pods that make up one trial attempt for Kueue: every pod goes to
    QUEUE; N > 1 pods become the pod group GROUP (a DNS subdomain, unique per attempt). A queue
    label the podTemplate already set is kept when QUEUE is None."""
    if not pods:
        return
    for pod in pods:
        meta = pod.setdefault("metadata", {})
        labels = meta.setdefault("labels", {})
        if queue:
            labels[QUEUE_LABEL] = queue
        if not labels.get(QUEUE_LABEL):
            continue
        if len(pods) > 1:
            labels[GROUP_NAME_LABEL] = group
            annotations = meta.setdefault("annotations", {})
            annotations[GROUP_COUNT_ANNOTATION] = str(len(pods))
            annotations[RETRIABLE_ANNOTATION] = "false"


def gated(pod: dict[str, Any]) -> bool:
    """Whether Kueue still holds the pod (its admission gate is on)."""
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(g.get("name") == ADMISSION_GATE for g in gates if isinstance(g, dict))


def _condition(workload: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (workload.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None


def workload_admission(workload: dict[str, Any] | None) -> tuple[bool, str, str]:
    """(admitted, reason, message) of a Workload, in Kueue's words; None: not created yet
    (a pod group's Workload appears once Kueue has seen all its pods)."""
    if workload is None:
        return False, "WorkloadNotCreated", "Kueue has not created the Workload yet"
    name = (workload.get("metadata") or {}).get("name", "?")
    admitted = _condition(workload, "Admitted")
    if admitted is not None and admitted.get("status") == "True":
        return True, str(admitted.get("reason") or "Admitted"), str(admitted.get("message") or "")
    # Evicted (preempted, deactivated) first: it says why a once-admitted Workload waits again;
    # then the quota reservation (no quota: Pending, no such LocalQueue: Inadmissible, ...);
    # then admission checks, which Admitted=False reports.
    for kind, status in (("Evicted", "True"), ("QuotaReserved", "False"), ("Admitted", "False")):
        cond = _condition(workload, kind)
        if cond is not None and cond.get("status") == status:
            message = str(cond.get("message") or "").strip()
            return False, str(cond.get("reason") or "Pending"), f"Workload {name}: {message}"
    return False, "Pending", f"Workload {name}: waiting for Kueue to reserve quota"


def workloads_by_pod(workloads: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod name -> its Workload: Kueue makes a single pod, and every pod of a group, an owner
    of the Workload."""
    out: dict[str, dict[str, Any]] = {}
    for wl in workloads:
        for ref in (wl.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("kind") == "Pod" and ref.get("apiVersion") == "v1" and ref.get("name"):
                out[str(ref["name"])] = wl
    return out


def waiting_message(pod_names: list[str], workload: dict[str, Any] | None) -> tuple[str, str]:
    """(reason, message) for a trial whose pods POD_NAMES are gated."""
    _, reason, message = workload_admission(workload)
    return reason, message or f"pods {', '.join(pod_names)} wait for Kueue admission"


def admission_condition(
    gated_now: bool, reason: str | None, message: str | None, generation: int | None = None
) -> dict[str, Any]:
    """The TuneTrial's ``Admitted`` condition."""
    if gated_now:
        return condition(
            CONDITION,
            False,
            reason or "Pending",
            message or "waiting for Kueue admission (scheduling gate kueue.x-k8s.io/admission)",
            generation,
        )
    return condition(CONDITION, True, "Admitted", "admitted by Kueue", generation)


def experiment_condition(
    waiting: Sequence[Sequence[str]], generation: int | None
) -> dict[str, Any]:
    """The experiment's ``TrialsAdmitted`` condition; WAITING: (trial, reason, message) of the
    trials Kueue has not admitted yet."""
    if not waiting:
        return condition(
            EXPERIMENT_CONDITION, True, "AllAdmitted", "no trial waits for admission", generation
        )
    trial, reason, message = waiting[0][0], waiting[0][1], waiting[0][2]
    more = f" (and {len(waiting) - 1} more)" if len(waiting) > 1 else ""
    return condition(
        EXPERIMENT_CONDITION,
        False,
        reason,
        f"{len(waiting)} trial(s) wait for Kueue admission; {trial}{more}: {message}",
        generation,
    )
