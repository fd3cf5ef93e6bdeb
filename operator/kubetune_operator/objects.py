"""Pure builders of the objects the operator writes (besides trial pods: see ``pod.py``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from kubetune._util import dns_name

GROUP = "kubetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
LABEL_EXPERIMENT = "kubetune.io/experiment"
LABEL_TRIAL = "kubetune.io/trial"
LABEL_ATTEMPT = "kubetune.io/attempt"
MAX_NAME = 63


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def trial_object_name(experiment: str, trial_id: str) -> str:
    return dns_name(experiment, trial_id)


def owner_reference(obj: dict[str, Any], controller: bool = True) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": obj.get("apiVersion", API_VERSION),
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def trial_spec(
    experiment: str,
    trial_id: str,
    config: dict[str, Any],
    resources: dict[str, Any],
    restore_from: str | None,
    decision_points: dict[str, Any],
    checkpoint_index_start: int,
    experiment_tag: str | None = None,
) -> dict[str, Any]:
    """``experiment_tag``: Ray's tag (``0_a=1,b=0.12``) the trial runner writes in every result,
    as local mode's does."""
    out: dict[str, Any] = {"experimentTag": experiment_tag} if experiment_tag else {}
    return {
        **out,
        "experiment": experiment,
        "trialId": trial_id,
        "config": config,
        "resources": resources,
        "restoreFrom": restore_from,
        "decisionPoints": decision_points,
        "checkpointIndexStart": checkpoint_index_start,
        "desiredState": "Running",
        "verdict": None,
    }


def tune_trial(
    experiment: dict[str, Any], trial_id: str, trial_name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    meta = experiment["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "TuneTrial",
        "metadata": {
            "name": trial_object_name(meta["name"], trial_id),
            "namespace": meta["namespace"],
            "labels": {LABEL_EXPERIMENT: meta["name"], LABEL_TRIAL: dns_name(trial_id)},
            "annotations": {"kubetune.io/trial-name": trial_name},
            "ownerReferences": [owner_reference(experiment)],
        },
        "spec": spec,
    }


def condition(
    type_: str, status: bool, reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message[:1000],
        "lastTransitionTime": now_iso(),
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def merge_conditions(
    old: list[dict[str, Any]] | None, new: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """kstatus conditions; ``lastTransitionTime`` only moves when ``status`` changes."""
    previous = {c.get("type"): c for c in old or []}
    out = []
    for cond in new:
        prev = previous.get(cond["type"])
        if prev is not None and prev.get("status") == cond["status"]:
            cond = {
                **cond,
                "lastTransitionTime": prev.get(
                    "lastTransitionTime", cond.get("lastTransitionTime")
                ),
            }
        out.append(cond)
    return out


def kstatus(phase: str, reason: str, message: str, generation: int | None) -> list[dict[str, Any]]:
    """Ready / Reconciling / Stalled for a phase."""
    ready = phase == "Succeeded"
    reconciling = phase in ("Pending", "Running", "Suspended")
    stalled = phase in ("Failed", "Stalled")
    return [
        condition(
            "Ready",
            ready,
            reason if ready else "NotFinished" if reconciling else reason,
            message,
            generation,
        ),
        condition(
            "Reconciling", reconciling, reason if reconciling else "Done", message, generation
        ),
        condition("Stalled", stalled, reason if stalled else "Progressing", message, generation),
    ]


# -- RBAC for the sidecars ------------------------------------------------------------------
def trial_service_account(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "kubetune"},
        },
        "automountServiceAccountToken": False,
    }


def trial_role(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "kubetune"},
        },
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": ["tunetrials", "tunetrials/status"],
                "verbs": ["get", "patch", "watch", "list"],
            }
        ],
    }


def trial_role_binding(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "kubetune"},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
