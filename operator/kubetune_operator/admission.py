"""Kueue admission as one experiment's runtime sees it (mixed into
:class:`kubetune_operator.controller.ExperimentRuntime`; the labels are ``kueue.py``'s).

A trial whose pods Kueue still gates is PENDING, like one waiting for a node: it counts
against ``maxConcurrentTrials`` and is never an error, however long the queue. Its TuneTrial
gets ``Admitted=False`` with Kueue's reason and message, read from the attempt's Workload (one
LIST of the namespace's Workloads every few seconds while some trial is gated, none otherwise);
the experiment gets ``TrialsAdmitted=False`` naming the first of them. Where Workloads cannot be
read (Kueue absent, or no RBAC for them), the pod's scheduling gate is the reason.

A multi-pod attempt is read from its rank 0 pod alone (``tr.pod_name``), and that is enough:
the attempt is one Kueue pod group with one Workload, which every pod of the group owns, and
Kueue lifts the gates of the group's pods only once that Workload is admitted (one pod after
the other, within moments: tests/cluster/test_kueue_operator.py sees no half-ungated group
last). An evicted group is not gated again: Kueue deletes its pods (disruption.py).
"""

from __future__ import annotations

import logging
from typing import Any

from kubetune_operator import kueue, objects
from kubetune_operator.api import ApiError
from kubetune_operator.runtime_core import Observed, RuntimeCore, TrialTrack

log = logging.getLogger("kubetune_operator")

GATE_REASON = "SchedulingGated"


class Admitting(RuntimeCore):
    WORKLOAD_POLL_S = 2.0  # while a trial is gated
    WORKLOAD_RETRY_S = 60.0  # after Workloads could not be read (no Kueue, no RBAC)
    FIRST_SIGHT_S = 5.0  # how long a gated pod may wait for its Workload before we say so

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kueue_used = False  # some trial pod was in a LocalQueue
        # TuneTrial name -> (gated, reason, message) as last written to its Admitted condition
        self.admission: dict[str, tuple[bool, str, str]] = {}
        self._workloads: dict[str, dict[str, Any]] = {}  # pod name -> its Workload
        self._workloads_at: float | None = None
        self._workloads_error: str | None = None
        self._workloads_retry_at = 0.0
        self._gated_since: dict[str, float] = {}

    # -- reading Kueue's Workloads ----------------------------------------------------------
    def _refresh_workloads(self, observed: Observed, now: float) -> None:
        gated = [
            tr.pod_name
            for tr in self.busy.values()
            if tr.pod_live and tr.pod_name and (observed.pods.get(tr.pod_name) or {}).get("gated")
        ]
        self._gated_since = {p: self._gated_since.get(p, now) for p in gated if p}
        if not gated or now < self._workloads_retry_at:
            return
        if self._workloads_at is not None and now - self._workloads_at < self.WORKLOAD_POLL_S:
            return
        lister = getattr(self.api, "list_workloads", None)
        if lister is None:
            return
        try:
            items = lister(self.namespace)
        except (ApiError, OSError) as exc:
            if self._workloads_error != str(exc):
                log.info(
                    "%s: cannot read Kueue Workloads (%s): the gate is the reason", self.name, exc
                )
            self._workloads_error = str(exc)
            self._workloads_retry_at = now + self.WORKLOAD_RETRY_S
            self._workloads = {}
            return
        self._workloads_error = None
        self._workloads_at = now
        self._workloads = kueue.workloads_by_pod(items)

    def _admission_state(self, pod: dict[str, Any], now: float) -> tuple[bool, str, str] | None:
        """(gated, reason, message) of a queued pod; None: nothing to say yet."""
        name = str(pod.get("name"))
        if not pod.get("gated"):
            return False, "Admitted", "admitted by Kueue"
        if self._workloads_error is not None:
            return (
                True,
                GATE_REASON,
                f"pod {name} waits for Kueue admission (scheduling gate {kueue.ADMISSION_GATE});"
                f" its Workload cannot be read: {self._workloads_error}",
            )
        workload = self._workloads.get(name)
        if workload is None and now - self._gated_since.get(name, now) < self.FIRST_SIGHT_S:
            return None  # Kueue makes the Workload within moments: say its words, not ours
        _, reason, message = kueue.workload_admission(workload)
        return True, reason, message

    # -- the trial's conditions -------------------------------------------------------------
    def _observe_admission(self, tr: TrialTrack, pod: dict[str, Any], now: float) -> bool:
        """Take in a live pod's admission; True when the trial's conditions must be written."""
        if not pod.get("queued") and tr.obj_name not in self.admission:
            return False
        self.kueue_used = True
        state = self._admission_state(pod, now)
        if state is None or state == self.admission.get(tr.obj_name):
            return False
        self.admission[tr.obj_name] = state
        if state[0]:
            self._post(f"{tr.obj_name} waits for Kueue admission: {state[2]}", "TrialQueued")
        return True

    def _trial_conditions(self, tr: TrialTrack) -> list[dict[str, Any]]:
        """The TuneTrial's conditions, all of them (a merge patch replaces the list)."""
        admission = self.admission.get(tr.obj_name)
        if admission is not None and admission[0]:
            scheduled = objects.condition(
                "Scheduled", False, GATE_REASON, "waiting for Kueue admission", None
            )
        else:
            scheduled = objects.condition(
                "Scheduled",
                tr.unschedulable is None,
                "Unschedulable" if tr.unschedulable else "Scheduled",
                tr.unschedulable or "the pod is bound to a node",
                None,
            )
        if admission is None:
            return [scheduled]
        return [scheduled, kueue.admission_condition(admission[0], admission[1], admission[2])]

    # -- the experiment's -------------------------------------------------------------------
    def admission_waiting(self) -> list[tuple[str, str, str]] | None:
        """(trial, reason, message) of each live trial Kueue has not admitted yet, by name;
        None when no trial pod of this experiment was ever queued."""
        if not self.kueue_used:
            return None
        return sorted(
            (tr.obj_name, state[1], state[2])
            for tr in self.busy.values()
            if tr.pod_live and (state := self.admission.get(tr.obj_name)) is not None and state[0]
        )
