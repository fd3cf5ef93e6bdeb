"""The real node itself: a pod of the example image in a real container reaches the API server
the way in-cluster clients do, `kubectl logs` and `kubectl exec` work, and a GPU request is
admitted by the real kubelet through the fixture's device plugin."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.testenv.helpers import wait_for

# Run inside the container: the in-cluster client's view (service env, token, CA).
IN_CLUSTER_PROBE = """
import json, os, socket, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
def version(base):
    req = urllib.request.Request(base + "/version")
    req.add_header("Authorization", "Bearer " + open(sa + "/token").read())
    return json.load(urllib.request.urlopen(req, context=ctx, timeout=20))["gitVersion"]
print(json.dumps({"host": host, "port": port, "gitVersion": version(f"https://{host}:{port}"),
                  "uid": os.getuid(),
                  # by name, as most in-cluster clients do: cluster DNS, TLS checks the name
                  "byName": version("https://kubernetes.default.svc"),
                  "resolved": socket.gethostbyname("kubernetes.default.svc"),
                  "resolvConf": open("/etc/resolv.conf").read()}), flush=True)
import time; time.sleep(3600)
"""


def pod_phase(cp: Any, namespace: str, name: str) -> dict[str, Any]:
    status, body = cp.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
    assert status == 200, body
    return dict(body)


def create_pod(cp: Any, namespace: str, pod: dict[str, Any]) -> None:
    status, body = cp.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    assert status == 201, body


def running(cp: Any, namespace: str, name: str, timeout: float = 180) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        pod = pod_phase(cp, namespace, name)
        assert pod["status"].get("phase") not in ("Failed", "Succeeded"), pod["status"]
        return pod if pod["status"].get("phase") == "Running" else None

    result: dict[str, Any] = wait_for(check, timeout, f"pod {name} Running", interval=0.5)
    return result


def test_pod_reaches_the_api_server_through_the_kubernetes_service(
    control_plane, namespace, real_node, e2e_images
):
    create_pod(
        control_plane,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe"},
            "spec": {
                "nodeName": real_node.name,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                "containers": [
                    {
                        "name": "probe",
                        "image": e2e_images.example,
                        "command": ["python", "-c", IN_CLUSTER_PROBE],
                        "securityContext": {
                            "readOnlyRootFilesystem": True,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        },
    )
    running(control_plane, namespace, "probe")

    def logged() -> dict[str, Any] | None:
        out = control_plane.kubectl("logs", "-n", namespace, "probe", check=False).stdout
        return json.loads(out.splitlines()[0]) if out.strip() else None

    seen = wait_for(logged, 60, "the probe's output in kubectl logs", interval=0.5)
    assert seen["host"] == "10.0.0.1" and seen["port"] == "443"
    assert seen["gitVersion"] == "v1.36.3"
    assert seen["byName"] == "v1.36.3" and seen["resolved"] == "10.0.0.1", seen
    assert f"search {namespace}.svc.cluster.local svc.cluster.local" in seen["resolvConf"]
    assert seen["uid"] == 10001
    # The image's WORKDIR is /app and its modules are there, exactly as the README says.
    exec_out = control_plane.kubectl(
        "exec",
        "-n",
        namespace,
        "probe",
        "--",
        "python",
        "-c",
        "import os, quadratic; print(os.getcwd(), quadratic.__file__)",
    )
    assert exec_out.stdout.split() == ["/app", "/app/quadratic.py"]


def test_two_gpus_are_admitted_and_the_container_sees_exactly_them(
    control_plane, namespace, real_node, e2e_images
):
    node = control_plane.request("GET", f"/api/v1/nodes/{real_node.name}")[1]
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "4"
    create_pod(
        control_plane,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "gpu"},
            "spec": {
                "nodeName": real_node.name,
                "containers": [
                    {
                        "name": "gpu",
                        "image": e2e_images.example,
                        "command": ["sleep", "3600"],
                        "resources": {"limits": {"nvidia.com/gpu": "2"}},
                    }
                ],
            },
        },
    )
    running(control_plane, namespace, "gpu")
    env = control_plane.kubectl("exec", "-n", namespace, "gpu", "--", "env").stdout
    visible = dict(line.split("=", 1) for line in env.splitlines() if "=" in line)
    devices = visible["NVIDIA_VISIBLE_DEVICES"].split(",")
    assert len(devices) == 2 and len(set(devices)) == 2
    assert set(devices) <= {f"GPU-{i}" for i in range(4)}
    allocated = json.dumps(
        control_plane.request("GET", f"/api/v1/nodes/{real_node.name}")[1]["status"]
    )
    assert "nvidia.com/gpu" in allocated
    time.sleep(0)
