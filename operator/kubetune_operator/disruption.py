"""Preemption is not failure: trial attempts that the cluster ended, not the trial's code.

A pod is *disrupted* when Kubernetes marks it for termination with a condition before it goes:

- ``DisruptionTarget=True`` (Kubernetes >= 1.26), reason ``PreemptionByScheduler`` (a
  higher-priority pod needed the room), ``EvictionByEvictionAPI`` (``kubectl drain``, the
  cluster autoscaler, a descheduler), ``DeletionByTaintManager`` (its node became unreachable
  or got a NoExecute taint), ``TerminationByKubelet`` (node pressure, graceful node shutdown),
  ``DeletionByPodGC`` (its node is gone); Kueue's job integrations add ``PreemptionByKueue`` /
  ``EvictedByKueue``;
- ``TerminationTarget=True``, reason ``StoppedByKueue``: what Kueue's plain-pod integration
  sets when it preempts or evicts a workload;
- on kubelets without the condition: ``status.reason`` ``Evicted`` (node pressure),
  ``Preempting`` (a critical pod took the room), ``NodeShutdown`` / ``Terminated`` (graceful
  node shutdown).

A pod whose kubelet never confirms its deletion (its node is lost, see
``Observing._observe_deleting``) is disrupted too (``NodeLost``). Such an attempt goes to
:meth:`kubetune.engine.ExperimentEngine.on_trial_preempted`: it is retried from the trial's
latest checkpoint and does not count against ``failureConfig.maxFailures``, as Ray stopped
counting preempted nodes (ray-project/ray#41609). The trial's status gets ``preemptions`` and
``lastPreemption``, the experiment's ``status.preemptions`` the total, and an Event
(``TrialPreempted``) says what happened. A pod that simply failed, or that someone deleted
without such a condition (``kubectl delete pod``), is still a failure.
"""

from __future__ import annotations

from typing import Any

from kubetune.engine import Action
from kubetune.engine import trial as states
from kubetune_operator import objects
from kubetune_operator.runtime_core import RuntimeCore, TrialTrack
from kubetune_operator.views import DISRUPTION_CONDITIONS

__all__ = ["DISRUPTED_POD_REASONS", "DISRUPTION_CONDITIONS", "NODE_LOST", "Disruptions"]

# status.reason of pods that a kubelet ended without a DisruptionTarget condition
DISRUPTED_POD_REASONS = ("Evicted", "Preempting", "NodeShutdown", "Terminated")
NODE_LOST = "NodeLost"


def disruption_of(view: dict[str, Any]) -> str | None:
    """Why the cluster ended this pod (see the module docstring), or None."""
    reason = view.get("disruption")
    if reason:
        return str(reason)
    if view.get("reason") in DISRUPTED_POD_REASONS:
        return str(view["reason"])
    return None


class Disruptions(RuntimeCore):
    """The runtime's side of a disrupted attempt (mixed into the controller)."""

    def _remember_disruption(self, tr: TrialTrack, pod: dict[str, Any]) -> None:
        """A live pod marked for termination: remember why, for when it is gone (its last
        state may never be observed: the kubelet confirms its deletion and it vanishes)."""
        reason = disruption_of(pod)
        if reason:
            tr.disruption = (pod["name"], reason)

    def _disruption_seen(self, tr: TrialTrack, name: str, observed: Any) -> str | None:
        if tr.disruption is not None and tr.disruption[0] == name:
            return tr.disruption[1]
        gone = getattr(observed, "gone", None) or {}
        return gone.get(name)

    def _pod_gone(self, tr: TrialTrack, name: str, observed: Any, now: float) -> list[Action]:
        """The pod of an active attempt vanished without our asking: a preemption when the
        cluster had marked it, else a lost attempt (a failure, as Ray counts a lost actor)."""
        out = self._catch_up_from_storage(tr, now)
        if self.engine.trial_status(tr.trial_id) not in (states.RUNNING, states.PENDING):
            return out
        cause = self._disruption_seen(tr, name, observed)
        if cause:
            return out + self._preempted(tr, name, cause, "was deleted", now, observed)
        self._post(f"pod {name} disappeared", "TrialPodLost", warning=True)
        return out + self.engine.on_trial_lost(tr.trial_id, now)

    def _catch_up_from_storage(self, tr: TrialTrack, now: float) -> list[Action]:
        raise NotImplementedError  # observe.Observing's

    def _exit_checkpoint(self, tr: TrialTrack, observed: Any) -> list[Action]:
        """The checkpoint the runner saved on its way out without a result line (a Class-API
        trial stopped while it waited for a decision): named in its exit record, which the
        sidecar reports once everything is stored."""
        view = (getattr(observed, "trials", None) or {}).get(tr.obj_name) or {}
        report = view.get("report") or {}
        name = (report.get("exit") or {}).get("last_checkpoint")
        if (
            report.get("attempt") != tr.attempt
            or report.get("uploaded") is not True
            or not isinstance(name, str)
            or not name
            or name == self.engine.latest_checkpoint(tr.trial_id)
        ):
            return []
        return self.engine.on_checkpoint(tr.trial_id, name)

    def _preempted(
        self,
        tr: TrialTrack,
        pod_name: str,
        reason: str,
        detail: str,
        now: float,
        observed: Any = None,
    ) -> list[Action]:
        """Retry the trial from its latest checkpoint, not counted as a failure."""
        out = self._exit_checkpoint(tr, observed) if observed is not None else []
        out += self.engine.on_trial_preempted(tr.trial_id, reason, now)
        summary = self.engine.trial_summary(tr.trial_id)
        latest = summary.get("latest_checkpoint") or {}
        source = latest.get("checkpoint_dir_name") or "the start (no checkpoint yet)"
        message = (
            f"pod {pod_name} {detail} ({reason}); the trial resumes from {source}, not counted"
            f" as a failure (preemption {summary.get('num_preemptions', 0)})"
        )
        self._post(f"{tr.obj_name}: {message}", "TrialPreempted", warning=True)
        self._set_trial_status(
            tr,
            {
                "reason": "Preempted",
                "message": message,
                "preemptions": summary.get("num_preemptions", 0),
                "lastPreemption": {
                    "reason": reason,
                    "pod": pod_name,
                    "message": detail,
                    "time": objects.now_iso(),
                },
            },
        )
        return out
