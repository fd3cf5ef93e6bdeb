"""Multi-pod trials, Kueue and preemption together, through the real operator (issue 16).

- Two 2-pod trials of one experiment against a ClusterQueue whose GPU quota fits one of them:
  each attempt is one Kueue pod group, admitted whole, one after the other; the waiting trial
  shows ``Admitted=False`` with Kueue's reason; both finish without a failure.
- Kueue preempting a running operator trial (one pod, or a 2-pod group whose workers
  all-reduce over TCP) for a higher-priority experiment's trial (a WorkloadPriorityClass
  each, through the podTemplate's label): the low trial is retried from
  its latest checkpoint once the quota is free again, ``failures`` 0, ``preemptions`` 1, a
  TrialPreempted Event.

Kueue, the scheduler and the API server are real (tests/testenv/kueue.py); the first test's
pods run in the test kubelet's emulated mode, the second's as processes with real sidecars.
Each prints its figures (how long a group was seen half-ungated; preemption to resumed).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubetune_operator import kueue as kq

from tests.cluster import operator_helpers
from tests.cluster.operator_helpers import (
    FakeSidecar,
    allreduce_experiment,
    create_experiment,
    experiment,
    get_experiment,
    phase_of,
    retry_experiment,
    trial_objects,
)
from tests.testenv.helpers import condition, s3_secret, wait_for
from tests.testenv.kubelet import NodeSpec
from tests.testenv.kubelet_emulated import EmulatedExit
from tests.testenv.kueue import API

# fixtures, used by name
crds = operator_helpers.crds
operator_process = operator_helpers.operator_process
LIVE = ("Pending", "Running")
RANK = "kubetune.io/rank"


class RankZeroReports:
    """Emulated pods of multi-pod trials: rank 0 reports as the sidecar would, the other
    ranks just run for as long."""

    def __init__(self, sidecar: FakeSidecar) -> None:
        self.sidecar = sidecar

    def __call__(self, epod: Any) -> Any:
        if (epod.pod["metadata"].get("labels") or {}).get(RANK, "0") != "0":
            return EmulatedExit(0, self.sidecar.duration)
        return self.sidecar(epod)


class AttemptWatch:
    """Polls an experiment's pods; at every poll: no attempt (a Kueue pod group) has a strict
    subset of its pods ungated for long, and no more live ungated groups than the quota fits."""

    def __init__(self, kube_api: Any, namespace: str, name: str) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(kube_api)
        self.namespace, self.selector = namespace, f"kubetune.io/experiment={name}"
        self.split_since: dict[str, float] = {}
        self.longest_split = 0.0
        self.ungated_at: dict[str, float] = {}
        self.polls = 0

    def poll(self, quota_groups: int = 1) -> None:
        now = time.monotonic()
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items
        self.polls += 1
        groups: dict[str, list[Any]] = {}
        for pod in pods:
            group = pod.metadata.labels.get(kq.GROUP_NAME_LABEL)
            assert group, f"pod {pod.metadata.name} of a 2-pod trial is in no Kueue pod group"
            count = (pod.metadata.annotations or {}).get(kq.GROUP_COUNT_ANNOTATION)
            assert count == "2", (pod.metadata.name, count)
            groups.setdefault(group, []).append(pod)
        holding = []
        for group, mine in groups.items():
            ungated = [p for p in mine if not p.spec.scheduling_gates]
            live = [
                p for p in ungated if p.status.phase in LIVE and not p.metadata.deletion_timestamp
            ]
            if live:
                holding.append(group)
                self.ungated_at.setdefault(group, now)
            if len(mine) == 2 and len(ungated) == 1:
                since = self.split_since.setdefault(group, now)
                self.longest_split = max(self.longest_split, now - since)
                assert now - since < 5.0, f"{group}: 1 of 2 pods ungated for {now - since:.1f} s"
            else:
                self.split_since.pop(group, None)
        assert len(holding) <= quota_groups, f"more groups ungated than the quota fits: {holding}"


def test_two_2_pod_trials_through_kueue_are_admitted_one_after_the_other_never_half(
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
    queue = kueue_queue(gpus=2)  # one 2-pod trial of one GPU per pod
    sidecar = FakeSidecar(
        kube_api, s3_server.client(), s3_bucket, lambda c: [{"loss": c["x"]}], duration=6.0
    )
    kubelet_factory(NodeSpec(gpus=8), mode="emulated", behaviour=RankZeroReports(sidecar))
    s3_secret(kube_api, namespace, s3_server)
    body = experiment("gang", s3_bucket, s3_server.endpoint_url)
    body["spec"]["tuneConfig"].update(numSamples=2, maxConcurrentTrials=2)
    body["spec"]["resources"] = {
        "bundles": [{}, {"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1}],
        "workers": 2,
    }
    body["spec"]["queueName"] = queue
    create_experiment(kube_api, namespace, body)
    operator = operator_process()
    watch = AttemptWatch(kube_api, namespace, "gang")
    waited: dict[str, dict[str, Any]] = {}  # trial -> its Admitted=False condition, first seen
    deadline = time.monotonic() + 150
    while phase_of(kube_api, namespace, "gang") != "Succeeded":
        assert time.monotonic() < deadline, operator.log.read_text()[-6000:]
        watch.poll()
        for trial in trial_objects(kube_api, namespace):
            cond = condition(trial, kq.CONDITION)
            if cond and cond["status"] == "False":
                waited.setdefault(trial["metadata"]["name"], cond)
                assert trial["status"]["phase"] == "PENDING", trial["status"]
        time.sleep(0.2)
    trials = trial_objects(kube_api, namespace)
    assert len(trials) == 2
    for trial in trials:
        status = trial["status"]
        assert status["phase"] == "TERMINATED", status
        assert not status.get("failures"), status
        assert status["attempts"] == 1, status
        assert status["workers"]["total"] == 2, status
        assert condition(trial, kq.CONDITION)["status"] == "True"
    # both groups were ungated, one after the other (the poll asserted never both at once)
    assert len(watch.ungated_at) == 2, watch.ungated_at
    # the trial that waited said why, in Kueue's words
    assert waited, "no trial was ever seen waiting for admission"
    for name, cond in waited.items():
        assert cond["reason"] in ("Pending", "WorkloadNotCreated"), (name, cond)
    assert any(
        "insufficient unused quota for nvidia.com/gpu" in c["message"] for c in waited.values()
    ), waited
    final = condition(get_experiment(kube_api, namespace, "gang"), kq.EXPERIMENT_CONDITION)
    assert final is not None and final["status"] == "True", final
    first, second = sorted(watch.ungated_at.values())
    print(
        f"polls: {watch.polls}; longest half-ungated moment: {watch.longest_split:.2f} s; "
        f"the second group was ungated {second - first:.1f} s after the first"
    )


def priority_classes(cp: Any, suffix: str) -> list[str]:
    names = []
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
        names.append(name)
    return names


@pytest.mark.parametrize("workers", [1, 2])
def test_kueue_preempts_an_operator_trial_it_resumes_from_its_checkpoint_without_a_failure(
    workers,
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
    from kubernetes import client

    cp, namespace = control_plane, kueue_namespace
    # the quota fits the low trial (one GPU a pod), and the high one only in its place
    queue = kueue_queue(gpus=workers, preemption=True)
    kubelet_factory(NodeSpec(gpus=4, cpu="8"))
    s3_secret(kube_api, namespace, s3_server)
    low_class, high_class = priority_classes(cp, queue[2:])
    try:
        if workers == 1:
            low = retry_experiment("low", s3_server, s3_bucket)
            low["spec"]["paramSpace"]["n"] = {"constant": 14}
            low["spec"]["resources"] = {"bundles": [{"CPU": 1, "GPU": 1}]}
        else:  # a 2-pod trial whose workers all-reduce over TCP: one Kueue pod group
            low = allreduce_experiment(
                "low",
                s3_bucket,
                s3_server.endpoint_url,
                "PACK",
                steps={"constant": 14},
                sleep={"constant": 0.4},
            )
            low["spec"]["resources"] = {
                "bundles": [{}, {"CPU": 0.5, "GPU": 1}, {"CPU": 0.5, "GPU": 1}],
                "workers": 2,
            }
        low["spec"]["runConfig"] = {"failureConfig": {"maxFailures": 0}}  # a failure ends it
        low["spec"]["queueName"] = queue
        low["spec"]["podTemplate"] = {
            "metadata": {"labels": {"kueue.x-k8s.io/priority-class": low_class}}
        }
        create_experiment(kube_api, namespace, low)
        operator = operator_process()

        def low_reported_three() -> dict[str, Any] | None:
            for trial in trial_objects(kube_api, namespace):
                report = (trial.get("status") or {}).get("report") or {}
                if trial["spec"]["experiment"] == "low" and (report.get("iteration") or 0) >= 3:
                    return trial if report.get("latestCheckpoint") else None
            return None

        trial = wait_for(low_reported_three, 90, "the low trial's three results")
        first_pod = trial["status"]["podName"]
        high = retry_experiment("high", s3_server, s3_bucket)
        high["spec"]["paramSpace"]["n"] = {"constant": 3}
        high["spec"]["resources"] = {"bundles": [{"CPU": 1, "GPU": workers}]}
        high["spec"]["queueName"] = queue
        high["spec"]["podTemplate"] = {
            "metadata": {"labels": {"kueue.x-k8s.io/priority-class": high_class}}
        }
        began = time.monotonic()
        create_experiment(kube_api, namespace, high)

        def low_status() -> dict[str, Any]:
            trials = trial_objects(kube_api, namespace)
            return next(t for t in trials if t["spec"]["experiment"] == "low").get("status") or {}

        wait_for(lambda: low_status().get("preemptions") == 1, 60, "the low trial preempted")
        preempted_after = time.monotonic() - began
        wait_for(
            lambda: phase_of(kube_api, namespace, "high") == "Succeeded", 90, "high to succeed"
        )
        high_done = time.monotonic() - began
        wait_for(
            lambda: low_status().get("attempts") == 2 and low_status().get("phase") == "RUNNING",
            90,
            "the low trial's second attempt running",
        )
        resumed_after = time.monotonic() - began
        try:
            wait_for(
                lambda: phase_of(kube_api, namespace, "low") == "Succeeded", 90, "low to succeed"
            )
        except AssertionError:
            print(operator.log.read_text()[-6000:])
            raise
        status = low_status()
        assert status["phase"] == "TERMINATED", status
        assert status["attempts"] == 2, status
        assert status["failures"] == 0, status  # a preemption is not a failure
        assert status["preemptions"] == 1, status
        reason = status["lastPreemption"]["reason"]
        assert reason in ("WorkloadEvictedDueToPreempted", "StoppedByKueue"), status
        assert status["lastPreemption"]["pod"].startswith(first_pod), status  # rank 0 or 1
        assert status["podName"] != first_pod
        low_trial = next(
            t for t in trial_objects(kube_api, namespace) if t["spec"]["experiment"] == "low"
        )
        rows = operator_helpers.stored_results(
            s3_server, s3_bucket, f"low/{low_trial['metadata']['name']}/result.json"
        )
        assert rows[-1]["training_iteration"] == 14
        assert rows[-1]["restored_from"] >= 3  # the second attempt started from a checkpoint
        if workers == 2:  # every worker resumed from it, and summed right
            assert {r["sum"] for r in rows} == {30.0}
            assert rows[-1]["restored_total"] == 2 * rows[-1]["restored_from"]
        assert low_trial["spec"]["restoreFrom"].startswith(f"s3://{s3_bucket}/low/")
        assert get_experiment(kube_api, namespace, "low")["status"]["preemptions"] == 1
        events = client.CoreV1Api(kube_api).list_namespaced_event(namespace).items
        preempted = [e for e in events if e.reason == "TrialPreempted"]
        assert len(preempted) == 1 and reason in preempted[0].message, [e.message for e in events]
        print(
            f"high created -> low preempted: {preempted_after:.1f} s; high done: "
            f"{high_done:.1f} s; low's resumed attempt running: {resumed_after:.1f} s"
        )
    finally:
        for name in (low_class, high_class):
            cp.request("DELETE", f"/apis/kueue.x-k8s.io/v1beta2/workloadpriorityclasses/{name}")
