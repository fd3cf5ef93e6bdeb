"""The operator against the real control plane: kubetune-operator runs as a subprocess.

Here: an experiment to Succeeded and its garbage collection, the refusals that stall it, an
operator killed mid-experiment, GPU placement, the probes. Checkpoints, ASHA and suspend are in
test_operator_checkpoints.py, the examples against local mode in test_operator_examples.py; the
fixtures and helpers in operator_helpers.py.
"""

from __future__ import annotations

import json

import pytest

from tests.cluster import operator_helpers
from tests.cluster.operator_helpers import (
    GROUP,
    VERSION,
    FakeSidecar,
    create_experiment,
    experiment,
    get_experiment,
    phase_of,
    start_operator,
    stop_operator,
    trial_objects,
    wait_succeeded,
)
from tests.testenv.helpers import s3_secret, wait_for

crds = operator_helpers.crds  # fixtures
operator_process = operator_helpers.operator_process


def test_experiment_runs_to_succeeded_with_the_best_trial(
    kube_api, namespace, kubelet_factory, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    sidecar = FakeSidecar(
        kube_api,
        s3_server.client(),
        s3_bucket,
        lambda config: [{"loss": (config["x"] - 3) ** 2, "done": True}],
    )
    kubelet_factory(mode="emulated", behaviour=sidecar)
    s3_secret(kube_api, namespace, s3_server)
    create_experiment(kube_api, namespace, experiment("quad", s3_bucket, s3_server.endpoint_url))
    proc = operator_process()
    wait_succeeded(kube_api, namespace, "quad", 90, operator_process)
    assert proc.poll() is None
    status = get_experiment(kube_api, namespace, "quad")["status"]
    assert status["trials"]["total"] == 6 and status["trials"]["terminated"] == 6
    trials = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "tunetrials"
    )["items"]
    assert len(trials) == 6
    losses = {t["metadata"]["name"]: (t["spec"]["config"]["x"] - 3) ** 2 for t in trials}
    best = min(losses, key=losses.__getitem__)
    assert status["bestTrial"]["name"] == best
    assert status["bestTrial"]["metric"] == pytest.approx(losses[best])
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Stalled"]["status"] == "False"
    assert "trials" not in json.dumps(status["bestTrial"])
    state = s3_server.client().get_object(Bucket=s3_bucket, Key="quad/experiment_state.json")
    assert json.loads(state["Body"].read())["experiment"] == "quad"

    # Deleting the experiment removes its trials and pods (owner references).
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuneexperiments", "quad"
    )
    core = client.CoreV1Api(kube_api)
    custom = client.CustomObjectsApi(kube_api)
    wait_for(
        lambda: (
            not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "tunetrials")[
                "items"
            ]
            and not core.list_namespaced_pod(namespace).items
        ),
        60,
        "trials and pods to be garbage-collected",
    )


def test_missing_storage_secret_stalls_and_creates_nothing(
    kube_api, namespace, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    body = experiment("nosecret", s3_bucket, s3_server.endpoint_url)
    body["spec"]["storage"]["secretName"] = "missing"
    create_experiment(kube_api, namespace, body)
    operator_process()
    wait_for(lambda: phase_of(kube_api, namespace, "nosecret") == "Failed", 60, "Stalled")
    status = get_experiment(kube_api, namespace, "nosecret")["status"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert "spec.storage.secretName" in stalled["message"]
    assert "missing" in stalled["message"]
    trials = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "tunetrials"
    )["items"]
    assert trials == []
    assert client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items == []


def test_a_worker_pod_no_node_can_offer_stalls_naming_the_field(
    kube_api, namespace, s3_server, s3_bucket, operator_process
):
    s3_secret(kube_api, namespace, s3_server)
    body = experiment("spread", s3_bucket, s3_server.endpoint_url)
    body["spec"]["resources"] = {"bundles": [{"CPU": 1}, {"FPGA": 1}], "strategy": "SPREAD"}
    create_experiment(kube_api, namespace, body)
    operator_process()
    wait_for(lambda: phase_of(kube_api, namespace, "spread") == "Failed", 60, "Stalled")
    status = get_experiment(kube_api, namespace, "spread")["status"]
    assert "spec.resources: bundle key 'FPGA'" in status["message"]


def test_operator_sigkilled_mid_experiment_finishes_without_duplicates(
    kube_api, namespace, kubelet_factory, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    sidecar = FakeSidecar(
        kube_api,
        s3_server.client(),
        s3_bucket,
        lambda config: [{"loss": (config["x"] - 3) ** 2}],
        duration=1.5,
    )
    kubelet_factory(mode="emulated", behaviour=sidecar)
    s3_secret(kube_api, namespace, s3_server)
    body = experiment("restart", s3_bucket, s3_server.endpoint_url)
    body["spec"]["tuneConfig"].update(numSamples=8, maxConcurrentTrials=2)
    create_experiment(kube_api, namespace, body)
    first = operator_process()

    def terminated() -> int:
        status = get_experiment(kube_api, namespace, "restart").get("status") or {}
        return int((status.get("trials") or {}).get("terminated") or 0)

    wait_for(lambda: terminated() >= 3, 90, "three trials done")
    first.kill()
    first.wait()
    operator_process()
    try:
        wait_for(lambda: phase_of(kube_api, namespace, "restart") == "Succeeded", 120, "done")
    except AssertionError:
        print(operator_process.log.read_text()[-5000:])
        raise
    status = get_experiment(kube_api, namespace, "restart")["status"]
    trials = trial_objects(kube_api, namespace)
    assert status["trials"]["total"] == 8 == len(trials)
    assert status["trials"]["terminated"] == 8
    assert len({t["spec"]["trialId"] for t in trials}) == 8
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items
    owners = {t["metadata"]["name"] for t in trials}
    assert all(p.metadata.owner_references[0].name in owners for p in pods)  # no orphans
    assert all(p.status.phase in ("Succeeded", "Failed") for p in pods)
    losses = {t["metadata"]["name"]: (t["spec"]["config"]["x"] - 3) ** 2 for t in trials}
    assert status["bestTrial"]["name"] == min(losses, key=losses.__getitem__)


def test_gpu_bundles_land_on_gpu_nodes_and_oversized_trials_wait_with_a_reason(
    kube_api, namespace, kubelet_factory, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    from tests.testenv.kubelet import NodeSpec

    sidecar = FakeSidecar(
        kube_api, s3_server.client(), s3_bucket, lambda c: [{"loss": 1.0}], duration=0.5
    )
    kubelet = kubelet_factory(NodeSpec(), NodeSpec(gpus=4), mode="emulated", behaviour=sidecar)
    gpu_node = next(n for n, spec in kubelet.nodes.items() if spec.gpus)
    s3_secret(kube_api, namespace, s3_server)
    two = experiment("two-gpus", s3_bucket, s3_server.endpoint_url)
    two["spec"]["tuneConfig"].update(numSamples=2, maxConcurrentTrials=2)
    two["spec"]["resources"] = {"bundles": [{"CPU": 1, "GPU": 2}]}
    five = experiment("five-gpus", s3_bucket, s3_server.endpoint_url)
    five["spec"]["tuneConfig"].update(numSamples=1)
    five["spec"]["resources"] = {"bundles": [{"CPU": 1, "GPU": 5}]}
    create_experiment(kube_api, namespace, two)
    create_experiment(kube_api, namespace, five)
    operator_process()
    wait_succeeded(kube_api, namespace, "two-gpus", 90)
    core = client.CoreV1Api(kube_api)
    pods = core.list_namespaced_pod(
        namespace, label_selector="kubetune.io/experiment=two-gpus"
    ).items
    assert pods and all(p.spec.node_name == gpu_node for p in pods)

    def waiting_reason() -> str:
        status = get_experiment(kube_api, namespace, "five-gpus").get("status") or {}
        return str(status.get("message") or "")

    message = wait_for(
        lambda: "nvidia.com/gpu" in waiting_reason() and waiting_reason(),
        60,
        "a message saying why the 5-GPU trial waits",
    )
    assert "cannot be scheduled" in message
    trial = next(
        t for t in trial_objects(kube_api, namespace) if t["spec"]["experiment"] == "five-gpus"
    )
    cond = next(c for c in trial["status"]["conditions"] if c["type"] == "Scheduled")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    conditions = {
        c["type"]: c
        for c in get_experiment(kube_api, namespace, "five-gpus")["status"]["conditions"]
    }
    assert conditions["Reconciling"]["reason"] == "TrialUnschedulable"


def test_missing_image_pull_secret_stalls_and_probes_answer(
    kube_api, namespace, s3_server, s3_bucket, crds, tmp_path
):
    import socket
    import urllib.request

    from kubernetes import client

    s3_secret(kube_api, namespace, s3_server)
    body = experiment("nopull", s3_bucket, s3_server.endpoint_url)
    body["spec"]["trainable"]["imagePullSecrets"] = [{"name": "registry"}]
    create_experiment(kube_api, namespace, body)

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    live, prom = free_port(), free_port()
    proc = start_operator(crds.kubeconfig, namespace, tmp_path / "operator.log", live, prom)
    try:
        wait_for(lambda: phase_of(kube_api, namespace, "nopull") == "Failed", 60, "Stalled")
        message = get_experiment(kube_api, namespace, "nopull")["status"]["message"]
        assert "spec.trainable.imagePullSecrets[0].name" in message and "registry" in message
        assert client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items == []

        def get(url: str) -> str:
            try:
                return urllib.request.urlopen(url, timeout=2).read().decode()
            except OSError:
                return ""

        assert wait_for(lambda: get(f"http://127.0.0.1:{live}/healthz"), 30, "/healthz")
        metrics = wait_for(lambda: get(f"http://127.0.0.1:{prom}/metrics"), 30, "/metrics")
        for name in (
            "kubetune_api_writes_total",
            "kubetune_decision_latency_seconds",
            "kubetune_results_processed_total",
            "kubetune_api_errors_total",
        ):
            assert name in metrics
    finally:
        stop_operator(proc)
