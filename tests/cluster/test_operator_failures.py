"""Trial attempts that end because of the cluster, not the trial: eviction and node loss.

Both must count as a failure of the attempt and be retried from the trial's latest
checkpoint, up to ``failureConfig.maxFailures``; the operator runs as a subprocess against the
real control plane (helpers and fixtures from test_operator.py).
"""

from __future__ import annotations

import time
from typing import Any

from tests.cluster import test_operator
from tests.cluster.test_operator import (
    counting_experiment,
    create_experiment,
    phase_of,
    stored_results,
    trial_objects,
)
from tests.testenv.helpers import s3_secret, wait_for
from tests.testenv.kubelet import NodeSpec

# test_operator's fixtures, used here by name
crds = test_operator.crds
operator_process = test_operator.operator_process
LIVE_PHASES = ("Pending", "Running", "Unknown")


def retry_experiment(name: str, s3_server: Any, bucket: str, **spec: Any) -> dict[str, Any]:
    body = counting_experiment(
        name,
        bucket,
        s3_server.endpoint_url,
        paramSpace={"x": {"constant": 1.0}, "n": {"constant": 8}, "sleep": {"constant": 0.4}},
        runConfig={"failureConfig": {"maxFailures": 2}},
        **spec,
    )
    body["spec"]["tuneConfig"].update(numSamples=1)
    return body


def reported_three(kube_api: Any, namespace: str) -> dict[str, Any] | None:
    """The only trial, once it has reported three results and a checkpoint."""
    trials = trial_objects(kube_api, namespace)
    report = ((trials[0].get("status") or {}).get("report") or {}) if trials else {}
    if (report.get("iteration") or 0) >= 3 and report.get("latestCheckpoint"):
        return trials[0]
    return None


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
    kube_api: Any, namespace: str, s3_server: Any, bucket: str, name: str
) -> dict[str, Any]:
    trial = trial_objects(kube_api, namespace)[0]
    assert trial["status"]["phase"] == "TERMINATED"
    assert trial["status"]["attempts"] == 2
    assert trial["status"]["failures"] == 1
    rows = stored_results(s3_server, bucket, f"{name}/{trial['metadata']['name']}/result.json")
    assert rows[-1]["training_iteration"] == 8
    assert rows[-1]["restored_from"] >= 1  # the second attempt started from a checkpoint
    assert trial["spec"]["restoreFrom"].startswith(f"s3://{bucket}/{name}/")
    return trial


def test_an_evicted_trial_pod_is_retried_from_its_checkpoint(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    s3_secret(kube_api, namespace, s3_server)
    create_experiment(kube_api, namespace, retry_experiment("evict", s3_server, s3_bucket))
    operator_process()
    trial = wait_for(lambda: reported_three(kube_api, namespace), 60, "three results")
    first = trial["status"]["podName"]
    client.CoreV1Api(kube_api).create_namespaced_pod_eviction(
        first,
        namespace,
        client.V1Eviction(metadata=client.V1ObjectMeta(name=first, namespace=namespace)),
    )
    wait_succeeded(kube_api, namespace, "evict", 60, operator_process)
    trial = assert_resumed_from_checkpoint(kube_api, namespace, s3_server, s3_bucket, "evict")
    assert trial["status"]["podName"] != first


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
    trial = assert_resumed_from_checkpoint(kube_api, namespace, s3_server, s3_bucket, "loss")
    assert trial["status"]["podName"] != first
    pods = experiment_pods(kube_api, namespace, "loss")
    assert first not in [p.metadata.name for p in pods]  # force-deleted, not left Terminating
    assert [p.metadata.name for p in pods if p.status.phase in LIVE_PHASES] == []
    (second,) = [p for p in pods if p.metadata.name == trial["status"]["podName"]]
    assert second.spec.node_name == healthy.node_names[0]
    # unreachable after 15 s, evicted 1 s later, force-deleted 5 + 15 s after that, then the
    # rest of the trial: well within a minute
    assert took < 75, took
