"""The control plane the cluster tests run against is the real thing: readiness, version,
garbage collection, RBAC with service-account tokens, and scheduling onto registered nodes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from tests.testenv import build
from tests.testenv.controlplane import ControlPlane
from tests.testenv.procs import ManagedProcess

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


def eventually(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def test_apiserver_is_ready_and_at_the_pinned_version(control_plane: ControlPlane) -> None:
    status, body = control_plane.request("GET", "/readyz?verbose")
    assert status == 200, body
    status, version = control_plane.request("GET", "/version")
    assert status == 200
    assert version["gitVersion"] == build.KUBERNETES_VERSION
    assert (version["major"], version["minor"]) == tuple(
        build.KUBERNETES_VERSION[1:].split(".")[:2]
    )
    # kubectl from the same build talks to it through the admin kubeconfig.
    out = control_plane.kubectl("get", "--raw", "/readyz").stdout
    assert out.strip() == "ok"
    assert control_plane.alive()
    # The bound for a warm machine (a quiet one takes about 3 s).
    assert control_plane.startup_seconds < 20


def test_helm_talks_to_the_control_plane(control_plane: ControlPlane) -> None:
    env = {**os.environ, **control_plane.env()}
    version = subprocess.run(
        [str(control_plane.helm_path), "version", "--short"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert version.startswith(build.HELM_VERSION)
    listed = subprocess.run(
        [str(control_plane.helm_path), "list", "--all-namespaces", "--output", "json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert listed.strip() == "[]"


def test_anonymous_and_unknown_tokens_are_refused(control_plane: ControlPlane) -> None:
    status, _ = control_plane.request("GET", "/api/v1/namespaces", token="not-a-token")
    assert status == 401


def test_owner_deletion_garbage_collects_dependents(kube_api: ApiClient, namespace: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core: Any = client.CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"role": "owner"}),
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name="child",
                owner_references=[
                    client.V1OwnerReference(
                        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
                    )
                ],
            ),
            data={"role": "child"},
        ),
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="bystander"), data={"role": "none"}),
    )

    core.delete_namespaced_config_map("owner", namespace)

    def child_gone() -> bool:
        try:
            core.read_namespaced_config_map("child", namespace)
        except ApiException as err:
            if err.status == 404:
                return True
            raise
        return False

    eventually("the garbage collector deletes the owned ConfigMap", child_gone)
    assert core.read_namespaced_config_map("bystander", namespace).data == {"role": "none"}


def test_namespace_deletion_removes_its_contents(kube_api: ApiClient) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core: Any = client.CoreV1Api(kube_api)
    name = f"t-doomed-{os.urandom(3).hex()}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="content"), data={"a": "b"})
    )
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as err:
            if err.status == 404:
                return True
            raise
        return False

    eventually("the namespace controller finishes deleting the namespace", gone)


def test_rbac_denies_a_service_account_until_a_role_binding_allows_it(
    control_plane: ControlPlane, kube_api: ApiClient, namespace: str
) -> None:
    from kubernetes import client

    core: Any = client.CoreV1Api(kube_api)
    rbac: Any = client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    token = core.create_namespaced_service_account_token(
        "reader",
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[control_plane.service_account_issuer], expiration_seconds=600
            )
        ),
    ).status.token
    path = f"/api/v1/namespaces/{namespace}/configmaps"

    status, body = control_plane.request("GET", path, token=token)
    assert status == 403, body
    # Authenticated (a 403, not a 401) as the service account itself.
    assert f"system:serviceaccount:{namespace}:reader" in body["message"]

    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="configmap-reader"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["configmaps"], verbs=["get", "list"]
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader-reads-configmaps"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
            ],
        ),
    )

    eventually(
        "the RoleBinding takes effect",
        lambda: control_plane.request("GET", path, token=token)[0] == 200,
        timeout=15,
    )
    # Still nothing beyond what the Role grants.
    status, _ = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/secrets", token=token)
    assert status == 403
    status, _ = control_plane.request("DELETE", f"{path}/kube-root-ca.crt", token=token)
    assert status == 403


def _ready_node(name: str, gpus: int) -> dict[str, Any]:
    capacity = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubetune.test/fake-node": "true"},
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def test_scheduler_binds_pods_to_registered_nodes_by_gpu_capacity(
    control_plane: ControlPlane, kube_api: ApiClient, namespace: str
) -> None:
    """Without a kubelet: register two nodes by hand, mark them Ready, and check that the real
    scheduler places a 2-GPU pod only on the node that has 2 GPUs."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core: Any = client.CoreV1Api(kube_api)
    suffix = namespace[-6:]
    nodes = {f"cpu-only-{suffix}": 0, f"two-gpus-{suffix}": 2}
    try:
        for name, gpus in nodes.items():
            body = _ready_node(name, gpus)
            core.create_node(body)
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            core.patch_node_status(
                name,
                {
                    "status": {
                        **body["status"],
                        "conditions": [
                            {
                                "type": "Ready",
                                "status": "True",
                                "reason": "KubeletReady",
                                "message": "test node",
                                "lastHeartbeatTime": now,
                                "lastTransitionTime": now,
                            }
                        ],
                    }
                },
            )

        def gpu_pod(name: str) -> dict[str, Any]:
            return {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"kubetune.test/fake-node": "true"},
                    "containers": [
                        {
                            "name": "main",
                            "image": "none",
                            "command": ["true"],
                            "resources": {"limits": {"nvidia.com/gpu": "2"}},
                        }
                    ],
                },
            }

        core.create_namespaced_pod(namespace, gpu_pod("gpu-a"))
        eventually(
            "the 2-GPU pod is bound",
            lambda: bool(core.read_namespaced_pod("gpu-a", namespace).spec.node_name),
        )
        assert core.read_namespaced_pod("gpu-a", namespace).spec.node_name == f"two-gpus-{suffix}"

        core.create_namespaced_pod(namespace, gpu_pod("gpu-b"))

        def unschedulable() -> bool:
            pod = core.read_namespaced_pod("gpu-b", namespace)
            return any(
                c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
                for c in pod.status.conditions or []
            )

        eventually("the second 2-GPU pod is reported Unschedulable", unschedulable)
        assert core.read_namespaced_pod("gpu-b", namespace).spec.node_name is None
    finally:
        for pod in ("gpu-a", "gpu-b"):
            # No kubelet confirms a graceful deletion here.
            try:
                core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)
            except ApiException:
                pass
        for name in nodes:
            try:
                core.delete_node(name)
            except ApiException:
                pass


def test_stopping_a_managed_process_kills_its_whole_group(tmp_path: Any) -> None:
    proc = ManagedProcess(
        "sleepers",
        ["sh", "-c", "sleep 300 & echo $! > child; wait"],
        tmp_path / "log",
        cwd=tmp_path,
    )
    eventually(
        "the child starts",
        lambda: (tmp_path / "child").exists() and bool((tmp_path / "child").read_text().strip()),
        timeout=10,
    )
    child = int((tmp_path / "child").read_text())
    proc.stop(grace=2)
    assert not proc.alive()
    eventually("the grandchild is gone", lambda: not _pid_alive(child), timeout=5)


def test_managed_processes_die_with_the_python_process_that_started_them(tmp_path: Any) -> None:
    script = (
        "import sys, time; from pathlib import Path;"
        "from tests.testenv.procs import ManagedProcess;"
        f"p = ManagedProcess('sleep', ['sleep', '300'], Path({str(tmp_path)!r}) / 'log');"
        f"Path({str(tmp_path)!r}, 'pid').write_text(str(p.pid)); time.sleep(300)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    pid_file = tmp_path / "pid"
    try:
        eventually(
            "the server starts",
            lambda: pid_file.exists() and bool(pid_file.read_text()),
            timeout=20,
        )
        server = int(pid_file.read_text())
        assert _pid_alive(server)
        parent.send_signal(signal.SIGKILL)  # no atexit, no finally: only the kernel can help
        parent.wait(10)
        eventually("the orphaned server is killed", lambda: not _pid_alive(server), timeout=5)
    finally:
        if parent.poll() is None:
            parent.kill()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(
    "binary",
    [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
        "helm",
        "kubelet",
        "containerd",
        "containerd-shim-runc-v2",
        "ctr",
        "kubetune-fakegpu",
        "kueue-manager",
    ],
)
def test_every_binary_is_built_at_its_pin(control_plane: ControlPlane, binary: str) -> None:
    assert binary not in {b.name for b in build.missing()}
    assert os.access(build.binary(binary), os.X_OK)


@pytest.mark.cluster
def test_wrapper_replaces_exactly_the_staging_modules_of_the_pinned_kubernetes() -> None:
    """The committed wrapper go.mod stays what the generator makes from upstream's go.mod."""
    import json
    import shutil

    if not shutil.which("go") and not os.path.exists("/usr/local/go/bin/go"):
        if os.environ.get("CI"):
            pytest.fail("no Go toolchain")
        pytest.skip("no Go toolchain to read go.mod files with")
    folder = build.GO_DIR / "kubernetes"
    committed = json.loads(build.run_go(["mod", "edit", "-json", "go.mod"], folder))
    replaced = {
        r["Old"]["Path"]: (r["New"]["Path"], r["New"].get("Version")) for r in committed["Replace"]
    }
    upstream = build.upstream_gomod("k8s.io/kubernetes", build.KUBERNETES_VERSION)
    staging = {
        r["Old"]["Path"] for r in upstream["Replace"] if r["New"]["Path"].startswith("./staging/")
    }
    assert set(replaced) == staging
    assert all(new == (old, build.STAGING_VERSION) for old, new in replaced.items())
    assert {"Path": "k8s.io/kubernetes", "Version": build.KUBERNETES_VERSION} in [
        {"Path": r["Path"], "Version": r["Version"]} for r in committed["Require"]
    ]
