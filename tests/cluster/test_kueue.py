"""Trials through a real Kueue controller (tests/testenv/kueue.py) on the real control plane.

- Kueue pod groups made by the operator's labelling (``kubetune_operator.kueue.mark_attempt``)
  against a ClusterQueue whose GPU quota fits one 2-pod group: admitted one after the other,
  never half, the waiting one with Kueue's reason.
- The operator with ``spec.queueName``: a trial Kueue has not admitted is PENDING with
  ``Admitted=False`` and Kueue's reason, the experiment says so, and nothing fails.
- Kueue preempting a running pod group for a higher WorkloadPriorityClass: what Kueue does to
  the pods (the operator's handling of it is issue 16's deliverable 3).

Pods run in the test kubelet's emulated mode: Kueue, the scheduler and the API server are real;
what the containers would do does not matter here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubetune_operator import kueue as kq

from tests.cluster import operator_helpers
from tests.cluster.operator_helpers import (
    FakeSidecar,
    create_experiment,
    experiment,
    get_experiment,
    phase_of,
    trial_objects,
)
from tests.testenv.helpers import condition, s3_secret, wait_for
from tests.testenv.kubelet import NodeSpec
from tests.testenv.kubelet_emulated import EmulatedExit
from tests.testenv.kueue import API, kueue_get

# fixtures, used by name
crds = operator_helpers.crds
operator_process = operator_helpers.operator_process
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def group_pods(
    name: str, namespace: str, queue: str, count: int, labels: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """COUNT one-GPU pods that make up one attempt, labelled as the operator labels them."""
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-{rank}",
                "namespace": namespace,
                "labels": {"kubetune.test/group": name, **(labels or {})},
            },
            "spec": {
                "restartPolicy": "Never",
                "tolerations": [GPU_TOLERATION],
                "containers": [
                    {
                        "name": "worker",
                        "image": "kubetune/test:latest",
                        "env": [{"name": "RANK", "value": str(rank)}],
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "64Mi"},
                            "limits": {"nvidia.com/gpu": "1"},
                        },
                    }
                ],
            },
        }
        for rank in range(count)
    ]
    kq.mark_attempt(pods, queue, name)
    return pods


def create_pods(kube_api: Any, pods: list[dict[str, Any]]) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    for pod in pods:
        core.create_namespaced_pod(pod["metadata"]["namespace"], pod)


def snapshot(cp: Any, namespace: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The namespace's pods, then its Workloads by pod name (in this order: a pod's gate is
    removed only after its Workload is admitted, so an ungated pod read first has an admitted
    Workload when the Workloads are read next)."""
    status, body = cp.request("GET", f"/api/v1/namespaces/{namespace}/pods")
    assert status == 200, body
    pods = body.get("items") or []
    workloads = kueue_get(cp, f"/namespaces/{namespace}/workloads").get("items") or []
    return pods, kq.workloads_by_pod(workloads)


def active(workload: dict[str, Any] | None) -> bool:
    """Admitted and holding its quota (not finished)."""
    if workload is None:
        return False
    admitted = condition(workload, "Admitted") or {}
    finished = condition(workload, "Finished") or {}
    return admitted.get("status") == "True" and finished.get("status") != "True"


class GroupWatch:
    """Polls the pods of several groups and their Workloads; checks the invariants each time."""

    def __init__(self, cp: Any, namespace: str, groups: dict[str, int]) -> None:
        self.cp, self.namespace, self.groups = cp, namespace, groups
        self.admitted_at: dict[str, float] = {}
        self.finished_at: dict[str, float] = {}
        self.all_running_at: dict[str, float] = {}
        self.split_since: dict[str, float] = {}
        self.longest_split = 0.0
        self.polls = 0
        self.waiting_reason: dict[str, tuple[bool, str, str]] = {}

    def poll(self, quota_groups: int = 1) -> None:
        now = time.monotonic()
        pods, by_pod = snapshot(self.cp, self.namespace)
        self.polls += 1
        holding = []
        for group, count in self.groups.items():
            mine = [p for p in pods if p["metadata"]["labels"].get("kubetune.test/group") == group]
            if not mine:
                continue
            workload = next(
                (by_pod[p["metadata"]["name"]] for p in mine if p["metadata"]["name"] in by_pod),
                None,
            )
            ungated = [p for p in mine if not kq.gated(p)]
            running = [p for p in mine if (p.get("status") or {}).get("phase") == "Running"]
            # a pod leaves the gate only once its whole group's Workload is admitted (a pod that
            # ended, or is being deleted, keeps no gate and may outlive its admission)
            live = [
                p
                for p in ungated
                if (p.get("status") or {}).get("phase") in ("Pending", "Running")
                and not p["metadata"].get("deletionTimestamp")
            ]
            for pod in live:
                wl = by_pod.get(pod["metadata"]["name"])
                assert (
                    wl is not None and (condition(wl, "Admitted") or {}).get("status") == "True"
                ), (
                    f"pod {pod['metadata']['name']} of {group} is ungated, its Workload not"
                    f" admitted: {wl}"
                )
            # Kueue lifts the gates of an admitted group one pod at a time (an API call each):
            # a strict subset may be seen for a moment, never for long
            if 0 < len(ungated) < count and len(mine) == count:
                since = self.split_since.setdefault(group, now)
                self.longest_split = max(self.longest_split, now - since)
                assert now - since < 5.0, (
                    f"{group}: only {len(ungated)} of {count} pods ungated for {now - since:.1f} s"
                )
            else:
                self.split_since.pop(group, None)
            if active(workload):
                holding.append(group)
                self.admitted_at.setdefault(group, now)
            if (
                workload is not None
                and (condition(workload, "Finished") or {}).get("status") == "True"
            ):
                self.finished_at.setdefault(group, now)
            if len(running) == count:
                self.all_running_at.setdefault(group, now)
            if workload is not None and group not in self.admitted_at:
                self.waiting_reason[group] = kq.workload_admission(workload)
        assert len(holding) <= quota_groups, f"more groups hold quota than it fits: {holding}"

    def until(self, what: str, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.poll()
            time.sleep(0.1)


def test_two_2_pod_groups_against_a_quota_for_one_are_admitted_one_after_the_other_never_half(
    control_plane, kube_api, kueue, kueue_namespace, kueue_queue, kubelet_factory
):
    queue = kueue_queue(gpus=2)
    kubelet_factory(NodeSpec(gpus=8), mode="emulated", behaviour=lambda pod: EmulatedExit(0, 3.0))
    first = group_pods("trial-a-1", kueue_namespace, queue, 2)
    assert first[0]["metadata"]["labels"][kq.GROUP_NAME_LABEL] == "trial-a-1"
    assert first[0]["metadata"]["annotations"][kq.GROUP_COUNT_ANNOTATION] == "2"
    create_pods(kube_api, first)
    create_pods(kube_api, group_pods("trial-b-1", kueue_namespace, queue, 2))
    watch = GroupWatch(control_plane, kueue_namespace, {"trial-a-1": 2, "trial-b-1": 2})

    watch.until("both groups to finish", lambda: len(watch.finished_at) == 2, 120)

    assert watch.admitted_at["trial-a-1"] < watch.admitted_at["trial-b-1"]
    # the second group got the quota only once the first had finished with it
    assert watch.finished_at["trial-a-1"] <= watch.admitted_at["trial-b-1"]
    admitted, reason, message = watch.waiting_reason["trial-b-1"]
    assert not admitted and reason == "Pending", watch.waiting_reason
    assert "insufficient unused quota for nvidia.com/gpu" in message, message
    print(
        f"polls: {watch.polls}; longest partly-ungated moment: {watch.longest_split:.2f} s; "
        f"b waited {watch.admitted_at['trial-b-1'] - watch.admitted_at['trial-a-1']:.1f} s"
    )


def test_a_trial_kueue_has_not_admitted_waits_pending_with_kueues_reason(
    control_plane,
    kube_api,
    kueue,
    kueue_namespace,
    kueue_queue,
    kubelet_factory,
    s3_server,
    s3_bucket,
    operator_process,
):
    namespace = kueue_namespace
    queue = kueue_queue(gpus=2)
    sidecar = FakeSidecar(
        kube_api, s3_server.client(), s3_bucket, lambda c: [{"loss": c["x"]}], duration=8.0
    )
    kubelet_factory(NodeSpec(gpus=8), mode="emulated", behaviour=sidecar)
    s3_secret(kube_api, namespace, s3_server)
    body = experiment("queued", s3_bucket, s3_server.endpoint_url)
    body["spec"]["tuneConfig"].update(numSamples=2, maxConcurrentTrials=2)
    body["spec"]["resources"] = {"bundles": [{"CPU": 1, "GPU": 2}]}
    body["spec"]["queueName"] = queue
    create_experiment(kube_api, namespace, body)
    operator = operator_process()

    def waiting_trial() -> dict[str, Any] | None:
        for trial in trial_objects(kube_api, namespace):
            cond = condition(trial, kq.CONDITION)
            if (
                cond
                and cond["status"] == "False"
                and "insufficient unused quota" in cond["message"]
            ):
                return trial
        return None

    try:
        trial = wait_for(waiting_trial, 90, "a trial with Admitted=False and Kueue's reason")
    except AssertionError:
        print(operator.log.read_text()[-6000:])
        raise
    cond = condition(trial, kq.CONDITION)
    assert cond is not None and cond["reason"] == "Pending", cond
    assert "nvidia.com/gpu" in cond["message"]
    assert trial["status"]["phase"] == "PENDING"
    scheduled = condition(trial, "Scheduled")
    assert scheduled is not None and scheduled["reason"] == "SchedulingGated"

    def experiment_says_waiting() -> dict[str, Any] | None:
        exp = get_experiment(kube_api, namespace, "queued")
        cond = condition(exp, kq.EXPERIMENT_CONDITION)
        return exp if cond and cond["status"] == "False" else None

    exp = wait_for(experiment_says_waiting, 30, "TrialsAdmitted=False on the experiment")
    assert "insufficient unused quota" in condition(exp, kq.EXPERIMENT_CONDITION)["message"]
    assert condition(exp, "Reconciling")["reason"] == "TrialsWaitingForAdmission"

    # the quota fits one trial's pod: never two at once, and waiting is never an error
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    deadline = time.monotonic() + 120
    while phase_of(kube_api, namespace, "queued") != "Succeeded":
        assert time.monotonic() < deadline, operator.log.read_text()[-6000:]
        pods = core.list_namespaced_pod(namespace, label_selector="kubetune.io/experiment=queued")
        ungated = [
            p
            for p in pods.items
            if not p.spec.scheduling_gates and p.status.phase in ("Pending", "Running")
        ]
        assert len(ungated) <= 1, [p.metadata.name for p in ungated]
        time.sleep(0.2)
    trials = trial_objects(kube_api, namespace)
    assert [t["status"]["phase"] for t in trials] == ["TERMINATED", "TERMINATED"]
    assert all(not t["status"].get("failures") for t in trials)
    assert all(condition(t, kq.CONDITION)["status"] == "True" for t in trials)
    final = condition(get_experiment(kube_api, namespace, "queued"), kq.EXPERIMENT_CONDITION)
    assert final is not None and final["status"] == "True"


class History:
    """Every version of some pods and of the namespace's Workloads, from watches (a condition
    that lives for a moment before the next write replaces it is still seen)."""

    def __init__(self, kube_api: Any, namespace: str, selector: str) -> None:
        import threading

        from kubernetes import client, watch

        self.ended = ""
        self.pods: dict[str, list[dict[str, Any]]] = {}
        self.workloads: dict[str, list[dict[str, Any]]] = {}
        self.watches = [watch.Watch(), watch.Watch()]
        core, custom = client.CoreV1Api(kube_api), client.CustomObjectsApi(kube_api)
        streams = [
            (
                self.pods,
                self.watches[0],
                lambda w: w.stream(
                    core.list_namespaced_pod,
                    namespace,
                    label_selector=selector,
                    timeout_seconds=180,
                ),
            ),
            (
                self.workloads,
                self.watches[1],
                lambda w: w.stream(
                    custom.list_namespaced_custom_object,
                    "kueue.x-k8s.io",
                    "v1beta2",
                    namespace,
                    "workloads",
                    timeout_seconds=180,
                ),
            ),
        ]
        self.threads = [threading.Thread(target=self._follow, args=s, daemon=True) for s in streams]
        for t in self.threads:
            t.start()

    def _follow(self, into: dict[str, list[dict[str, Any]]], w: Any, stream: Any) -> None:
        try:
            for event in stream(w):
                obj = event.get("raw_object") or event["object"]
                if isinstance(obj, dict) and obj.get("metadata"):
                    into.setdefault(obj["metadata"]["name"], []).append(obj)
        except Exception as exc:  # the stream ends with the test (or the server): what it saw
            self.ended = repr(exc)  # is what the test asserts on

    def stop(self) -> None:
        for w in self.watches:
            w.stop()


def test_kueue_preempts_a_running_group_for_a_higher_priority_one_whole(
    control_plane, kube_api, kueue, kueue_namespace, kueue_queue, kubelet_factory
):
    cp = control_plane
    queue = kueue_queue(gpus=2, preemption=True)
    durations = {"low": 120.0, "high": 2.0}
    kubelet_factory(
        NodeSpec(gpus=8),
        mode="emulated",
        behaviour=lambda pod: EmulatedExit(0, durations[pod.name.split("-")[0]]),
    )
    suffix = queue[2:]
    for name, value in ((f"low-{suffix}", 10), (f"high-{suffix}", 1000)):
        wpc = {
            "apiVersion": API,
            "kind": "WorkloadPriorityClass",
            "metadata": {"name": name},
            "value": value,
        }
        status, out = cp.request(
            "POST", "/apis/kueue.x-k8s.io/v1beta2/workloadpriorityclasses", wpc
        )
        assert status == 201, out
    try:
        low = group_pods(
            "low", kueue_namespace, queue, 2, {"kueue.x-k8s.io/priority-class": f"low-{suffix}"}
        )
        history = History(kube_api, kueue_namespace, "kubetune.test/group=low")
        create_pods(kube_api, low)
        watch = GroupWatch(cp, kueue_namespace, {"low": 2, "high": 2})
        watch.until("the low group running", lambda: "low" in watch.all_running_at, 60)
        high = group_pods(
            "high", kueue_namespace, queue, 2, {"kueue.x-k8s.io/priority-class": f"high-{suffix}"}
        )
        create_pods(kube_api, high)
        watch.until("the high group to run and finish", lambda: "high" in watch.finished_at, 120)
        history.stop()
        # the low group was stopped long before its 120 s: preempted, and ended by Kueue itself
        # (a TerminationTarget condition, reason WorkloadEvictedDueToPreempted, on each pod, then
        # a delete: Kueue 0.17's pod integration sets no DisruptionTarget)
        for name in ("low-0", "low-1"):
            versions = history.pods.get(name) or []
            marked = [condition(v, "TerminationTarget") for v in versions]
            assert any(c and c["reason"] == "WorkloadEvictedDueToPreempted" for c in marked), (
                name,
                {(c["reason"], c.get("message")) for c in marked if c},
            )
            assert any(v["metadata"].get("deletionTimestamp") for v in versions), name
        evictions = [condition(v, "Evicted") for v in history.workloads.get("low") or []]
        assert any(c and c["status"] == "True" and c["reason"] == "Preempted" for c in evictions)
        assert watch.admitted_at["high"] > watch.admitted_at["low"]
    finally:
        for name in (f"low-{suffix}", f"high-{suffix}"):
            cp.request("DELETE", f"/apis/kueue.x-k8s.io/v1beta2/workloadpriorityclasses/{name}")


def test_pods_of_a_trial_still_waiting_for_admission_go_when_deleted(
    control_plane, kube_api, kueue, kueue_namespace, kueue_queue
):
    """Stopping a trial that Kueue has not admitted (suspend, the experiment's end) deletes
    its pods: Kueue's finalizer must not keep them (a single pod and a group)."""
    cp = control_plane
    queue = kueue_queue(gpus=0)  # nothing is ever admitted
    pods = group_pods("wait-1", kueue_namespace, queue, 2) + group_pods(
        "solo-1", kueue_namespace, queue, 1
    )
    create_pods(kube_api, pods)
    names = [p["metadata"]["name"] for p in pods]

    def all_gated_with_workloads() -> bool:
        found, by_pod = snapshot(cp, kueue_namespace)
        return len(found) == 3 and all(kq.gated(p) for p in found) and set(by_pod) >= set(names)

    wait_for(all_gated_with_workloads, 30, "three gated pods with their Workloads")
    for name in names:
        status, body = cp.request("DELETE", f"/api/v1/namespaces/{kueue_namespace}/pods/{name}")
        assert status == 200, body

    def gone() -> bool:
        status, body = cp.request("GET", f"/api/v1/namespaces/{kueue_namespace}/pods")
        return status == 200 and not body["items"]

    wait_for(gone, 30, "the deleted pods to go (Kueue dropping its finalizer)")
