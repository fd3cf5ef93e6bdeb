"""Trial attempts that end because of the cluster, not the trial: eviction, preemption
(a DisruptionTarget condition) and node loss.

Each is a preemption, not a failure: retried from the trial's latest checkpoint without
counting against ``failureConfig.maxFailures`` (disruption.py), with the reason in the
TuneTrial's status, a TrialPreempted Event and the counters in both statuses; the operator
runs as a subprocess against the real control plane (helpers and fixtures from
operator_helpers.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.cluster import operator_helpers
from tests.cluster.operator_helpers import (
    counting_experiment,
    create_experiment,
    get_experiment,
    phase_of,
    reported_three,
    retry_experiment,
    stored_results,
    trial_objects,
)
from tests.testenv.helpers import s3_secret, wait_for
from tests.testenv.kubelet import NodeSpec

# operator_helpers' fixtures, used here by name
crds = operator_helpers.crds
operator_process = operator_helpers.operator_process
LIVE_PHASES = ("Pending", "Running", "Unknown")


def experiment_pods(kube_api: Any, namespace: str, name: str) -> list[Any]:
    from kubernetes import client

    return (
        client.CoreV1Api(kube_api)
        .list_namespaced_pod(namespace, label_selector=f"kubetune.io/experiment={name}")
        .items
    )


def wait_succeeded(kube_api: Any, namespace: str, name: str, timeout: float, proc: Any) -> None:
    try:
        wait_for(lambda: phase_of(kube_api, namespace, name) == "Succeeded", timeout, "Succeeded")
    except AssertionError:
        print(proc.log.read_text()[-6000:])
        raise


def assert_resumed_from_checkpoint(
    kube_api: Any, namespace: str, s3_server: Any, bucket: str, name: str, reason: str
) -> dict[str, Any]:
    from kubernetes import client

    trial = trial_objects(kube_api, namespace)[0]
    assert trial["status"]["phase"] == "TERMINATED"
    assert trial["status"]["attempts"] == 2
    assert trial["status"]["failures"] == 0  # a preemption is not a failure
    assert trial["status"]["preemptions"] == 1
    assert trial["status"]["lastPreemption"]["reason"] == reason
    rows = stored_results(s3_server, bucket, f"{name}/{trial['metadata']['name']}/result.json")
    assert rows[-1]["training_iteration"] == 8
    assert rows[-1]["restored_from"] >= 1  # the second attempt started from a checkpoint
    assert trial["spec"]["restoreFrom"].startswith(f"s3://{bucket}/{name}/")
    experiment = get_experiment(kube_api, namespace, name)
    assert experiment["status"]["preemptions"] == 1
    events = client.CoreV1Api(kube_api).list_namespaced_event(namespace).items
    preempted = [e for e in events if e.reason == "TrialPreempted"]
    assert len(preempted) == 1 and reason in preempted[0].message, [e.message for e in events]
    return trial


def wait_resumed_running(kube_api: Any, namespace: str, began: float) -> float:
    """Seconds from ``began`` until the trial's second attempt runs."""

    def running() -> bool:
        status = (trial_objects(kube_api, namespace) or [{}])[0].get("status") or {}
        # TERMINATED too: a loaded operator may see the short second attempt only once done
        return status.get("attempts") == 2 and status.get("phase") in ("RUNNING", "TERMINATED")

    try:
        wait_for(running, 90, "the second attempt running")
    except AssertionError:
        print(json.dumps([t.get("status") for t in trial_objects(kube_api, namespace)])[:4000])
        raise
    return time.monotonic() - began


def test_an_evicted_trial_pod_is_retried_from_its_checkpoint(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    s3_secret(kube_api, namespace, s3_server)
    create_experiment(kube_api, namespace, retry_experiment("evict", s3_server, s3_bucket))
    operator_process()
    trial = wait_for(lambda: reported_three(kube_api, namespace), 60, "three results")
    first = trial["status"]["podName"]
    began = time.monotonic()
    client.CoreV1Api(kube_api).create_namespaced_pod_eviction(
        first,
        namespace,
        client.V1Eviction(metadata=client.V1ObjectMeta(name=first, namespace=namespace)),
    )
    took = wait_resumed_running(kube_api, namespace, began)
    print(f"eviction to the resumed attempt running: {took:.2f} s")
    wait_succeeded(kube_api, namespace, "evict", 60, operator_process)
    trial = assert_resumed_from_checkpoint(
        kube_api, namespace, s3_server, s3_bucket, "evict", "EvictionByEvictionAPI"
    )
    assert trial["status"]["podName"] != first


def disrupt(kube_api: Any, namespace: str, pod: str, reason: str) -> None:
    """What the scheduler (or Kueue) does to a victim: the condition, then a deletion."""
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    condition = {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": reason,
        "message": "preempted by the test, as kube-scheduler would",
        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    core.patch_namespaced_pod_status(
        pod, namespace, {"status": {"conditions": [condition]}}
    )  # strategic merge: conditions merge by type
    core.delete_namespaced_pod(pod, namespace)


def test_a_preempted_trial_pod_resumes_from_its_checkpoint_without_a_failure(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process
):
    s3_secret(kube_api, namespace, s3_server)
    body = retry_experiment("preempt", s3_server, s3_bucket)
    body["spec"]["runConfig"]["failureConfig"] = {"maxFailures": 0}  # a failure would end it
    create_experiment(kube_api, namespace, body)
    operator_process()
    trial = wait_for(lambda: reported_three(kube_api, namespace), 60, "three results")
    first = trial["status"]["podName"]
    began = time.monotonic()
    disrupt(kube_api, namespace, first, "PreemptionByScheduler")
    took = wait_resumed_running(kube_api, namespace, began)
    print(f"preemption to the resumed attempt running: {took:.2f} s")
    wait_succeeded(kube_api, namespace, "preempt", 60, operator_process)
    trial = assert_resumed_from_checkpoint(
        kube_api, namespace, s3_server, s3_bucket, "preempt", "PreemptionByScheduler"
    )
    assert trial["status"]["podName"] != first


def test_a_class_trial_preempted_mid_step_resumes_from_the_checkpoint_it_saved_on_sigterm(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process, tmp_path
):
    """No checkpointFrequency: the only checkpoint is the one the runner saves when SIGTERM
    comes in the middle of a step (the pod's grace period leaves time for it)."""
    marks = tmp_path / "marks"
    marks.touch()
    s3_secret(kube_api, namespace, s3_server)
    body = counting_experiment(
        "sigterm",
        s3_bucket,
        s3_server.endpoint_url,
        paramSpace={"marks": {"constant": str(marks)}, "step_s": {"constant": 0.8}},
        runConfig={"stop": {"training_iteration": 6}, "failureConfig": {"maxFailures": 0}},
        podTemplate={"terminationGracePeriodSeconds": 30},
    )
    body["spec"]["trainable"]["entrypoint"] = "tests.unit.sdk.stopping_trainables:SlowSteps"
    body["spec"]["tuneConfig"].update(numSamples=1)
    body["spec"]["tuneConfig"].pop("metric", None)
    body["spec"]["tuneConfig"].pop("mode", None)
    create_experiment(kube_api, namespace, body)
    operator_process()
    wait_for(lambda: "step 3" in marks.read_text(), 90, "step 3 under way")
    time.sleep(0.2)
    first = trial_objects(kube_api, namespace)[0]["status"]["podName"]
    began = time.monotonic()
    disrupt(kube_api, namespace, first, "PreemptionByScheduler")
    took = wait_resumed_running(kube_api, namespace, began)
    print(f"class trial: preemption mid-step to the resumed attempt running: {took:.2f} s")
    wait_succeeded(kube_api, namespace, "sigterm", 90, operator_process)
    trial = trial_objects(kube_api, namespace)[0]
    assert trial["status"]["failures"] == 0 and trial["status"]["preemptions"] == 1
    rows = stored_results(s3_server, s3_bucket, f"sigterm/{trial['metadata']['name']}/result.json")
    assert [r["n"] for r in rows] == [1, 2, 3, 4, 5, 6]  # step 3 finished, none repeated
    assert rows[2]["checkpoint_dir_name"]  # saved on SIGTERM with step 3's result
    assert [r["checkpoint_dir_name"] for r in rows[:2]] == [None, None]
    assert rows[3]["restored_from"] == 3
    assert [r["training_iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    steps = marks.read_text().splitlines()
    assert steps == [f"step {i}" for i in (1, 2, 3, 4, 5, 6)]


def test_a_trial_on_a_lost_node_is_retried_on_another_node_from_its_checkpoint(
    kube_api, namespace, kubelet_factory, s3_server, s3_bucket, operator_process
):
    """The node's kubelet dies mid-trial: the node-lifecycle controller marks the node
    unreachable (15 s without a Lease renewal, see tests/testenv/controlplane.py), taint-based
    eviction deletes the pod after its tolerationSeconds, nobody confirms the deletion, and the
    operator force-deletes it past its grace period and runs the next attempt elsewhere."""
    doomed = kubelet_factory(NodeSpec(name=f"kt-doomed-{namespace[-6:]}"))
    s3_secret(kube_api, namespace, s3_server)
    evict_fast = [
        {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}
        for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
    ]
    body = retry_experiment(
        "loss",
        s3_server,
        s3_bucket,
        podTemplate={"tolerations": evict_fast, "terminationGracePeriodSeconds": 5},
    )
    create_experiment(kube_api, namespace, body)
    operator_process()
    trial = wait_for(lambda: reported_three(kube_api, namespace), 60, "three results")
    first = trial["status"]["podName"]
    (pod,) = [p for p in experiment_pods(kube_api, namespace, "loss") if p.metadata.name == first]
    assert pod.spec.node_name == doomed.node_names[0]
    # somewhere to go, started now so that attempt 1 ran on `doomed` (and, with no Ready node
    # at all, the node-lifecycle controller would suspect itself and evict nothing)
    healthy = kubelet_factory()
    began = time.monotonic()
    doomed.crash()
    wait_succeeded(kube_api, namespace, "loss", 90, operator_process)
    took = time.monotonic() - began
    trial = assert_resumed_from_checkpoint(
        kube_api, namespace, s3_server, s3_bucket, "loss", "NodeLost"
    )
    assert trial["status"]["podName"] != first
    pods = experiment_pods(kube_api, namespace, "loss")
    assert first not in [p.metadata.name for p in pods]  # force-deleted, not left Terminating
    assert [p.metadata.name for p in pods if p.status.phase in LIVE_PHASES] == []
    (second,) = [p for p in pods if p.metadata.name == trial["status"]["podName"]]
    assert second.spec.node_name == healthy.node_names[0]
    # unreachable after 15 s, evicted 1 s later, force-deleted 5 + 15 s after that, then the
    # rest of the trial: well within a minute
    assert took < 75, took
