"""Multi-worker trials on the real control plane with process-mode pods and real sidecars:
a 3-worker TorchTrainer-style trial (tests/allreduce.py) whose workers all-reduce over TCP
with nothing but the rendezvous environment, one pod per worker on different nodes; killing
a worker's pod restarts every worker from the trial's latest checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.cluster import operator_helpers
from tests.cluster.operator_helpers import (
    GROUP,
    VERSION,
    allreduce_experiment,
    create_experiment,
    get_experiment,
    phase_of,
    stored_results,
    trial_objects,
    wait_succeeded,
)
from tests.testenv.helpers import s3_secret, wait_for
from tests.testenv.kubelet import NodeSpec

# operator_helpers' fixtures, used here by name
crds = operator_helpers.crds
operator_process = operator_helpers.operator_process


def _pods(kube_api: Any, namespace: str) -> list[Any]:
    from kubernetes import client

    return client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items


def _env(pod: Any) -> dict[str, str]:
    trial = next(c for c in pod.spec.containers if c.name == "trial")
    return {e.name: e.value for e in trial.env or [] if e.value is not None}


@pytest.mark.parametrize(("strategy", "nodes"), [("SPREAD", 3), ("PACK", 1)])
def test_three_workers_all_reduce_over_tcp(
    strategy, nodes, kube_api, namespace, kubelet_factory, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    # without the anti-affinity the scheduler would put all three on the big node (its
    # resource scores favour it), and it has room for them
    kubelet = kubelet_factory(NodeSpec(cpu="64"), NodeSpec(cpu="2"), NodeSpec(cpu="2"))
    s3_secret(kube_api, namespace, s3_server)
    body = allreduce_experiment(
        "ddp", s3_bucket, s3_server.endpoint_url, strategy, sleep={"constant": 1.0}
    )
    create_experiment(kube_api, namespace, body)
    operator_process()
    seen: dict[str, Any] = {}

    def three_running() -> bool:
        for pod in _pods(kube_api, namespace):
            seen[pod.metadata.name] = pod
        (trial,) = trial_objects(kube_api, namespace) or [{}]
        return ((trial.get("status") or {}).get("workers") or {}).get("ready") == "3/3"

    wait_for(three_running, 60, "status.workers.ready 3/3")
    wait_succeeded(kube_api, namespace, "ddp", 120, operator_process)
    (trial,) = trial_objects(kube_api, namespace)
    name = trial["metadata"]["name"]
    pods = sorted(seen.values(), key=lambda p: int(p.metadata.labels["kubetune.io/rank"]))
    assert [p.metadata.name for p in pods] == [f"{name}-1", f"{name}-1-w1", f"{name}-1-w2"]
    assert [_env(p)["RANK"] for p in pods] == ["0", "1", "2"]
    assert {_env(p)["WORLD_SIZE"] for p in pods} == {"3"}
    # SPREAD: each worker on its own node (the preferred anti-affinity wins over the big
    # node's resource scores); PACK: all on one node (the preferred pod affinity)
    assert len({p.spec.node_name for p in pods}) == nodes
    assert {p.spec.node_name for p in pods} <= set(kubelet.node_names)
    rows = stored_results(s3_server, s3_bucket, f"ddp/{name}/result.json")
    # rank 0's reports alone, each the all-reduced sum of 10 * (1 + 2 + 3)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {r["sum"] for r in rows} == {60.0}
    assert {r["reporter_rank"] for r in rows} == {0}
    assert trial["status"]["phase"] == "TERMINATED"
    assert trial["status"]["workers"]["total"] == 3
    status = get_experiment(kube_api, namespace, "ddp")["status"]
    assert status["bestTrial"]["metric"] == 60.0

    # deleting the experiment removes every worker's pod
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuneexperiments", "ddp"
    )
    wait_for(lambda: not _pods(kube_api, namespace), 60, "every pod garbage-collected")


@pytest.fixture
def three_workers_reported_three(
    kube_api, namespace, kubelet_factory, s3_server, s3_bucket, operator_process
) -> Callable[..., str]:
    """``start(experiment, strategy, run_config=None)`` runs a 12-step all-reduce experiment
    of one 3-worker trial (``strategy``) on three 4-CPU nodes until its first attempt has
    reported three results, and returns the trial's name."""

    def start(experiment: str, strategy: str, run_config: dict[str, Any] | None = None) -> str:
        kubelet_factory(NodeSpec(cpu="4"), NodeSpec(cpu="4"), NodeSpec(cpu="4"))
        s3_secret(kube_api, namespace, s3_server)
        body = allreduce_experiment(
            experiment,
            s3_bucket,
            s3_server.endpoint_url,
            strategy,
            steps={"constant": 12},
            sleep={"constant": 0.5},
        )
        if run_config is not None:
            body["spec"]["runConfig"] = run_config
        create_experiment(kube_api, namespace, body)
        operator_process()

        def reported(n: int) -> bool:
            trials = trial_objects(kube_api, namespace)
            report = ((trials[0].get("status") or {}).get("report") or {}) if trials else {}
            return (report.get("iteration") or 0) >= n

        wait_for(lambda: reported(3), 90, "three results of the first attempt")
        (trial,) = trial_objects(kube_api, namespace)
        return str(trial["metadata"]["name"])

    return start


def test_killing_one_worker_restarts_all_workers_from_the_checkpoint(
    three_workers_reported_three, kube_api, namespace, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    name = three_workers_reported_three("kill", "STRICT_SPREAD")
    core = client.CoreV1Api(kube_api)
    core.delete_namespaced_pod(f"{name}-1-w1", namespace, grace_period_seconds=0)
    wait_succeeded(kube_api, namespace, "kill", 180, operator_process)
    (trial,) = trial_objects(kube_api, namespace)
    assert trial["status"]["attempts"] == 2 and trial["status"]["failures"] == 1
    second = {p.metadata.name for p in _pods(kube_api, namespace)} & {
        f"{name}-2",
        f"{name}-2-w1",
        f"{name}-2-w2",
    }
    assert second, "the second attempt's pods"
    rows = stored_results(s3_server, s3_bucket, f"kill/{name}/result.json")
    steps = [r["step"] for r in rows]
    assert steps[-1] == 12 and {r["sum"] for r in rows} == {60.0}
    restart = next(i for i, r in enumerate(rows) if r["restored_from"] > 0)
    # every worker resumed from the first attempt's checkpoint (the workers sum where they
    # resumed), and the step after it comes next
    assert rows[restart]["restored_from"] >= 3
    assert rows[restart]["restored_total"] == 3 * rows[restart]["restored_from"]
    assert rows[restart]["step"] == rows[restart]["restored_from"] + 1
    assert {r["restored_from"] for r in rows[restart:]} == {rows[restart]["restored_from"]}


def test_a_worker_evicted_through_the_eviction_api_restarts_every_worker_without_a_failure(
    three_workers_reported_three, kube_api, namespace, s3_server, s3_bucket, operator_process
):
    """An eviction (kubectl drain, the autoscaler) of rank 1 is the cluster's doing: the whole
    trial restarts from its latest checkpoint and ``failures`` stays 0 (maxFailures 0 here:
    a failure would end the trial)."""
    from kubernetes import client

    name = three_workers_reported_three(
        "evict", "SPREAD", run_config={"failureConfig": {"maxFailures": 0}}
    )
    core = client.CoreV1Api(kube_api)
    worker = f"{name}-1-w1"
    core.create_namespaced_pod_eviction(
        worker,
        namespace,
        client.V1Eviction(metadata=client.V1ObjectMeta(name=worker, namespace=namespace)),
    )
    # the trial's phase as it goes: the second attempt must show RUNNING while it runs
    phases: list[tuple[Any, Any]] = []
    deadline = time.monotonic() + 180
    while phase_of(kube_api, namespace, "evict") != "Succeeded":
        assert time.monotonic() < deadline, f"not Succeeded; trial phases: {phases}"
        (trial,) = trial_objects(kube_api, namespace)
        seen = (
            (trial.get("status") or {}).get("phase"),
            (trial.get("status") or {}).get("attempts"),
        )
        if not phases or phases[-1] != seen:
            phases.append(seen)
        time.sleep(0.2)
    assert ("RUNNING", 2) in phases, phases
    # the trial's last write may follow the experiment's
    wait_for(
        lambda: trial_objects(kube_api, namespace)[0]["status"].get("phase") == "TERMINATED",
        10,
        "the trial TERMINATED",
    )
    (trial,) = trial_objects(kube_api, namespace)
    status = trial["status"]
    assert status["phase"] == "TERMINATED", status
    assert status["attempts"] == 2 and status["failures"] == 0, status
    assert status["preemptions"] == 1, status
    assert status["lastPreemption"]["reason"] == "EvictionByEvictionAPI", status
    assert status["lastPreemption"]["pod"] == worker, status
    rows = stored_results(s3_server, s3_bucket, f"evict/{name}/result.json")
    assert rows[-1]["step"] == 12 and {r["sum"] for r in rows} == {60.0}
    restart = next(i for i, r in enumerate(rows) if r["restored_from"] > 0)
    # every worker resumed from the first attempt's checkpoint
    assert rows[restart]["restored_from"] >= 3
    assert rows[restart]["restored_total"] == 3 * rows[restart]["restored_from"]
    events = core.list_namespaced_event(namespace).items
    preempted = [e for e in events if e.reason == "TrialPreempted"]
    assert len(preempted) == 1 and worker in preempted[0].message, [e.message for e in events]
