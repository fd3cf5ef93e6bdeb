"""Fractional GPUs on the real control plane: a share maps to the chart's shared GPU resource
(time-slicing units) and the real scheduler packs trials on it; without one the experiment
stalls naming the field (the CRD accepts the share: it cannot know the operator's settings)."""

from __future__ import annotations

from tests.cluster import operator_helpers
from tests.cluster.operator_helpers import (
    FakeSidecar,
    create_experiment,
    experiment,
    get_experiment,
    phase_of,
    wait_succeeded,
)
from tests.testenv.helpers import s3_secret, wait_for
from tests.testenv.kubelet import NodeSpec

crds = operator_helpers.crds
operator_process = operator_helpers.operator_process
SHARED = "nvidia.com/gpu.shared"


def half_gpu_experiment(name: str, s3_server, bucket: str) -> dict:
    body = experiment(name, bucket, s3_server.endpoint_url)
    body["spec"]["tuneConfig"].update(numSamples=2, maxConcurrentTrials=2)
    body["spec"]["resources"] = {"bundles": [{"CPU": 1, "GPU": 0.5}]}
    return body


def test_a_gpu_share_without_a_shared_resource_stalls_naming_the_field(
    kube_api, namespace, s3_server, s3_bucket, operator_process
):
    s3_secret(kube_api, namespace, s3_server)
    create_experiment(kube_api, namespace, half_gpu_experiment("half", s3_server, s3_bucket))
    operator_process()
    wait_for(lambda: phase_of(kube_api, namespace, "half") == "Failed", 60, "Stalled")
    status = get_experiment(kube_api, namespace, "half")["status"]
    assert status["message"].startswith("spec.resources.bundles[0].GPU: 0.5 is a share of a GPU")
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert status.get("trials", {}).get("total", 0) == 0  # nothing was created


def test_two_half_gpu_trials_share_one_time_sliced_gpu(
    kube_api, namespace, kubelet_factory, s3_server, s3_bucket, operator_process, monkeypatch
):
    from kubernetes import client

    monkeypatch.setenv("KUBETUNE_SHARED_GPU_RESOURCE", SHARED)
    monkeypatch.setenv("KUBETUNE_SHARED_GPU_REPLICAS", "2")
    sidecar = FakeSidecar(
        kube_api, s3_server.client(), s3_bucket, lambda c: [{"loss": 1.0}], duration=3.0
    )
    # one GPU time-sliced in two: the device plugin advertises 2 units
    kubelet = kubelet_factory(
        NodeSpec(), NodeSpec(extended={SHARED: "2"}), mode="emulated", behaviour=sidecar
    )
    shared_node = next(n for n, spec in kubelet.nodes.items() if spec.extended)
    s3_secret(kube_api, namespace, s3_server)
    create_experiment(kube_api, namespace, half_gpu_experiment("half", s3_server, s3_bucket))
    proc = operator_process()

    def both_running() -> list:
        pods = (
            client.CoreV1Api(kube_api)
            .list_namespaced_pod(namespace, label_selector="kubetune.io/experiment=half")
            .items
        )
        running = [p for p in pods if p.status.phase == "Running"]
        return running if len(running) == 2 else []

    pods = wait_for(both_running, 60, "both half-GPU trials running at once")
    for pod in pods:
        assert pod.spec.node_name == shared_node
        (trial,) = [c for c in pod.spec.containers if c.name == "trial"]
        assert trial.resources.limits == {SHARED: "1"}  # 0.5 GPU x 2 units per GPU
    wait_succeeded(kube_api, namespace, "half", 90, proc)
