"""The test kubelet against the real control plane: nodes, exit codes and status, GPU
scheduling, deletion, stop and crash, the pod phase."""

from __future__ import annotations

import contextlib
import textwrap
import time
from typing import Any

import pytest

from tests.cluster.kubelet_helpers import (
    JSON,
    condition,
    container,
    phase_in,
    pod,
    py,
    status_of,
    wait_gone,
    wait_logs,
    wait_pod,
)
from tests.testenv.kubelet import EmulatedExit, NodeSpec, TestKubelet
from tests.testenv.kubelet_api import STRATEGIC_MERGE_PATCH, ApiError, pod_path
from tests.testenv.kubelet_fixtures import KubeletFactory
from tests.testenv.kubelet_status import now_rfc3339

pytestmark = pytest.mark.cluster


# -- nodes --------------------------------------------------------------------------------
def test_node_is_registered_ready_with_a_renewed_lease(kubelet_factory: KubeletFactory) -> None:
    kl = kubelet_factory(
        NodeSpec(gpus=4, labels={"pool": "gpu"}, cpu="16", memory="64Gi"),
        heartbeat_interval=0.5,
    )
    (name,) = kl.node_names
    node = kl.api.get(f"/api/v1/nodes/{name}")
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert node["status"]["capacity"]["cpu"] == "16"
    assert node["metadata"]["labels"]["pool"] == "gpu"
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
    first = kl.api.get(lease_path)["spec"]["renewTime"]
    deadline = time.monotonic() + 5
    while kl.api.get(lease_path)["spec"]["renewTime"] == first:
        assert time.monotonic() < deadline, "lease not renewed"
        time.sleep(0.1)
    # the node-lifecycle controller leaves a healthy node untainted
    time.sleep(1)
    taints = kl.api.get(f"/api/v1/nodes/{name}")["spec"].get("taints") or []
    assert not [t for t in taints if t["key"].startswith("node.kubernetes.io/")]
    kl.stop()
    with pytest.raises(ApiError) as err:
        kl.api.get(f"/api/v1/nodes/{name}")
    assert err.value.status == 404


# -- exit codes and status ---------------------------------------------------------------
def test_pods_succeed_and_fail_with_their_exit_codes(kubelet: TestKubelet, namespace: str) -> None:
    api = kubelet.api
    api.create(pod_path(namespace), pod("ok", [py("main", "print('hello from the pod')")]))
    api.create(pod_path(namespace), pod("bad", [py("main", "import sys; sys.exit(3)")]))
    ok = wait_pod(api, namespace, "ok", phase_in("Succeeded", "Failed"))
    bad = wait_pod(api, namespace, "bad", phase_in("Succeeded", "Failed"))

    assert ok["status"]["phase"] == "Succeeded"
    term = status_of(ok, "main")["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert term["startedAt"] and term["finishedAt"]
    assert ok["status"]["podIP"] == "127.0.0.1" and ok["status"]["hostIP"] == "127.0.0.1"
    assert ok["spec"]["nodeName"] == kubelet.node_names[0]
    assert condition(ok, "Ready")["reason"] == "PodCompleted"
    assert condition(ok, "Initialized")["status"] == "True"
    assert "hello from the pod" in kubelet.logs(namespace, "ok", "main")

    assert bad["status"]["phase"] == "Failed"
    term = status_of(bad, "main")["state"]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error"


def test_running_pod_reports_ready_then_completes(kubelet: TestKubelet, namespace: str) -> None:
    api = kubelet.api
    api.create(pod_path(namespace), pod("slow", [py("main", "import time; time.sleep(1.5)")]))
    running = wait_pod(api, namespace, "slow", phase_in("Running"))
    main = status_of(running, "main")
    assert "running" in main["state"] and main["ready"] and main["started"]
    assert condition(running, "Ready")["status"] == "True"
    done = wait_pod(api, namespace, "slow", phase_in("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"


def test_on_failure_restarts_until_success(kubelet: TestKubelet, namespace: str) -> None:
    code = """
        import os, sys
        path = "/data/count"
        n = int(open(path).read()) if os.path.exists(path) else 0
        open(path, "w").write(str(n + 1))
        sys.exit(0 if n >= 1 else 7)
    """
    main = container(
        "main",
        "python",
        "-c",
        textwrap.dedent(code),
        volumeMounts=[{"name": "work", "mountPath": "/data"}],
    )
    kubelet.api.create(
        pod_path(namespace),
        pod("retry", [main], restartPolicy="OnFailure", volumes=[{"name": "work", "emptyDir": {}}]),
    )
    done = wait_pod(kubelet.api, namespace, "retry", phase_in("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"
    st = status_of(done, "main")
    assert st["restartCount"] == 1
    assert st["lastState"]["terminated"]["exitCode"] == 7


# -- the scheduler places GPU pods on the fake nodes -----------------------------------------
def test_gpu_pods_go_only_where_gpus_are_free(
    kubelet_factory: KubeletFactory, namespace: str
) -> None:
    kl = kubelet_factory(
        NodeSpec(name=f"gpu-a-{namespace[-6:]}", gpus=2),
        NodeSpec(name=f"gpu-b-{namespace[-6:]}", gpus=2),
        NodeSpec(name=f"cpu-c-{namespace[-6:]}", gpus=0),
    )
    gpu_nodes = {n for n in kl.node_names if n.startswith("gpu-")}

    def gpu_pod(name: str) -> JSON:
        c = container("main", "sleep", "60", resources={"limits": {"nvidia.com/gpu": "2"}})
        return pod(name, [c], terminationGracePeriodSeconds=1)

    for name in ("g1", "g2"):
        kl.api.create(pod_path(namespace), gpu_pod(name))
    placed = {
        name: wait_pod(kl.api, namespace, name, phase_in("Running"))["spec"]["nodeName"]
        for name in ("g1", "g2")
    }
    assert set(placed.values()) == gpu_nodes  # one pod per 2-GPU node, none on the CPU node

    kl.api.create(pod_path(namespace), gpu_pod("g3"))
    pending = wait_pod(
        kl.api,
        namespace,
        "g3",
        lambda p: any(
            c["type"] == "PodScheduled" and c["status"] == "False"
            for c in (p.get("status") or {}).get("conditions") or []
        ),
        what="Unschedulable",
    )
    assert condition(pending, "PodScheduled")["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in condition(pending, "PodScheduled")["message"]
    time.sleep(1)
    pending = kl.api.get(pod_path(namespace, "g3"))
    assert pending["status"]["phase"] == "Pending" and not pending["spec"].get("nodeName")

    # freeing GPUs lets it run where they were freed
    kl.api.delete(pod_path(namespace, "g1"))
    wait_gone(kl.api, namespace, "g1")
    g3 = wait_pod(kl.api, namespace, "g3", phase_in("Running"))
    assert g3["spec"]["nodeName"] == placed["g1"]


# -- deletion --------------------------------------------------------------------------------
def test_deleting_an_owner_deletes_its_pods(kubelet: TestKubelet, namespace: str) -> None:
    api = kubelet.api
    owner = api.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}},
    )
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    child = pod(
        "child",
        [container("main", "sleep", "60")],
        metadata={"ownerReferences": [ref]},
        terminationGracePeriodSeconds=2,
    )
    api.create(pod_path(namespace), child)
    wait_pod(api, namespace, "child", phase_in("Running"))
    api.delete(
        f"/api/v1/namespaces/{namespace}/configmaps/owner",
        {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"},
    )
    wait_gone(api, namespace, "child", timeout=60)


def test_deletion_sends_sigterm_and_kills_after_the_grace_period(
    kubelet: TestKubelet, namespace: str
) -> None:
    api = kubelet.api
    polite = py(
        "main",
        """
        import signal, sys, time
        def bye(*_):
            print("got SIGTERM", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("started", flush=True)
        time.sleep(60)
        """,
    )
    stubborn = py(
        "main",
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("started", flush=True)
        time.sleep(60)
        """,
    )
    api.create(pod_path(namespace), pod("polite", [polite], terminationGracePeriodSeconds=30))
    api.create(pod_path(namespace), pod("stubborn", [stubborn], terminationGracePeriodSeconds=1))
    for name in ("polite", "stubborn"):
        wait_pod(api, namespace, name, phase_in("Running"))
        wait_logs(kubelet, namespace, name, lambda log: "started" in log)
    t0 = time.monotonic()
    api.delete(pod_path(namespace, "polite"))
    api.delete(pod_path(namespace, "stubborn"))
    wait_gone(api, namespace, "polite", timeout=10)
    assert time.monotonic() - t0 < 5  # exited on SIGTERM, long before its 30 s grace
    assert "got SIGTERM" in kubelet.logs(namespace, "polite", "main")
    wait_gone(api, namespace, "stubborn", timeout=10)
    assert time.monotonic() - t0 >= 1.0  # waited for the grace period, then SIGKILL


# -- stop and crash -------------------------------------------------------------------------
def test_stop_leaves_no_process_behind(kubelet_factory: KubeletFactory, namespace: str) -> None:
    kl = kubelet_factory()
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    kl.api.create(pod_path(namespace), pod("sleeper", [py("main", code)]))
    wait_pod(kl.api, namespace, "sleeper", phase_in("Running"))
    pid = int(wait_logs(kl, namespace, "sleeper", lambda log: bool(log.strip())).split()[0])
    kl.stop()
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().split()[2]
        assert state == "Z", f"process {pid} still running"
    except FileNotFoundError:
        pass


def test_crash_kills_processes_and_leaves_the_node_and_its_pods_to_the_control_plane(
    kubelet_factory: KubeletFactory, namespace: str
) -> None:
    kl = kubelet_factory()
    kubelet_factory()  # with no Ready node left, the controller would evict nothing
    node = kl.node_names[0]
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(120)"
    toleration = {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 0,
    }
    body = pod("orphan", [py("main", code)], tolerations=[toleration], nodeName=node)
    kl.api.create(pod_path(namespace), body)
    wait_pod(kl.api, namespace, "orphan", phase_in("Running"))
    pid = int(wait_logs(kl, namespace, "orphan", lambda log: bool(log.strip())).split()[0])
    kl.crash()
    with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/stat") as f:
        assert f.read().split()[2] == "Z", f"process {pid} still running"
    # no Lease renewal: the node-lifecycle controller (grace 15 s here) marks it unreachable
    deadline = time.monotonic() + 40
    while True:
        n = kl.api.get(f"/api/v1/nodes/{node}")
        ready = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
        taints = {t["key"] for t in (n.get("spec") or {}).get("taints") or []}
        if ready["status"] == "Unknown" and "node.kubernetes.io/unreachable" in taints:
            break
        assert time.monotonic() < deadline, (ready, taints)
        time.sleep(0.2)
    # taint-based eviction deletes the pod; nobody confirms: it stays Terminating
    p = wait_pod(
        kl.api, namespace, "orphan", lambda p: bool(p["metadata"].get("deletionTimestamp"))
    )
    assert condition(p, "DisruptionTarget")["reason"] == "DeletionByTaintManager"
    time.sleep(6)  # past its grace period of 5 s
    p = kl.api.get(pod_path(namespace, "orphan"))
    assert p["status"]["phase"] == "Running"


# -- conditions others set, the phase rules ---------------------------------------------------
@pytest.mark.parametrize("mode", ["process", "emulated"])
def test_conditions_others_set_survive_the_kubelets_status_writes(
    mode: str, kubelet_factory: KubeletFactory, namespace: str
) -> None:
    """As a real kubelet: a condition set by someone else (Kueue's TerminationTarget, the
    scheduler's DisruptionTarget) is kept when the kubelet writes the pod's status after it,
    here the status of the pod's end."""
    kwargs: dict[str, Any] = {"mode": mode}
    if mode == "emulated":
        kwargs["behaviour"] = lambda p: EmulatedExit(exit_code=0, duration=1.5)
    kl = kubelet_factory(**kwargs)
    kl.api.create(pod_path(namespace), pod("marked", [py("main", "import time; time.sleep(1.5)")]))
    wait_pod(kl.api, namespace, "marked", phase_in("Running"))
    mark = {
        "type": "TerminationTarget",
        "status": "True",
        "reason": "StoppedByKueue",
        "message": "set by the test, as Kueue does",
        "lastTransitionTime": now_rfc3339(),
    }
    kl.api.call(
        "PATCH",
        pod_path(namespace, "marked", "status"),
        body={"status": {"conditions": [mark]}},
        content_type=STRATEGIC_MERGE_PATCH,
    )
    done = wait_pod(kl.api, namespace, "marked", phase_in("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"
    assert condition(done, "TerminationTarget")["reason"] == "StoppedByKueue"
    assert condition(done, "Ready")["status"] == "False"  # the kubelet's own, written after


def test_phase_rules() -> None:
    from tests.testenv.kubelet_status import INIT, REGULAR, SIDECAR, ContainerRun, compute_phase

    never: JSON = {"spec": {"restartPolicy": "Never"}}
    side = ContainerRun("side", "", SIDECAR)
    side.terminated(137)
    ok = ContainerRun("main", "", REGULAR)
    ok.terminated(0)
    assert compute_phase(never, [side, ok], False) == "Succeeded"  # sidecars don't count
    bad = ContainerRun("other", "", REGULAR)
    bad.terminated(2)
    assert compute_phase(never, [side, ok, bad], False) == "Failed"
    on_failure: JSON = {"spec": {"restartPolicy": "OnFailure"}}
    assert compute_phase(on_failure, [ok, bad], True) == "Running"
    init = ContainerRun("init", "", INIT)
    init.terminated(1)
    assert compute_phase(never, [init, ContainerRun("main", "", REGULAR)], False) == "Failed"
    assert compute_phase(never, [ContainerRun("main", "", REGULAR)], False) == "Pending"
