"""How one experiment's runtime takes in what it observed: the sidecars' reports (results,
gates answered with verdicts), result logs caught up from storage, and pod endings, losses and
overdue deletions (mixed into :class:`kubetune_operator.controller.ExperimentRuntime`)."""

from __future__ import annotations

import json
import time
from typing import Any

from kubetune.engine import Action
from kubetune.engine import trial as states
from kubetune.storage import StorageError
from kubetune_operator.admission import Admitting
from kubetune_operator.disruption import NODE_LOST, Disruptions, disruption_of
from kubetune_operator.runtime_core import (
    PHASE_BY_STATE,
    RESULT_FILE,
    VERDICT_ACTION,
    Observed,
    TrialTrack,
    _iteration,
    _reason,
)
from kubetune_operator.views import LIVE, deletion_overdue, pod_failure_message


class Observing(Disruptions, Admitting):
    # -- results ----------------------------------------------------------------------------
    def _feed(
        self, tr: TrialTrack, result: dict[str, Any], now: float, gated: bool
    ) -> list[Action]:
        if self.engine.trial_status(tr.trial_id) not in (states.RUNNING, states.PENDING):
            return []
        response = self.engine.on_result(tr.trial_id, result, now)
        self.results_processed += 1
        self.dirty = True
        it = _iteration(result)
        if it is not None:
            tr.last_iter = it
            tr.verdicts = {k: v for k, v in tr.verdicts.items() if k > it - 16}
            tr.verdicts[it] = (VERDICT_ACTION[response.verdict], _reason(response.actions))
        return list(response.actions)

    def _read_results(self, tr: TrialTrack) -> list[dict[str, Any]]:
        try:
            data = self.storage.get_bytes(f"{self.storage_name(tr)}/{RESULT_FILE}")
        except (StorageError, OSError):
            return []
        rows = []
        for line in data.decode("utf-8", "replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line: the next upload completes it
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def _catch_up_from_storage(self, tr: TrialTrack, now: float) -> list[Action]:
        """The lossless path: results that the report window no longer holds."""
        summary = self.engine.trial_summary(tr.trial_id)
        out: list[Action] = []
        for row in self._read_results(tr)[summary["num_results"] :]:
            out.extend(self._feed(tr, row, now, gated=False))
        return out

    def _consume_report(self, tr: TrialTrack, view: dict[str, Any], now: float) -> list[Action]:
        report = view.get("report") or {}
        if not report or report.get("attempt") != tr.attempt or not tr.pod_live:
            return []
        out: list[Action] = []
        results = [r for r in report.get("results") or [] if isinstance(r, dict)]
        count, first = report.get("resultCount"), report.get("firstResult")
        if isinstance(count, int) and isinstance(first, int):
            # The sidecar numbers results across attempts, as result.json holds them.
            seen = self.engine.trial_summary(tr.trial_id)["num_results"]
            if count > seen and first > seen:
                out.extend(self._catch_up_from_storage(tr, now))
                seen = self.engine.trial_summary(tr.trial_id)["num_results"]
            new = results[max(0, seen - first) :] if count > seen else []
        else:
            new = [r for r in results if (_iteration(r) or 0) > (tr.last_iter or 0)]
            gap = new and tr.last_iter is not None and (_iteration(new[0]) or 0) > tr.last_iter + 1
            if gap:
                out.extend(self._catch_up_from_storage(tr, now))
                new = [r for r in results if (_iteration(r) or 0) > (tr.last_iter or 0)]
        for result in new:
            out.extend(self._feed(tr, result, now, gated=False))
        gate = report.get("gate")
        if isinstance(gate, dict) and isinstance(gate.get("seq"), int):
            seq = gate["seq"]
            it = _iteration(gate) or report.get("iteration")  # the gated result is the newest
            if tr.answered_seq is None or seq > tr.answered_seq:
                if it is not None and it not in tr.verdicts and (tr.last_iter or 0) < it:
                    out.extend(self._catch_up_from_storage(tr, now))
                verdict = tr.verdicts.get(it) if it is not None else None
                if verdict is None and self.engine.trial_status(tr.trial_id) not in (
                    states.RUNNING,
                    states.PENDING,
                ):
                    verdict = ("stop", "trial ended")
                if verdict is not None:
                    self._answer(tr, seq, verdict)
                    received = view.get("receivedAt")
                    if isinstance(received, float):
                        self.decision_latencies.append(time.monotonic() - received)
        return out

    def _reported_everything(self, tr: TrialTrack, view: dict[str, Any] | None) -> bool:
        """Whether this attempt's sidecar reported its final state (the runner had exited,
        every line was stored) and the engine has every line: then reading result.json
        back from storage would add nothing."""
        report = (view or {}).get("report") or {}
        count = report.get("resultCount")
        return (
            report.get("attempt") == tr.attempt
            and bool(report.get("exit"))
            and report.get("uploaded") is True
            and isinstance(count, int)
            and count == self.engine.trial_summary(tr.trial_id)["num_results"]
        )

    def _answer(self, tr: TrialTrack, seq: int, verdict: tuple[str, str]) -> None:
        tr.answered_seq = seq
        body = {"seq": seq, "action": verdict[0], "reason": verdict[1]}
        self._defer(
            f"{tr.obj_name}#verdict",
            lambda: self.api.patch_trial(self.namespace, tr.obj_name, {"spec": {"verdict": body}}),
            urgent=True,
        )
        if verdict[0] != "continue":
            tr.stopping = True

    # -- pods -------------------------------------------------------------------------------
    def _observe_pod(self, tr: TrialTrack, observed: Observed, now: float) -> list[Action]:
        if tr.pod_name is None or not tr.pod_live:
            return []
        pod = observed.pods.get(tr.pod_name)
        status = self.engine.trial_status(tr.trial_id)
        active = status in (states.RUNNING, states.PENDING)
        if pod is None:
            if not tr.pod_seen:
                return []
            tr.pod_live = False
            if active and not tr.stopping and not self.suspended:
                return self._pod_gone(tr, tr.pod_name, observed, now)
            return []
        tr.pod_seen = True
        phase = pod["phase"]
        self._remember_disruption(tr, pod)
        if phase in LIVE:
            admission = self._observe_admission(tr, pod, now)
            if pod.get("unschedulable") != tr.unschedulable or admission:
                tr.unschedulable = pod.get("unschedulable")
                self._set_trial_status(tr, {"conditions": self._trial_conditions(tr)})
            # an attempt we are ending (a worker failed or was preempted, PBT restarts the
            # trial) does not make the trial, PENDING for its next attempt, RUNNING again
            if pod.get("started") and status == states.PENDING and not tr.stopping:
                self._set_trial_status(tr, {"phase": "RUNNING"})
                return self.engine.on_trial_started(tr.trial_id, now)
            if (
                pod.get("started")
                and status == states.RUNNING
                and tr.phase == "PENDING"
                and not tr.stopping
            ):
                # the engine took late results of the attempt being replaced (RUNNING already):
                # the TuneTrial still says PENDING, and now the new attempt runs
                self._set_trial_status(tr, {"phase": "RUNNING"})
            if pod["deleting"]:
                return self._observe_deleting(tr, pod, active, now)
            return []
        # The attempt has ended: take every result it produced, then tell the engine.
        tr.pod_live = False
        out: list[Action] = []
        if active and not self._reported_everything(tr, observed.trials.get(tr.obj_name)):
            out.extend(self._catch_up_from_storage(tr, now))
            status = self.engine.trial_status(tr.trial_id)
            active = status in (states.RUNNING, states.PENDING)
        if not active or tr.stopping or self.suspended:
            return out
        patch: dict[str, Any] = {}
        cause = disruption_of(pod) or self._disruption_seen(tr, pod["name"], observed)
        if phase == "Succeeded":
            out.extend(self.engine.on_trial_complete(tr.trial_id, now))
            patch["reason"] = "completed"
        elif cause:
            detail = "was ended by the cluster"
            return out + self._preempted(tr, pod["name"], cause, detail, now, observed)
        else:
            message = pod_failure_message(pod)
            self._post(f"{tr.obj_name}: {message}", "TrialAttemptFailed", warning=True)
            out.extend(self.engine.on_trial_error(tr.trial_id, message, now))
            patch.update(reason="AttemptFailed", message=message)
        status = self.engine.trial_status(tr.trial_id)
        if status in (states.TERMINATED, states.ERROR):
            self._set_trial_status(tr, {"phase": PHASE_BY_STATE[status], **patch})
        return out

    # Seconds past a deleted pod's grace period after which its kubelet is presumed gone.
    LOST_SLACK_S = 15.0

    def _observe_deleting(
        self, tr: TrialTrack, pod: dict[str, Any], active: bool, now: float
    ) -> list[Action]:
        """A live pod being deleted (by us, or by someone else: eviction, drain, taint-based
        eviction from a lost node). Normally its kubelet stops it within the grace period and
        we see it end (a failure of the attempt unless we asked). A kubelet that is gone never
        confirms, and the pod would stay Terminating forever: once it outlives its grace period
        by ``LOST_SLACK_S``, we force-delete it (grace 0) and, unless we ended the attempt
        ourselves, count the attempt as failed and retry from the latest checkpoint in a new
        pod. We judge by the overdue deletion alone, not by reading the Node (namespaced
        installs cannot read Nodes, and a live kubelet always confirms in time); a pod of a
        cut-off node that still runs can then overlap its successor for a while, as with
        Jobs' replacement pods, and its sidecar can no longer report (its token dies with the
        pod object)."""
        if tr.deleting_seen is None or tr.deleting_seen[0] != pod["name"]:
            tr.deleting_seen = (pod["name"], now)
        if not deletion_overdue(pod, tr.deleting_seen[1], now, self.grace_s, self.LOST_SLACK_S):
            return []
        name = pod["name"]
        self._defer(tr.obj_name, lambda: self.api.delete_pod(self.namespace, name, 0))
        tr.pod_live = False
        if not active or tr.stopping or self.suspended:
            return []
        out = self._catch_up_from_storage(tr, now)
        if self.engine.trial_status(tr.trial_id) not in (states.RUNNING, states.PENDING):
            return out
        cause = disruption_of(pod)
        detail = (
            f"lost: deleted{f' ({cause})' if cause else ''} but still terminating "
            f"{now - tr.deleting_seen[1]:.0f} s later, past its grace period; the kubelet of "
            f"node {pod.get('node') or '?'} does not answer; force-deleted"
        )
        # its node is gone or cut off: the cluster ended the attempt, not the trial's code
        return out + self._preempted(tr, name, NODE_LOST, detail, now)
