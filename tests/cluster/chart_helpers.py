"""What the Helm chart tests share: `helm` and `kubectl` runs, rendered documents and their
parts, `kubectl auth can-i`, installed releases; the ``crds``, ``extra_namespaces`` and
``releases`` fixtures (a test module binds them by name: ``crds = chart_helpers.crds``)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kubetune"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
GROUP, VERSION = "kubetune.io", "v1alpha1"
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"
# Keeps the chart's own operator pod off every test node (the test kubelet would run it).
UNSCHEDULABLE = "nodeSelector.kubetune\\.test/operator-pod=never"

# A minimal prometheus-operator ServiceMonitor CRD, so that the metrics values file can be
# dry-run on a cluster without prometheus-operator.
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "ServiceMonitor",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
            "listKind": "ServiceMonitorList",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        },
                    }
                },
            }
        ],
    },
}


def helm(cp: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(cp.helm_path), *args],
        env={**os.environ, **cp.env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def docs_of(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def render(cp: Any, release: str, namespace: str, values: Path, *sets: str) -> list[dict]:
    args = ["template", release, str(CHART), "-n", namespace, "-f", str(values)]
    args += ["--api-versions", SERVICE_MONITOR_API]
    for s in sets:
        args += ["--set", s]
    return docs_of(helm(cp, *args).stdout)


def kubectl_json(cp: Any, *args: str, docs: list[dict], check: bool = True) -> Any:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    return cp.kubectl(*args, "-f", "-", input=body, check=check)


def release_name() -> str:
    return f"kt{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def crds(control_plane: Any) -> Any:
    kubectl_json(control_plane, "apply", "--server-side", docs=[SERVICE_MONITOR_CRD])
    control_plane.apply_crds(
        CHART / "crds",
        "tuneexperiments.kubetune.io",
        "tunetrials.kubetune.io",
        "servicemonitors.monitoring.coreos.com",
    )
    return control_plane


@pytest.fixture
def extra_namespaces(control_plane: Any, namespace: str) -> Iterator[Callable[[str], str]]:
    made: list[str] = []

    def make(suffix: str) -> str:
        name = f"{namespace[:50]}-{suffix}"
        control_plane.kubectl("create", "namespace", name)
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def component(docs: list[dict], name: str) -> list[dict]:
    return [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == name]


def container_of(docs: list[dict], name: str = "operator") -> dict[str, Any]:
    (deployment,) = by_kind(component(docs, name), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def can_i(cp: Any, user: str, verb: str, resource: str, namespace: str | None) -> bool:
    where = ["-n", namespace] if namespace else ["--all-namespaces"]
    # `can-i VERB TYPE/NAME` reads a slash as a name: a subresource needs --subresource.
    resource, _, subresource = resource.partition("/")
    if subresource:
        where.append(f"--subresource={subresource}")
    proc = cp.kubectl("auth", "can-i", verb, resource, f"--as={user}", *where, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stderr
    return answer == "yes"


def install(cp: Any, release: str, namespace: str, *args: str) -> None:
    helm(cp, "install", release, str(CHART), "-n", namespace, "--set", UNSCHEDULABLE, *args)


@pytest.fixture
def releases(crds: Any) -> Iterator[list[tuple[str, str]]]:
    made: list[tuple[str, str]] = []
    try:
        yield made
    finally:
        for release, namespace in made:
            helm(crds, "uninstall", release, "-n", namespace, "--wait=false", check=False)
