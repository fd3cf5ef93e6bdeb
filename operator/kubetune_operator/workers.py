"""Multi-worker trials: one trial attempt as N pods (a ScalingConfig / TorchTrainer, or a
SPREAD placement group), built here and followed by :class:`WorkerTracking`.

Layout (``kubetune.tune.resources.worker_bundles``): pod rank 0 is the trial's pod as a
single-pod trial has it (its name, its sidecar that reports and checkpoints), with bundle 0
(the trainer's) and bundle 1; pod rank r > 0 (``TRIAL-ATTEMPT-wR``) has bundle r + 1 and a
sidecar in the ``worker`` role (``kubetune.sidecar.worker``): it restores the same inputs,
reports nothing, and holds the worker until it knows rank 0's address.

Rendezvous: every worker gets torch.distributed's environment (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK=0``, ``LOCAL_WORLD_SIZE=1``, ``NODE_RANK=rank``: one worker per pod, each pod a
node of its own, ``MASTER_PORT``); rank 0's ``MASTER_ADDR`` is its own pod IP (downward
API), the others' is rank 0's pod IP as the operator publishes it in the TuneTrial's
``status.workers.masterAddr`` once the pod has one. No Service and no cluster DNS are
needed, and all pods of an attempt are created at once (what gang admission wants).

Placement: SPREAD adds a preferred pod anti-affinity on the node's hostname among the
attempt's pods, STRICT_SPREAD a required one; PACK a preferred pod affinity, STRICT_PACK a
required one.

Failure and stop: the attempt is the unit. A worker pod that fails, vanishes or is deleted
by someone else fails the attempt (the engine retries the whole trial from its latest
checkpoint, or ends it); rank 0's end (success, a verdict, a failure) deletes the workers
still running; stopping, pausing or suspending a trial deletes every pod. All pods are owned
by the TuneTrial, so deleting the experiment removes them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from kubetune.engine import Action
from kubetune.engine import trial as states
from kubetune.train._context import (
    DEFAULT_MASTER_PORT,
    RENDEZVOUS_FILE_ENV,
    WorkerPlace,
    rendezvous_env,
)
from kubetune.tune.resources import DEFAULT_RESOURCES, worker_bundles
from kubetune_operator import kueue
from kubetune_operator.disruption import Disruptions, disruption_of
from kubetune_operator.pod import (
    LABEL_ATTEMPT,
    LABEL_TRIAL,
    ROOT,
    SIDECAR_NAME,
    TRIAL_CONTAINER,
    PodSettings,
    build_trial_pod,
    pod_name,
)
from kubetune_operator.runtime_core import PHASE_BY_STATE, Observed, TrialTrack
from kubetune_operator.views import LIVE, pod_failure_message

LABEL_RANK = "kubetune.io/rank"
LABEL_WORLD = "kubetune.io/world-size"
RENDEZVOUS_PATH = f"{ROOT}/rendezvous.json"
HOSTNAME = "kubernetes.io/hostname"


def trial_resources(experiment: dict[str, Any], trial: dict[str, Any]) -> dict[str, Any]:
    tspec = trial.get("spec") or {}
    espec = experiment.get("spec") or {}
    return dict(tspec.get("resources") or espec.get("resources") or DEFAULT_RESOURCES)


def worker_pod_name(rank0_name: str, rank: int) -> str:
    return rank0_name if rank == 0 else f"{rank0_name}-w{rank}"


def build_trial_pods(
    experiment: dict[str, Any],
    trial: dict[str, Any],
    attempt: int,
    settings: PodSettings,
    master_port: int = DEFAULT_MASTER_PORT,
) -> list[dict[str, Any]]:
    """Every pod of one attempt, rank 0 first (one pod, unchanged, for a one-worker trial)."""
    resources = trial_resources(experiment, trial)
    layout = worker_bundles(resources)
    if len(layout) == 1:
        return [build_trial_pod(experiment, trial, attempt, settings)]
    world = len(layout)
    strategy = resources.get("strategy", "PACK")
    pods = []
    for rank, bundle in enumerate(layout):
        one = copy.deepcopy(trial)
        one.setdefault("spec", {})["resources"] = {"bundles": [bundle], "strategy": "PACK"}
        pod = build_trial_pod(experiment, one, attempt, settings)
        _as_worker(pod, rank, world, resources, master_port)
        _place(pod, strategy, trial["metadata"]["name"], attempt)
        pods.append(pod)
    # one Kueue pod group per attempt: admitted whole or not at all
    kueue.mark_attempt(
        pods, kueue.queue_name(experiment, settings.queue_name), pod_name(trial, attempt)
    )
    return pods


def as_pods(built: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a pod builder returned, as the list of an attempt's pods (rank 0 first)."""
    return list(built) if isinstance(built, list) else [built]


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _as_worker(
    pod: dict[str, Any], rank: int, world: int, resources: dict[str, Any], port: int
) -> None:
    meta = pod["metadata"]
    meta["labels"][LABEL_RANK] = str(rank)
    meta["labels"][LABEL_WORLD] = str(world)
    meta["name"] = worker_pod_name(meta["name"], rank)
    spec = pod["spec"]
    sidecar = next(c for c in spec["initContainers"] if c["name"] == SIDECAR_NAME)
    for item in sidecar["env"]:
        if item["name"] == "KUBETUNE_SIDECAR_TRIAL_SPEC":  # the trial's resources, not the pod's
            tspec = json.loads(item["value"])
            tspec["resources"] = resources
            item["value"] = json.dumps(tspec)
    container = next(c for c in spec["containers"] if c["name"] == TRIAL_CONTAINER)
    place = WorkerPlace(rank, world, 0, 1, rank)
    env = [_env(k, v) for k, v in rendezvous_env(place, None, port).items()]
    if rank == 0:
        env.append(
            {"name": "MASTER_ADDR", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
        )
    else:
        env.append(_env(RENDEZVOUS_FILE_ENV, RENDEZVOUS_PATH))
        sidecar["env"].append(_env("KUBETUNE_SIDECAR_ROLE", "worker"))
    names = {e["name"] for e in env}
    container["env"] = [e for e in container.get("env") or [] if e["name"] not in names] + env


def _place(pod: dict[str, Any], strategy: str, trial_name: str, attempt: int) -> None:
    if strategy not in ("SPREAD", "STRICT_SPREAD", "PACK", "STRICT_PACK"):
        return
    term = {
        "labelSelector": {"matchLabels": {LABEL_TRIAL: trial_name, LABEL_ATTEMPT: str(attempt)}},
        "topologyKey": HOSTNAME,
    }
    kind = "podAntiAffinity" if "SPREAD" in strategy else "podAffinity"
    affinity = pod["spec"].setdefault("affinity", {})
    rules = affinity.setdefault(kind, {})
    if strategy.startswith("STRICT_"):
        rules.setdefault("requiredDuringSchedulingIgnoredDuringExecution", []).append(term)
    else:
        rules.setdefault("preferredDuringSchedulingIgnoredDuringExecution", []).append(
            {"weight": 100, "podAffinityTerm": term}
        )


# -- following an attempt's workers ---------------------------------------------------------
@dataclass
class Gang:
    """The pods of ranks 1..N-1 of one attempt (rank 0 is the track's own pod)."""

    attempt: int
    total: int
    workers: list[str]
    seen: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)  # ended by themselves: their logs stay
    published: tuple[Any, ...] | None = None
    cleaned: bool = False


class WorkerTracking(Disruptions):
    """Mixed into the experiment runtime: the workers of multi-worker trials (a preempted
    worker retries the trial as :class:`Disruptions` does a preempted pod)."""

    @property
    def gangs(self) -> dict[str, Gang]:
        return self.__dict__.setdefault("_gangs", {})

    def begin_gang(self, tr: TrialTrack, pods: list[dict[str, Any]]) -> None:
        if len(pods) > 1:
            names = [p["metadata"]["name"] for p in pods[1:]]
            self.gangs[tr.trial_id] = Gang(tr.attempt, len(pods), names)
        else:
            self.gangs.pop(tr.trial_id, None)

    @staticmethod
    def rank0_pods(tr: TrialTrack, observed: Observed) -> list[dict[str, Any]]:
        """The trial's own pods, one per attempt (a multi-worker attempt's rank 0)."""
        return [
            p
            for p in observed.pods.values()
            if p.get("trialObject") == tr.obj_name and not p.get("rank")
        ]

    def adopt_gang(self, tr: TrialTrack, observed: Observed) -> None:
        """After a restart: the workers of the trial's newest attempt, from their pods."""
        mine = [
            p
            for p in observed.pods.values()
            if p.get("trialObject") == tr.obj_name
            and p.get("attempt") == tr.attempt
            and (p.get("rank") or 0) > 0
        ]
        if not mine:
            return
        total = max(p.get("worldSize") or 0 for p in mine) or len(mine) + 1
        names = [worker_pod_name(tr.pod_name or "", r) for r in range(1, total)]
        self.gangs[tr.trial_id] = Gang(tr.attempt, total, names, {p["name"] for p in mine})

    def _delete_pod(self, tr: TrialTrack) -> None:
        super()._delete_pod(tr)
        self._delete_workers(tr, None)

    def _delete_workers(self, tr: TrialTrack, observed: Observed | None) -> None:
        gang = self.gangs.get(tr.trial_id)
        if gang is None or gang.cleaned:
            return
        gang.cleaned = True
        for name in gang.workers:
            view = observed.pods.get(name) if observed is not None else {"phase": "Pending"}
            if name in gang.ended or view is None or view["phase"] not in LIVE:
                continue  # gone, or ended by itself (its logs stay)
            if view.get("deleting"):
                continue
            self._defer(
                tr.obj_name,
                lambda n=name: self.api.delete_pod(self.namespace, n, None),  # type: ignore[misc]
            )

    def observe_workers(self, tr: TrialTrack, observed: Observed, now: float) -> list[Action]:
        gang = self.gangs.get(tr.trial_id)
        if gang is None or gang.attempt != tr.attempt:
            return []
        if not tr.pod_live:  # rank 0 ended: the attempt is over for every worker
            self._delete_workers(tr, observed)
            del self.gangs[tr.trial_id]
            return []
        rank0 = observed.pods.get(tr.pod_name or "")
        views = {name: observed.pods.get(name) for name in gang.workers}
        gang.seen.update(n for n, v in views.items() if v is not None)
        gang.ended.update(n for n, v in views.items() if v is not None and v["phase"] not in LIVE)
        self._publish(tr, gang, rank0, views)
        if tr.stopping or gang.cleaned or self.suspended:
            return []
        if self.engine.trial_status(tr.trial_id) not in (states.RUNNING, states.PENDING):
            return []
        # a worker the cluster preempted restarts the gang too, but is not a failure
        disrupted = _worker_disruption(gang, views, getattr(observed, "gone", None) or {})
        if disrupted is not None:
            name, reason = disrupted
            return self._preempted(tr, name, reason, "was preempted (a worker)", now, observed)
        failure = _worker_failure(gang, views)
        if failure is None:
            return []
        self._post(f"{tr.obj_name}: {failure}", "TrialAttemptFailed", warning=True)
        out = self.engine.on_trial_error(tr.trial_id, failure, now)
        status = self.engine.trial_status(tr.trial_id)
        if status in (states.TERMINATED, states.ERROR):
            patch = {"reason": "AttemptFailed", "message": failure}
            self._set_trial_status(tr, {"phase": PHASE_BY_STATE[status], **patch})
        return out

    def _publish(
        self,
        tr: TrialTrack,
        gang: Gang,
        rank0: dict[str, Any] | None,
        views: dict[str, dict[str, Any] | None],
    ) -> None:
        """status.workers: how many run, and rank 0's address for the others' sidecars.
        Written when the address becomes known, when every worker runs or no longer does,
        and when a worker cannot be scheduled: not at every pod that starts (a few writes
        per attempt, whatever its size)."""
        pods = [rank0, *views.values()]
        running = sum(1 for v in pods if v and v["phase"] == "Running" and not v["deleting"])
        addr = (rank0 or {}).get("podIP") if rank0 and not rank0["deleting"] else None
        waiting = next((v["unschedulable"] for v in pods if v and v.get("unschedulable")), None)
        state = (gang.attempt, running == gang.total, addr, waiting)
        if state == gang.published:
            return
        gang.published = state
        workers: dict[str, Any] = {
            "attempt": gang.attempt,
            "total": gang.total,
            "running": running,
            "ready": f"{running}/{gang.total}",
            "masterAddr": addr,
            "message": f"a worker cannot be scheduled: {waiting}" if waiting else None,
        }
        self._set_trial_status(tr, {"workers": workers})


def _worker_disruption(
    gang: Gang, views: dict[str, dict[str, Any] | None], gone: dict[str, str]
) -> tuple[str, str] | None:
    """(pod, reason) of the first worker the cluster marked for termination (disruption.py):
    still there with the condition, or gone with its reason remembered."""
    for name in gang.workers:
        view = views.get(name)
        reason = disruption_of(view) if view is not None else gone.get(name)
        if reason and (view is not None or name in gang.seen):
            return name, reason
    return None


def _worker_failure(gang: Gang, views: dict[str, dict[str, Any] | None]) -> str | None:
    for rank, name in enumerate(gang.workers, start=1):
        view = views.get(name)
        if view is None:
            if name in gang.seen:
                return f"worker pod {name} (rank {rank}) disappeared"
            continue
        if view["phase"] == "Failed":
            return f"worker pod {name} (rank {rank}) failed: {pod_failure_message(view)}"
        if view["deleting"]:
            cause = f" ({view['disruption']})" if view.get("disruption") else ""
            return f"worker pod {name} (rank {rank}) is being deleted{cause}"
    return None
