"""Small views of observed objects: what the controller needs of a Pod or a TuneTrial.

The watch handlers keep only these (not whole objects), so memory stays flat.
"""

from __future__ import annotations

from typing import Any

from kubetune_operator import kueue
from kubetune_operator.objects import LABEL_ATTEMPT, LABEL_EXPERIMENT, LABEL_TRIAL

# condition types that mark a pod for termination by the cluster (disruption.py says more)
DISRUPTION_CONDITIONS = ("DisruptionTarget", "TerminationTarget")

LIVE = ("Pending", "Running", "Unknown")


def pod_view(pod: dict[str, Any]) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    view: dict[str, Any] = {
        "name": meta.get("name"),
        "experiment": labels.get(LABEL_EXPERIMENT),
        "trial": labels.get(LABEL_TRIAL),
        "trialObject": next(
            (
                o.get("name")
                for o in meta.get("ownerReferences") or []
                if o.get("kind") == "TuneTrial"
            ),
            None,
        ),
        "attempt": _int(labels.get(LABEL_ATTEMPT)),
        "phase": status.get("phase") or "Pending",
        "deleting": bool(meta.get("deletionTimestamp")),
        "deletionGraceS": _int(meta.get("deletionGracePeriodSeconds")),
        "node": (pod.get("spec") or {}).get("nodeName"),
        "disruption": None,
        "reason": status.get("reason"),
        "message": status.get("message"),
        "unschedulable": None,
        "exitCode": None,
        "containerReason": None,
        "started": False,
        # Kueue: the pod is in a LocalQueue, and (gated) not admitted yet
        "queued": bool(labels.get(kueue.QUEUE_LABEL)),
        "gated": kueue.gated(pod),
    }
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") != "SchedulingGated"  # waiting for admission, not a node
        ):
            view["unschedulable"] = cond.get("message") or cond.get("reason") or "unschedulable"
        if cond.get("type") in DISRUPTION_CONDITIONS and cond.get("status") == "True":
            # who ends the pod: EvictionByEvictionAPI, DeletionByTaintManager (its node lost),
            # PreemptionByScheduler, TerminationByKubelet (node pressure), StoppedByKueue
            # (TerminationTarget), ... (see disruption.py)
            view["disruption"] = cond.get("reason") or "DisruptionTarget"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "running" in state or "terminated" in state:
            view["started"] = True
        term = state.get("terminated")
        if term is not None:
            view["exitCode"] = term.get("exitCode")
            view["containerReason"] = term.get("reason")
            if term.get("message"):
                view["message"] = term.get("message")
        waiting = state.get("waiting")
        if waiting and waiting.get("reason") in (
            "ErrImagePull",
            "ImagePullBackOff",
            "InvalidImageName",
            "CreateContainerConfigError",
        ):
            view["waitingError"] = f"{waiting.get('reason')}: {waiting.get('message', '')}"
    # the workers of a multi-worker trial (kubetune_operator.workers)
    view["rank"] = _int(labels.get("kubetune.io/rank"))
    view["worldSize"] = _int(labels.get("kubetune.io/world-size"))
    view["podIP"] = status.get("podIP")
    return view


def trial_view(trial: dict[str, Any]) -> dict[str, Any]:
    meta = trial.get("metadata") or {}
    spec = trial.get("spec") or {}
    status = trial.get("status") or {}
    return {
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "experiment": spec.get("experiment") or (meta.get("labels") or {}).get(LABEL_EXPERIMENT),
        "trialId": spec.get("trialId"),
        "deleting": bool(meta.get("deletionTimestamp")),
        "verdict": spec.get("verdict"),
        "spec": spec,
        "report": status.get("report") or {},
        "attempts": status.get("attempts") or 0,
        "phase": status.get("phase"),
    }


def pod_failure_message(view: dict[str, Any]) -> str:
    parts = [
        p
        for p in (
            view.get("reason"),
            f"disrupted: {view['disruption']}" if view.get("disruption") else None,
            view.get("containerReason"),
            f"exit code {view['exitCode']}" if view.get("exitCode") is not None else None,
            view.get("message"),
        )
        if p
    ]
    return f"pod {view.get('name')} failed: " + ("; ".join(str(p) for p in parts) or "unknown")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def deletion_overdue(
    view: dict[str, Any], seen_at: float, now: float, default_grace_s: float, slack_s: float
) -> bool:
    """Whether a pod that is being deleted should be gone by now: its kubelet kills it at the
    end of the grace period and then confirms the deletion, so a pod still there ``slack_s``
    later has no working kubelet (its node died or is cut off). ``seen_at`` is when we first
    saw it deleting (our clock, so a skewed API server clock does not matter)."""
    if not view.get("deleting"):
        return False
    grace = view.get("deletionGraceS")
    grace_s = float(grace) if isinstance(grace, int) else default_grace_s
    return now - seen_at >= grace_s + slack_s
