"""Evicted pods and pods of lost nodes, without a cluster (see test_controller.py's helpers)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubetune_operator.controller import ExperimentRuntime, Observed
from kubetune_operator.plan import build_engine
from kubetune_operator.views import deletion_overdue, pod_failure_message, pod_view

from tests.unit.operator.test_controller import RecordingApi, build_pod, experiment

GRACE_S = 5


class GraceRecordingApi(RecordingApi):
    def __init__(self) -> None:
        super().__init__()
        self.deletes: list[tuple[str, int | None]] = []

    def delete_pod(self, namespace: str, name: str, grace_s: int | None) -> None:
        super().delete_pod(namespace, name, grace_s)
        self.deletes.append((name, grace_s))


@pytest.fixture
def runtime(tmp_path: Any) -> tuple[ExperimentRuntime, GraceRecordingApi]:
    from kubetune.storage import open_storage

    api = GraceRecordingApi()
    exp = experiment(numSamples=1, maxConcurrentTrials=1)
    rt = ExperimentRuntime(exp, build_engine(exp), open_storage(str(tmp_path)), api, build_pod)
    rt.start(0.0)
    return rt, api


def pod(
    api: RecordingApi,
    name: str,
    phase: str = "Running",
    deleting: bool = False,
    disruption: str | None = None,
    exit_code: int | None = None,
) -> dict[str, Any]:
    body = json.loads(json.dumps(api.pods[name]))
    body["spec"]["nodeName"] = "node-a"
    if deleting:
        body["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
        body["metadata"]["deletionGracePeriodSeconds"] = GRACE_S
    state = {"terminated": {"exitCode": exit_code}} if exit_code is not None else {"running": {}}
    status: dict[str, Any] = {
        "phase": phase,
        "containerStatuses": [{"name": "trial", "state": state}],
    }
    if disruption:
        status["conditions"] = [
            {"type": "DisruptionTarget", "status": "True", "reason": disruption}
        ]
    body["status"] = status
    return pod_view(body)


def started(rt: ExperimentRuntime, api: RecordingApi) -> tuple[Any, str]:
    rt.step(Observed({}, {}), 1.0)
    tr = next(iter(rt.tracks.values()))
    assert tr.pod_name is not None
    rt.step(Observed({}, {tr.pod_name: pod(api, tr.pod_name)}), 2.0)
    return tr, tr.pod_name


def test_deletion_overdue_counts_from_first_sight_past_grace_and_slack():
    view = {"deleting": True, "deletionGraceS": 30}
    assert not deletion_overdue(view, 100.0, 139.0, 60, 10)
    assert deletion_overdue(view, 100.0, 140.0, 60, 10)
    assert deletion_overdue({"deleting": True}, 100.0, 170.0, 60, 10)  # default grace
    assert not deletion_overdue({"deleting": True}, 100.0, 169.0, 60, 10)
    assert not deletion_overdue({"deleting": False, "deletionGraceS": 0}, 0.0, 1e9, 60, 10)


def test_pod_view_reads_disruption_node_and_grace():
    api = RecordingApi()
    api.pods["p"] = build_pod({}, {"metadata": {"name": "t"}}, 1)
    api.pods["p"]["metadata"]["name"] = "p"
    view = pod(api, "p", "Failed", deleting=True, disruption="EvictionByEvictionAPI", exit_code=13)
    assert view["disruption"] == "EvictionByEvictionAPI"
    assert view["node"] == "node-a"
    assert view["deletionGraceS"] == GRACE_S
    assert "EvictionByEvictionAPI" in pod_failure_message(view)
    assert "exit code 13" in pod_failure_message(view)


def trial_status_patches(api: RecordingApi) -> list[dict[str, Any]]:
    return [c[1][1]["status"] for c in api.calls if c[0] == "patch_trial_status"]


def assert_preempted(rt: ExperimentRuntime, api: RecordingApi, tr: Any, reason: str) -> None:
    summary = rt.engine.trial_summary(tr.trial_id)
    assert summary["num_failures"] == 0
    assert summary["num_preemptions"] == 1
    assert summary["last_disruption"] == reason
    assert ("event", "TrialPreempted") in api.calls
    (patch,) = [p for p in trial_status_patches(api) if p.get("reason") == "Preempted"]
    assert patch["preemptions"] == 1 and patch["lastPreemption"]["reason"] == reason
    assert rt.status(1)["preemptions"] == 1  # the experiment shows the total


def test_an_evicted_pod_that_ends_is_retried_without_counting_a_failure(runtime):
    rt, api = runtime
    tr, first = started(rt, api)
    evicted = pod(api, first, deleting=True, disruption="EvictionByEvictionAPI")
    rt.step(Observed({}, {first: evicted}), 3.0)
    assert tr.attempt == 1 and api.deletes == []  # the kubelet is stopping it: wait
    ended = pod(api, first, "Failed", True, "EvictionByEvictionAPI", exit_code=13)
    rt.step(Observed({}, {first: ended}), 4.0)
    assert tr.attempt == 2 and tr.pod_name != first
    assert_preempted(rt, api, tr, "EvictionByEvictionAPI")
    assert api.deletes == []  # its kubelet confirms the deletion, not us


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ("DisruptionTarget", "PreemptionByScheduler"),
        ("DisruptionTarget", "TerminationByKubelet"),
        ("TerminationTarget", "StoppedByKueue"),  # Kueue's plain-pod integration
    ],
)
def test_a_disrupted_pod_that_vanishes_is_a_preemption(runtime, condition, reason):
    rt, api = runtime
    tr, first = started(rt, api)
    view = pod(api, first, deleting=True, disruption=reason)
    if condition != "DisruptionTarget":
        body = json.loads(json.dumps(api.pods[first]))
        body["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
        body["status"] = {
            "phase": "Running",
            "conditions": [{"type": condition, "status": "True", "reason": reason}],
        }
        view = pod_view(body)
    rt.step(Observed({}, {first: view}), 3.0)
    rt.step(Observed({}, {}), 4.0)  # deleted: its final state was never observed
    assert tr.attempt == 2
    assert_preempted(rt, api, tr, reason)


def test_a_deleted_pod_whose_last_state_only_the_watch_saw_is_a_preemption(runtime):
    rt, api = runtime
    tr, first = started(rt, api)
    rt.step(Observed({}, {}, gone={first: "PreemptionByScheduler"}), 3.0)
    assert tr.attempt == 2
    assert_preempted(rt, api, tr, "PreemptionByScheduler")


def test_a_kubelet_eviction_without_the_condition_is_a_preemption(runtime):
    rt, api = runtime
    tr, first = started(rt, api)
    body = json.loads(json.dumps(api.pods[first]))
    body["status"] = {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}
    rt.step(Observed({}, {first: pod_view(body)}), 3.0)
    assert tr.attempt == 2
    assert_preempted(rt, api, tr, "Evicted")


def test_a_pod_that_fails_or_vanishes_without_a_disruption_is_still_a_failure(runtime):
    rt, api = runtime
    tr, first = started(rt, api)
    rt.step(Observed({}, {first: pod(api, first, "Failed", exit_code=1)}), 3.0)
    assert rt.engine.trial_summary(tr.trial_id)["num_failures"] == 1
    second = tr.pod_name
    assert second != first
    rt.step(Observed({}, {second: pod(api, second)}), 4.0)
    rt.step(Observed({}, {}), 5.0)  # kubectl delete pod: no DisruptionTarget
    summary = rt.engine.trial_summary(tr.trial_id)
    assert summary["num_failures"] == 2 and summary["num_preemptions"] == 0
    assert ("event", "TrialPreempted") not in api.calls


def test_preemptions_do_not_use_up_max_failures(tmp_path):
    from kubetune.storage import open_storage

    api = GraceRecordingApi()
    exp = experiment(numSamples=1, maxConcurrentTrials=1)
    exp["spec"]["runConfig"] = {"failureConfig": {"maxFailures": 1}}
    rt = ExperimentRuntime(exp, build_engine(exp), open_storage(str(tmp_path)), api, build_pod)
    rt.start(0.0)
    tr, name = started(rt, api)
    for i in range(5):  # five preemptions: more than maxFailures allows of failures
        ended = pod(api, name, "Failed", True, "PreemptionByScheduler", exit_code=13)
        rt.step(Observed({}, {name: ended}), 10.0 + i)
        assert tr.pod_name != name
        name = tr.pod_name
        rt.step(Observed({}, {name: pod(api, name)}), 10.5 + i)
    summary = rt.engine.trial_summary(tr.trial_id)
    assert summary["status"] == "RUNNING" and tr.attempt == 6
    assert summary["num_preemptions"] == 5 and summary["num_failures"] == 0
    rt.step(Observed({}, {name: pod(api, name, "Failed", exit_code=1)}), 20.0)
    assert rt.engine.trial_summary(tr.trial_id)["num_failures"] == 1  # a real one still counts
    assert rt.engine.trial_status(tr.trial_id) in ("PENDING", "RUNNING")


def test_a_pod_stuck_terminating_on_a_lost_node_is_force_deleted_and_retried(runtime):
    rt, api = runtime
    tr, first = started(rt, api)
    lost = pod(api, first, deleting=True, disruption="DeletionByTaintManager")
    rt.step(Observed({}, {first: lost}), 10.0)
    slack = ExperimentRuntime.LOST_SLACK_S
    rt.step(Observed({}, {first: lost}), 10.0 + GRACE_S + slack - 1)
    assert tr.attempt == 1 and api.deletes == []  # within grace + slack: still waiting
    rt.step(Observed({}, {first: lost}), 10.0 + GRACE_S + slack)
    assert api.deletes == [(first, 0)]
    assert tr.attempt == 2 and tr.pod_name != first
    assert api.count("create_pod") == 2
    assert_preempted(rt, api, tr, "NodeLost")  # lost with its node: not its code's fault
    # the stale view of the force-deleted pod changes nothing
    rt.step(Observed({}, {first: lost, tr.pod_name: pod(api, tr.pod_name)}), 40.0)
    assert tr.attempt == 2 and api.deletes == [(first, 0)]


def test_a_pod_we_stopped_that_hangs_terminating_is_force_deleted_without_retry(runtime):
    rt, api = runtime
    tr, first = started(rt, api)
    rt.step(Observed({}, {first: pod(api, first)}), 3.0, suspend=True)
    assert api.deletes == [(first, None)]
    stuck = pod(api, first, deleting=True)
    rt.step(Observed({}, {first: stuck}), 4.0, suspend=True)
    rt.step(Observed({}, {first: stuck}), 4.0 + GRACE_S + ExperimentRuntime.LOST_SLACK_S, True)
    assert api.deletes == [(first, None), (first, 0)]
    assert not tr.pod_live  # the experiment's loop may end: nothing of ours is live
    assert tr.attempt == 1
    assert rt.engine.trial_summary(tr.trial_id)["num_failures"] == 0
