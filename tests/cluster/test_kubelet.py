"""The test kubelet against the real control plane: scheduling, status, volumes, deletion."""

from __future__ import annotations

import contextlib
import json
import textwrap
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.testenv.kubelet import EmulatedExit, EmulatedPod, NodeSpec, TestKubelet
from tests.testenv.kubelet_api import STRATEGIC_MERGE_PATCH, ApiError, KubeRest, pod_path
from tests.testenv.kubelet_fixtures import KubeletFactory
from tests.testenv.kubelet_status import now_rfc3339

pytestmark = pytest.mark.cluster

JSON = dict[str, Any]
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def pod(name: str, containers: list[JSON], **spec: Any) -> JSON:
    spec.setdefault("restartPolicy", "Never")
    spec.setdefault("terminationGracePeriodSeconds", 5)
    metadata = spec.pop("metadata", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **metadata},
        "spec": {"containers": containers, **spec},
    }


def container(name: str, *command: str, **extra: Any) -> JSON:
    return {"name": name, "image": "kubetune/test", "command": list(command), **extra}


def py(name: str, code: str, **extra: Any) -> JSON:
    return container(name, "python", "-c", textwrap.dedent(code), **extra)


def wait_pod(
    api: KubeRest,
    namespace: str,
    name: str,
    ok: Callable[[JSON], bool],
    timeout: float = 30.0,
    what: str = "condition",
) -> JSON:
    deadline = time.monotonic() + timeout
    last: JSON = {}
    while time.monotonic() < deadline:
        last = api.get(pod_path(namespace, name))
        if ok(last):
            return last
        time.sleep(0.05)
    raise AssertionError(f"pod {name}: {what} not reached in {timeout}s: {last.get('status')}")


def phase_in(*phases: str) -> Callable[[JSON], bool]:
    return lambda p: (p.get("status") or {}).get("phase") in phases


def wait_gone(api: KubeRest, namespace: str, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            api.get(pod_path(namespace, name))
        except ApiError as e:
            if e.status == 404:
                return
            raise
        time.sleep(0.05)
    raise AssertionError(f"pod {name} still exists after {timeout}s")


def status_of(p: JSON, name: str, init: bool = False) -> JSON:
    key = "initContainerStatuses" if init else "containerStatuses"
    return next(s for s in p["status"][key] if s["name"] == name)


def condition(p: JSON, ctype: str) -> JSON:
    return next(c for c in p["status"]["conditions"] if c["type"] == ctype)


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
        deadline = time.monotonic() + 10
        while "started" not in kubelet.logs(namespace, name, "main"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    t0 = time.monotonic()
    api.delete(pod_path(namespace, "polite"))
    api.delete(pod_path(namespace, "stubborn"))
    wait_gone(api, namespace, "polite", timeout=10)
    assert time.monotonic() - t0 < 5  # exited on SIGTERM, long before its 30 s grace
    assert "got SIGTERM" in kubelet.logs(namespace, "polite", "main")
    wait_gone(api, namespace, "stubborn", timeout=10)
    assert time.monotonic() - t0 >= 1.0  # waited for the grace period, then SIGKILL


# -- native sidecars -----------------------------------------------------------------------
SIDECAR_CODE = """
    import os, pathlib, signal, sys, time
    shared = pathlib.Path(os.environ["SHARED"])
    def bye(*_):
        (shared / "sidecar-stopped").write_text("SIGTERM")
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
    time.sleep(float(os.environ.get("DELAY", "0")))
    (shared / "ready").write_text(str(time.time()))
    while True:
        time.sleep(1)
"""


def sidecar(**extra: Any) -> JSON:
    env = [{"name": "SHARED", "value": "/shared"}, *extra.pop("env", [])]
    return py(
        "sidecar",
        SIDECAR_CODE,
        restartPolicy="Always",
        env=env,
        volumeMounts=[{"name": "shared", "mountPath": "/shared"}],
        **extra,
    )


MAIN_CODE = """
    import os, pathlib, sys, time
    shared = pathlib.Path(os.environ["SHARED"])
    deadline = time.time() + float(os.environ.get("WAIT_READY", "0"))
    while not (shared / "ready").exists() and time.time() < deadline:
        time.sleep(0.05)
    if not (shared / "ready").exists():
        print("main started before the sidecar was ready", flush=True)
        sys.exit(1)
    print("main saw the sidecar ready", flush=True)
    (shared / "main-started").write_text(str(time.time()))
    time.sleep(0.5)
"""


def main_container(wait_ready: float = 0) -> JSON:
    return py(
        "main",
        MAIN_CODE,
        env=[
            {"name": "SHARED", "value": "/shared"},
            {"name": "WAIT_READY", "value": str(wait_ready)},
        ],
        volumeMounts=[{"name": "shared", "mountPath": "/shared"}],
    )


def test_native_sidecar_pod_completes_when_main_exits(kubelet: TestKubelet, namespace: str) -> None:
    api = kubelet.api
    api.create(
        pod_path(namespace),
        pod(
            "with-sidecar",
            [main_container(wait_ready=10)],  # no startup probe: no ordering guarantee
            initContainers=[sidecar()],
            volumes=[{"name": "shared", "emptyDir": {}}],
        ),
    )
    done = wait_pod(api, namespace, "with-sidecar", phase_in("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded", kubelet.logs(namespace, "with-sidecar", "main")
    side = status_of(done, "sidecar", init=True)
    assert "terminated" in side["state"]
    shared = kubelet.pod_dir(namespace, "with-sidecar") / "volumes" / "shared"
    assert (shared / "sidecar-stopped").read_text() == "SIGTERM"
    assert status_of(done, "main")["state"]["terminated"]["exitCode"] == 0


def test_startup_probe_gates_the_main_container(kubelet: TestKubelet, namespace: str) -> None:
    api = kubelet.api
    probe = {"exec": {"command": ["test", "-f", "/shared/ready"]}, "periodSeconds": 1}
    side = sidecar(env=[{"name": "DELAY", "value": "1.5"}], startupProbe=probe)
    api.create(
        pod_path(namespace),
        pod(
            "gated",
            [main_container()],
            initContainers=[side],
            volumes=[{"name": "shared", "emptyDir": {}}],
        ),
    )
    running = wait_pod(api, namespace, "gated", phase_in("Pending", "Running"))
    if running["status"].get("initContainerStatuses"):
        # while the probe has not passed, the sidecar runs but is not started
        side_st = status_of(running, "sidecar", init=True)
        if not side_st["started"]:
            assert "waiting" in status_of(running, "main")["state"]
            assert condition(running, "Initialized")["status"] == "False"
    done = wait_pod(api, namespace, "gated", phase_in("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded", kubelet.logs(namespace, "gated", "main")
    shared = kubelet.pod_dir(namespace, "gated") / "volumes" / "shared"
    ready_at = float((shared / "ready").read_text())
    main_at = float((shared / "main-started").read_text())
    assert main_at >= ready_at


# -- env, secrets, tokens ------------------------------------------------------------------
def test_secret_volume_and_env_from_the_pod_reach_the_process(
    kubelet: TestKubelet, namespace: str
) -> None:
    api = kubelet.api
    api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"password": "s3cr3t", "user": "alice"},
        },
    )
    api.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"MODE": "fast", "level": "3"},
        },
    )
    code = """
        import json, os, sys
        print(json.dumps({
            "password": open(sys.argv[1]).read(),
            "env": {k: os.environ.get(k) for k in (
                "POD_NAME", "POD_NS", "NODE", "POD_IP", "APP", "SA", "USER_NAME",
                "LEVEL", "CFG_MODE", "CPU_LIMIT", "EXPANDED", "CREDS_DIR")},
        }))
    """
    main = container(
        "main",
        "python",
        "-c",
        textwrap.dedent(code),
        "/etc/creds/password",
        env=[
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {
                "name": "APP",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}},
            },
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {
                "name": "USER_NAME",
                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}},
            },
            {
                "name": "LEVEL",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}},
            },
            {
                "name": "CPU_LIMIT",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}},
            },
            {"name": "EXPANDED", "value": "$(POD_NAME)-on-$(NODE)"},
            {"name": "CREDS_DIR", "value": "/etc/creds"},
        ],
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        resources={"limits": {"cpu": "500m"}},
        volumeMounts=[{"name": "creds", "mountPath": "/etc/creds", "readOnly": True}],
    )
    api.create(
        pod_path(namespace),
        pod(
            "envy",
            [main],
            metadata={"labels": {"app": "tuner"}},
            volumes=[{"name": "creds", "secret": {"secretName": "creds"}}],
        ),
    )
    done = wait_pod(api, namespace, "envy", phase_in("Succeeded", "Failed"))
    out = kubelet.logs(namespace, "envy", "main")
    assert done["status"]["phase"] == "Succeeded", out
    seen = json.loads(out.strip().splitlines()[-1])
    node = done["spec"]["nodeName"]
    assert seen["password"] == "s3cr3t"
    assert seen["env"] == {
        "POD_NAME": "envy",
        "POD_NS": namespace,
        "NODE": node,
        "POD_IP": "127.0.0.1",
        "APP": "tuner",
        "SA": "default",
        "USER_NAME": "alice",
        "LEVEL": "3",
        "CFG_MODE": "fast",
        "CPU_LIMIT": "500",
        "EXPANDED": f"envy-on-{node}",
        "CREDS_DIR": "/etc/creds",  # the mountPath itself: the volume is mounted there
    }


MOUNTS_CODE = """
    import json, os
    seen = {"cwd": os.getcwd(), "data": sorted(os.listdir("/kubetune"))}
    open("/kubetune/out/written", "w").write("from the container")
    open("written-in-workdir", "w").write("x")
    try:
        open("/etc/creds/new", "w")
        seen["read_only"] = False
    except OSError:
        seen["read_only"] = True
    seen["user"] = open("/etc/creds/user").read()
    seen["config"] = open("/etc/app.conf").read()
    print(json.dumps(seen), flush=True)
"""


def test_each_container_sees_its_volumes_at_their_mount_paths(
    kubelet: TestKubelet, namespace: str
) -> None:
    import os

    api = kubelet.api
    api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "c"},
            "stringData": {"user": "bob"},
        },
    )
    api.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app"},
            "data": {"app.conf": "k=v"},
        },
    )
    mounts = [
        {"name": "shared", "mountPath": "/kubetune"},
        {"name": "out", "mountPath": "/kubetune/out"},  # nested in another volume
        {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
        {"name": "app", "mountPath": "/etc/app.conf", "subPath": "app.conf"},  # one file
    ]
    main = py("main", MOUNTS_CODE, workingDir="/no/such/dir/yet", volumeMounts=mounts)
    other_code = """
        import os, time
        for _ in range(400):  # until main has written into the volume
            if os.path.exists("/kubetune/written"):
                break
            time.sleep(0.05)
        print(sorted(os.listdir("/kubetune")), flush=True)
    """
    other = py("other", other_code, volumeMounts=[{"name": "out", "mountPath": "/kubetune"}])
    api.create(
        pod_path(namespace),
        pod(
            "mounts",
            [main, other],
            volumes=[
                {"name": "shared", "emptyDir": {}},
                {"name": "out", "emptyDir": {}},
                {"name": "creds", "secret": {"secretName": "c"}},
                {"name": "app", "configMap": {"name": "app"}},
            ],
        ),
    )
    done = wait_pod(api, namespace, "mounts", phase_in("Succeeded", "Failed"))
    out = kubelet.logs(namespace, "mounts", "main")
    assert done["status"]["phase"] == "Succeeded", out
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["cwd"] == "/no/such/dir/yet"
    assert seen["data"] == ["out"]  # the mount point of the nested volume, made in the volume
    assert seen["read_only"] is True and seen["user"] == "bob" and seen["config"] == "k=v"
    volumes = kubelet.pod_dir(namespace, "mounts") / "volumes"
    assert (volumes / "out" / "written").read_text() == "from the container"
    # each container has its own mounts: the other one's /kubetune is the "out" volume
    assert "written" in kubelet.logs(namespace, "mounts", "other")
    # nothing was created on this machine outside the pod's directory
    assert not os.path.exists("/kubetune") and not os.path.exists("/no/such/dir/yet")


def test_missing_secret_waits_with_create_container_config_error(
    kubelet: TestKubelet, namespace: str
) -> None:
    api = kubelet.api
    main = container(
        "main",
        "true",
        env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "later", "key": "x"}}}],
    )
    api.create(pod_path(namespace), pod("waits", [main]))
    waiting = wait_pod(
        api,
        namespace,
        "waits",
        lambda p: any(
            (s.get("state") or {}).get("waiting", {}).get("reason") == "CreateContainerConfigError"
            for s in (p.get("status") or {}).get("containerStatuses") or []
        ),
    )
    assert waiting["status"]["phase"] == "Pending"
    api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "later"},
            "stringData": {"x": "1"},
        },
    )
    done = wait_pod(api, namespace, "waits", phase_in("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"


TOKEN_CODE = """
    import os
    from kubernetes import client, config

    config.load_incluster_config()  # the token and CA at their real paths, as in a pod
    sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    namespace = open(os.path.join(sa_dir, "namespace")).read()
    me = client.CoreV1Api().read_namespaced_pod(os.environ["POD_NAME"], namespace)
    print("uid", me.metadata.uid, flush=True)
"""


def test_projected_token_reaches_the_api_and_automount_false_gets_none(
    kubelet: TestKubelet, namespace: str
) -> None:
    api = kubelet.api
    api.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "read-pods"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
    )
    api.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "read-pods"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "read-pods",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
    )
    no_token = py(
        "main",
        """
        import os, sys
        sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
        print("token dir", os.path.exists(sa_dir), flush=True)
        sys.exit(1 if os.path.exists(sa_dir) else 0)
        """,
    )
    api.create(pod_path(namespace), pod("no-token", [no_token], automountServiceAccountToken=False))
    projected = {
        "name": "sa-token",
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }
    with_token = py(
        "main",
        TOKEN_CODE,
        env=[{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        volumeMounts=[{"name": "sa-token", "mountPath": SA_DIR, "readOnly": True}],
    )
    created = api.create(
        pod_path(namespace),
        pod("with-token", [with_token], automountServiceAccountToken=False, volumes=[projected]),
    )
    plain = wait_pod(api, namespace, "no-token", phase_in("Succeeded", "Failed"))
    assert plain["status"]["phase"] == "Succeeded", kubelet.logs(namespace, "no-token", "main")
    assert not any("kube-api-access" in v["name"] for v in plain["spec"].get("volumes") or [])
    done = wait_pod(api, namespace, "with-token", phase_in("Succeeded", "Failed"), timeout=60)
    out = kubelet.logs(namespace, "with-token", "main")
    assert done["status"]["phase"] == "Succeeded", out
    assert f"uid {created['metadata']['uid']}" in out


# -- emulated mode -------------------------------------------------------------------------
def test_emulated_mode_runs_pods_without_processes(
    kubelet_factory: KubeletFactory, namespace: str
) -> None:
    seen: list[str] = []

    def behaviour(p: EmulatedPod) -> EmulatedExit:
        seen.append(p.name)
        p.path("/out/result.json").parent.mkdir(parents=True, exist_ok=True)
        p.path("/out/result.json").write_text('{"loss": 0.1}\n')
        return EmulatedExit(exit_code=4 if p.name.startswith("fail") else 0, duration=0.3)

    kl = kubelet_factory(mode="emulated", behaviour=behaviour)
    mount = {"volumeMounts": [{"name": "out", "mountPath": "/out"}]}
    names = [f"emu-{i}" for i in range(20)] + ["fail-0"]
    for name in names:
        kl.api.create(
            pod_path(namespace),
            pod(
                name,
                [container("main", "/no/such/binary", **mount)],
                initContainers=[container("sidecar", "/no/such/binary", restartPolicy="Always")],
                volumes=[{"name": "out", "emptyDir": {}}],
            ),
        )
    for name in names:
        done = wait_pod(kl.api, namespace, name, phase_in("Succeeded", "Failed"))
        want = "Failed" if name.startswith("fail") else "Succeeded"
        assert done["status"]["phase"] == want
        assert "terminated" in status_of(done, "sidecar", init=True)["state"]
    assert sorted(seen) == sorted(names)
    out = kl.pod_dir(namespace, "emu-0") / "volumes" / "out" / "result.json"
    assert out.read_text() == '{"loss": 0.1}\n'
    # deletion of a running emulated pod is confirmed at once
    kl.api.create(
        pod_path(namespace), pod("long", [container("main", "x")], terminationGracePeriodSeconds=30)
    )
    wait_pod(kl.api, namespace, "long", phase_in("Running"))
    kl.api.delete(pod_path(namespace, "long"))
    wait_gone(kl.api, namespace, "long", timeout=10)


def test_stop_leaves_no_process_behind(kubelet_factory: KubeletFactory, namespace: str) -> None:
    kl = kubelet_factory()
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    kl.api.create(pod_path(namespace), pod("sleeper", [py("main", code)]))
    wait_pod(kl.api, namespace, "sleeper", phase_in("Running"))
    deadline = time.monotonic() + 10
    while not kl.logs(namespace, "sleeper", "main").strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = int(kl.logs(namespace, "sleeper", "main").split()[0])
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
    deadline = time.monotonic() + 10
    while not kl.logs(namespace, "orphan", "main").strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = int(kl.logs(namespace, "orphan", "main").split()[0])
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


# -- init containers, restarts, start errors -------------------------------------------------
def test_init_containers_run_in_order_and_a_failing_one_fails_the_pod(
    kubelet: TestKubelet, namespace: str
) -> None:
    api = kubelet.api
    mount = {
        "env": [{"name": "W", "value": "/w"}],
        "volumeMounts": [{"name": "w", "mountPath": "/w"}],
    }
    step = "import os, sys; d = os.environ['W']; {check}; open(d + '/{n}', 'w').write('x')"
    inits = [
        py("first", step.format(check="pass", n=1), **mount),
        py("second", step.format(check="assert os.path.exists(d + '/1')", n=2), **mount),
    ]
    main = py("main", "import os; assert os.path.exists(os.environ['W'] + '/2')", **mount)
    vols = [{"name": "w", "emptyDir": {}}]
    api.create(pod_path(namespace), pod("ordered", [main], initContainers=inits, volumes=vols))
    failing = [py("broken", "import sys; sys.exit(2)"), py("never", "pass")]
    api.create(
        pod_path(namespace),
        pod("init-fails", [py("main", "pass")], initContainers=failing),
    )
    done = wait_pod(api, namespace, "ordered", phase_in("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"
    assert [
        s["state"]["terminated"]["exitCode"] for s in done["status"]["initContainerStatuses"]
    ] == [0, 0]
    failed = wait_pod(api, namespace, "init-fails", phase_in("Succeeded", "Failed"))
    assert failed["status"]["phase"] == "Failed"
    broken = status_of(failed, "broken", init=True)["state"]["terminated"]
    assert broken["exitCode"] == 2 and broken["reason"] == "Error"
    assert "waiting" in status_of(failed, "never", init=True)["state"]
    assert status_of(failed, "main")["state"]["waiting"]["reason"] == "PodInitializing"
    assert condition(failed, "Initialized")["status"] == "False"


def test_a_sidecar_that_exits_is_restarted(kubelet: TestKubelet, namespace: str) -> None:
    api = kubelet.api
    flaky = py(
        "sidecar", "import time; time.sleep(0.2); raise SystemExit(1)", restartPolicy="Always"
    )
    api.create(
        pod_path(namespace),
        pod("flaky", [py("main", "import time; time.sleep(2.5)")], initContainers=[flaky]),
    )
    done = wait_pod(api, namespace, "flaky", phase_in("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"  # terminated sidecars never decide the phase
    assert status_of(done, "sidecar", init=True)["restartCount"] >= 1


def test_a_missing_binary_is_a_start_error(kubelet: TestKubelet, namespace: str) -> None:
    api = kubelet.api
    api.create(pod_path(namespace), pod("nobin", [container("main", "/no/such/binary")]))
    done = wait_pod(api, namespace, "nobin", phase_in("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Failed"
    term = status_of(done, "main")["state"]["terminated"]
    assert term["reason"] == "StartError" and term["exitCode"] == 128


def test_image_entrypoints_and_command_map(kubelet_factory: KubeletFactory, namespace: str) -> None:
    kl = kubelet_factory(
        image_entrypoints={"example/trainer": ["python", "-c", "import sys; print(sys.argv[1:])"]},
        command_map={"kubetune-hello": ["python", "-c", "print('hello via command_map')"]},
    )
    entry = {"name": "main", "image": "example/trainer:1.0", "args": ["--lr", "0.1"]}
    mapped = container("main", "/usr/local/bin/kubetune-hello")
    kl.api.create(pod_path(namespace), pod("entry", [entry]))
    kl.api.create(pod_path(namespace), pod("mapped", [mapped]))
    for name in ("entry", "mapped"):
        done = wait_pod(kl.api, namespace, name, phase_in("Succeeded", "Failed"))
        assert done["status"]["phase"] == "Succeeded", kl.logs(namespace, name, "main")
    assert "['--lr', '0.1']" in kl.logs(namespace, "entry", "main")
    assert "hello via command_map" in kl.logs(namespace, "mapped", "main")


def test_active_deadline_fails_the_pod(kubelet: TestKubelet, namespace: str) -> None:
    kubelet.api.create(
        pod_path(namespace),
        pod("late", [container("main", "sleep", "60")], activeDeadlineSeconds=1),
    )
    done = kubelet.wait_for_phase(namespace, "late", timeout=20)
    assert done["status"]["phase"] == "Failed"
    assert done["status"]["reason"] == "DeadlineExceeded"
    assert status_of(done, "main")["state"]["terminated"]["exitCode"] == 143  # SIGTERM


# -- pure parts --------------------------------------------------------------------------------
def test_emulated_path_map_maps_paths_under_mounts_only() -> None:
    from tests.testenv.kubelet_emulated import PathMap
    from tests.testenv.kubelet_volumes import expand_refs

    pm = PathMap({"/kubetune": "/tmp/p/volumes/shared", "/kubetune/out": "/tmp/p/volumes/out"})
    assert pm.map("/kubetune") == "/tmp/p/volumes/shared"
    assert pm.map("/kubetune/restore/x") == "/tmp/p/volumes/shared/restore/x"
    assert pm.map("/kubetune/out/result.json") == "/tmp/p/volumes/out/result.json"
    assert pm.map("/kubetuneX/y") == "/kubetuneX/y"
    assert pm.map("--dir=/kubetune") == "--dir=/kubetune"
    assert expand_refs("$(A)-$(B)-$$(A)", {"A": "a"}) == "a-$(B)-$(A)"


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


@pytest.mark.parametrize("kind", ["httpGet", "tcpSocket"])
def test_http_and_tcp_startup_probes_gate_the_main_container(
    kubelet: TestKubelet, namespace: str, kind: str
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = py(
        "server",
        f"""
        import http.server, time
        time.sleep(1.0)
        http.server.HTTPServer(("127.0.0.1", {port}), http.server.SimpleHTTPRequestHandler
                               ).serve_forever()
        """,
        restartPolicy="Always",
        ports=[{"name": "web", "containerPort": port}],
        startupProbe={
            kind: {"port": "web", **({"path": "/"} if kind == "httpGet" else {})},
            "periodSeconds": 1,
            "failureThreshold": 30,
        },
    )
    client = py(
        "main",
        f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)",
    )
    name = f"probe-{kind.lower()}"
    kubelet.api.create(pod_path(namespace), pod(name, [client], initContainers=[server]))
    done = kubelet.wait_for_phase(namespace, name, timeout=30)
    assert done["status"]["phase"] == "Succeeded", kubelet.logs(namespace, name, "main")


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
