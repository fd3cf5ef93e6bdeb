"""The test kubelet against the real control plane: env, Secrets, ConfigMaps and tokens,
volumes at their mount paths; the emulated mode."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.cluster.kubelet_helpers import (
    SA_DIR,
    container,
    create_config_map,
    create_secret,
    phase_in,
    pod,
    py,
    status_of,
    wait_gone,
    wait_pod,
)
from tests.testenv.kubelet import EmulatedExit, EmulatedPod, TestKubelet
from tests.testenv.kubelet_api import pod_path
from tests.testenv.kubelet_fixtures import KubeletFactory

pytestmark = pytest.mark.cluster


# -- env, secrets, tokens ------------------------------------------------------------------
def test_secret_volume_and_env_from_the_pod_reach_the_process(
    kubelet: TestKubelet, namespace: str
) -> None:
    api = kubelet.api
    create_secret(api, namespace, "creds", {"password": "s3cr3t", "user": "alice"})
    create_config_map(api, namespace, "settings", {"MODE": "fast", "level": "3"})
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
    create_secret(api, namespace, "c", {"user": "bob"})
    create_config_map(api, namespace, "app", {"app.conf": "k=v"})
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
    create_secret(api, namespace, "later", {"x": "1"})
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
