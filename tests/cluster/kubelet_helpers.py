"""What the test-kubelet tests share: pod and container literals, the Secrets and ConfigMaps
they mount, and waits on a pod's status, its deletion and its logs."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from typing import Any

from tests.testenv.kubelet import TestKubelet
from tests.testenv.kubelet_api import ApiError, KubeRest, pod_path

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


def create_secret(api: KubeRest, namespace: str, name: str, string_data: dict[str, str]) -> None:
    api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": string_data,
        },
    )


def create_config_map(api: KubeRest, namespace: str, name: str, data: dict[str, str]) -> None:
    api.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data},
    )


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


def wait_logs(kl: TestKubelet, namespace: str, name: str, ok: Callable[[str], bool]) -> str:
    """The log of the pod's ``main`` container once ``ok`` holds for it (10 s at most)."""
    deadline = time.monotonic() + 10
    while not ok(kl.logs(namespace, name, "main")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return kl.logs(namespace, name, "main")


def status_of(p: JSON, name: str, init: bool = False) -> JSON:
    key = "initContainerStatuses" if init else "containerStatuses"
    return next(s for s in p["status"][key] if s["name"] == name)


def condition(p: JSON, ctype: str) -> JSON:
    return next(c for c in p["status"]["conditions"] if c["type"] == ctype)
