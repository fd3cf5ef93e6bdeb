"""Kueue labels on trial pods and the admission state the operator shows (no cluster)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubetune_operator import kueue
from kubetune_operator.api import ApiError
from kubetune_operator.config import load
from kubetune_operator.controller import ExperimentRuntime, Observed
from kubetune_operator.loop import publish_status
from kubetune_operator.plan import build_engine
from kubetune_operator.pod import PodSettings, build_trial_pod
from kubetune_operator.views import pod_view

from tests.unit.operator.test_controller import RecordingApi, build_pod, experiment


def trial_object(name: str = "exp-t1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": "t-uid"},
        "spec": {"experiment": "exp", "trialId": "t1", "config": {"x": 1}},
    }


def cluster_experiment(**spec: Any) -> dict[str, Any]:
    exp = experiment()
    exp["spec"].update(spec)
    return exp


# -- labelling ------------------------------------------------------------------------------
def test_a_single_pod_trial_gets_the_queue_label_and_no_group():
    pod = build_trial_pod(cluster_experiment(queueName="team-a"), trial_object(), 1, PodSettings())
    assert pod["metadata"]["labels"][kueue.QUEUE_LABEL] == "team-a"
    assert kueue.GROUP_NAME_LABEL not in pod["metadata"]["labels"]
    assert kueue.GROUP_COUNT_ANNOTATION not in (pod["metadata"].get("annotations") or {})


def test_no_queue_no_kueue_labels_and_the_operators_default_queue_applies():
    plain = build_trial_pod(cluster_experiment(), trial_object(), 1, PodSettings())
    assert kueue.QUEUE_LABEL not in plain["metadata"]["labels"]
    queued = build_trial_pod(
        cluster_experiment(), trial_object(), 1, PodSettings(queue_name="default-q")
    )
    assert queued["metadata"]["labels"][kueue.QUEUE_LABEL] == "default-q"
    own = build_trial_pod(
        cluster_experiment(queueName="mine"), trial_object(), 1, PodSettings(queue_name="d")
    )
    assert own["metadata"]["labels"][kueue.QUEUE_LABEL] == "mine"


def test_several_pods_of_one_attempt_become_one_pod_group():
    base = build_trial_pod(cluster_experiment(), trial_object(), 3, PodSettings())
    pods = []
    for rank in range(4):
        pod = copy.deepcopy(base)
        pod["metadata"]["name"] = f"exp-t1-3-{rank}"
        pods.append(pod)
    kueue.mark_attempt(pods, "team-a", "exp-t1-3")
    for pod in pods:
        meta = pod["metadata"]
        assert meta["labels"][kueue.QUEUE_LABEL] == "team-a"
        assert meta["labels"][kueue.GROUP_NAME_LABEL] == "exp-t1-3"
        assert meta["annotations"][kueue.GROUP_COUNT_ANNOTATION] == "4"
        # a failed rank is never replaced inside the group: the trial restarts as a new one
        assert meta["annotations"][kueue.RETRIABLE_ANNOTATION] == "false"


def test_a_group_without_a_queue_is_left_alone_but_a_podtemplate_queue_label_counts():
    pods = [{"metadata": {"name": f"p{i}", "labels": {}}} for i in range(2)]
    kueue.mark_attempt(pods, None, "g")
    assert all(p["metadata"]["labels"] == {} for p in pods)
    pods = [{"metadata": {"name": f"p{i}", "labels": {kueue.QUEUE_LABEL: "q"}}} for i in range(2)]
    kueue.mark_attempt(pods, None, "g")
    assert all(p["metadata"]["labels"][kueue.GROUP_NAME_LABEL] == "g" for p in pods)


def test_the_chart_default_queue_reaches_the_pod_settings():
    config = load([], {"KUBETUNE_DEFAULT_QUEUE_NAME": "shared"})
    assert config.pod_settings().queue_name == "shared"
    assert load([], {}).pod_settings().queue_name is None


# -- what Kueue says ------------------------------------------------------------------------
def workload(name: str, pods: list[str], *conditions: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": p} for p in pods],
        },
        "status": {"conditions": list(conditions)},
    }


PENDING = {
    "type": "QuotaReserved",
    "status": "False",
    "reason": "Pending",
    "message": "couldn't assign flavors to pod set main: insufficient unused quota for"
    " nvidia.com/gpu in flavor default, 2 more needed",
}


def test_workload_conditions_give_kueues_reason():
    assert kueue.workload_admission(None)[:2] == (False, "WorkloadNotCreated")
    admitted, reason, message = kueue.workload_admission(workload("w", ["p"], PENDING))
    assert (admitted, reason) == (False, "Pending")
    assert message.startswith("Workload w: couldn't assign flavors")
    ok = {"type": "Admitted", "status": "True", "reason": "Admitted", "message": "fine"}
    assert kueue.workload_admission(workload("w", ["p"], ok))[0] is True
    evicted = {"type": "Evicted", "status": "True", "reason": "Preempted", "message": "to fit"}
    assert kueue.workload_admission(workload("w", ["p"], evicted, PENDING))[1] == "Preempted"
    missing = {**PENDING, "reason": "Inadmissible", "message": "LocalQueue q doesn't exist"}
    assert kueue.workload_admission(workload("w", ["p"], missing))[1] == "Inadmissible"


def test_workloads_are_found_by_their_owner_pods():
    group = workload("g", ["a-0", "a-1"])
    single = workload("pod-b-1-xyz", ["b-1"])
    found = kueue.workloads_by_pod([group, single])
    assert found["a-0"] is group and found["a-1"] is group and found["b-1"] is single


def test_a_gated_pod_is_not_unschedulable():
    body = {
        "metadata": {"name": "p", "labels": {kueue.QUEUE_LABEL: "q"}},
        "spec": {"schedulingGates": [{"name": kueue.ADMISSION_GATE}]},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}
            ],
        },
    }
    view = pod_view(body)
    assert view["gated"] and view["queued"] and view["unschedulable"] is None


# -- the runtime ----------------------------------------------------------------------------
class KueueApi(RecordingApi):
    def __init__(self) -> None:
        super().__init__()
        self.workloads: list[dict[str, Any]] = []
        self.lists = 0
        self.error: ApiError | None = None

    def list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        self.lists += 1
        if self.error is not None:
            raise self.error
        return self.workloads


def queued_pod(api: RecordingApi, name: str, gated: bool, phase: str = "Pending") -> dict:
    body = copy.deepcopy(api.pods[name])
    body["metadata"]["labels"][kueue.QUEUE_LABEL] = "q"
    if gated:
        body["spec"]["schedulingGates"] = [{"name": kueue.ADMISSION_GATE}]
    body["status"] = {"phase": phase}
    if phase == "Running":
        body["status"]["containerStatuses"] = [{"name": "trial", "state": {"running": {}}}]
    return pod_view(body)


def conditions_written(api: RecordingApi, trial: str) -> list[list[dict[str, Any]]]:
    return [
        patch["status"]["conditions"]
        for kind, args in api.calls
        if kind == "patch_trial_status"
        for name, patch in [args]
        if name == trial and "conditions" in patch["status"]
    ]


@pytest.fixture
def queued(tmp_path: Any) -> tuple[ExperimentRuntime, KueueApi]:
    from kubetune.storage import open_storage

    api = KueueApi()
    exp = experiment(numSamples=2, maxConcurrentTrials=2)
    rt = ExperimentRuntime(exp, build_engine(exp), open_storage(str(tmp_path)), api, build_pod)
    rt.start(0.0)
    rt.step(Observed({}, {}), 1.0)
    return rt, api


def test_a_gated_trial_waits_pending_with_kueues_reason_and_the_experiment_says_so(queued):
    rt, api = queued
    first, second = sorted(api.pods)
    api.workloads = [
        workload("w1", [first], {"type": "Admitted", "status": "True", "reason": "Admitted"}),
        workload("w2", [second], PENDING),
    ]
    pods = {first: queued_pod(api, first, False, "Running"), second: queued_pod(api, second, True)}
    for now in (2.0, 3.0, 60.0, 600.0):  # however long it waits: never an error
        rt.step(Observed({}, pods), now)
    trial2 = api.pods[second]["metadata"]["ownerReferences"][0]["name"]
    written = conditions_written(api, trial2)
    assert len(written) == 1, written  # once, not every step
    cond = {c["type"]: c for c in written[0]}
    assert cond["Admitted"]["status"] == "False" and cond["Admitted"]["reason"] == "Pending"
    assert "insufficient unused quota for nvidia.com/gpu" in cond["Admitted"]["message"]
    assert cond["Scheduled"]["reason"] == "SchedulingGated"
    assert rt.engine.counts()["ERROR"] == 0 and rt.engine.counts()["PENDING"] == 1
    assert api.lists <= 4  # polled while gated, at most every WORKLOAD_POLL_S

    status = rt.status(1)
    assert status["_reason"] == "TrialsWaitingForAdmission"
    assert publish_status(rt, rt.experiment, 1, True)
    patch = next(p for k, p in reversed(api.calls) if k == "patch_experiment_status")
    exp_cond = {c["type"]: c for c in patch["status"]["conditions"]}[kueue.EXPERIMENT_CONDITION]
    assert exp_cond["status"] == "False" and exp_cond["reason"] == "Pending"
    assert trial2 in exp_cond["message"]

    # admitted: Admitted=True once, and the experiment's condition turns True
    api.workloads[1]["status"]["conditions"] = [
        {"type": "Admitted", "status": "True", "reason": "Admitted"}
    ]
    pods[second] = queued_pod(api, second, False, "Running")
    rt.step(Observed({}, pods), 601.0)
    last = {c["type"]: c for c in conditions_written(api, trial2)[-1]}
    assert last["Admitted"]["status"] == "True" and last["Scheduled"]["status"] == "True"
    assert rt.admission_waiting() == []


def test_without_workload_access_the_gate_is_the_reason(queued):
    rt, api = queued
    api.error = ApiError(403, "workloads.kueue.x-k8s.io is forbidden")
    name = sorted(api.pods)[0]
    rt.step(Observed({}, {name: queued_pod(api, name, True)}), 2.0)
    trial = api.pods[name]["metadata"]["ownerReferences"][0]["name"]
    cond = {c["type"]: c for c in conditions_written(api, trial)[-1]}["Admitted"]
    assert cond["status"] == "False" and cond["reason"] == "SchedulingGated"
    assert "forbidden" in cond["message"]
    rt.step(Observed({}, {name: queued_pod(api, name, True)}), 10.0)
    assert api.lists == 1  # retried only after WORKLOAD_RETRY_S


def test_trials_outside_kueue_get_no_admission_condition(runtime_plain):
    rt, api = runtime_plain
    name = sorted(api.pods)[0]
    body = copy.deepcopy(api.pods[name])
    body["status"] = {"phase": "Pending"}
    rt.step(Observed({}, {name: pod_view(body)}), 2.0)
    assert rt.admission_waiting() is None
    assert "_admission" in rt.status(1) and rt.status(1)["_admission"] is None


@pytest.fixture
def runtime_plain(tmp_path: Any) -> tuple[ExperimentRuntime, KueueApi]:
    from kubetune.storage import open_storage

    api = KueueApi()
    exp = experiment()
    rt = ExperimentRuntime(exp, build_engine(exp), open_storage(str(tmp_path)), api, build_pod)
    rt.start(0.0)
    rt.step(Observed({}, {}), 1.0)
    return rt, api
