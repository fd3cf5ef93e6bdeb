"""The Helm chart against the real control plane.

* `helm lint` and `helm template` over every values file in helm/kubetune/ci/, each rendered set
  applied with `kubectl apply --dry-run=server` (CRDs that the set brings, and a minimal
  prometheus-operator ServiceMonitor CRD, are applied for real first, as Helm would).
* The chart installed for real with `helm install`; its operator ServiceAccount checked with
  impersonation (`kubectl auth can-i --as=...`) and with a real token (TokenRequest): every
  permission the operator uses is granted, nothing more (no Secret outside the served
  namespaces, no list/watch of Secrets, nothing cluster-wide in namespaced mode).
* The operator started as a local process with exactly the command, args and env of the
  rendered Deployment's container, authenticated with that ServiceAccount's token, runs an
  experiment to Succeeded. Trial pods run as processes on the test kubelet with the real sidecar,
  which reports with the trial ServiceAccount that the operator made under the chart's RBAC.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.testenv.helpers import s3_secret, wait_for

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
    control_plane.kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    kubectl_json(control_plane, "apply", "--server-side", docs=[SERVICE_MONITOR_CRD])
    for name in (
        "tuneexperiments.kubetune.io",
        "tunetrials.kubetune.io",
        "servicemonitors.monitoring.coreos.com",
    ):
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")
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


# -- lint and template -----------------------------------------------------------------------


def test_helm_lint_passes_for_every_values_file(control_plane):
    helm(control_plane, "lint", "--strict", str(CHART))
    for values in CI_VALUES:
        # `helm lint` has no --api-versions: the ServiceMonitor (which needs that API) is
        # covered by `helm template` and the server-side dry run below.
        no_monitor = ["--set", "metrics.serviceMonitor.enabled=false"]
        helm(control_plane, "lint", "--strict", str(CHART), "-f", str(values), *no_monitor)


def test_service_monitor_without_its_api_fails_with_a_clear_message(control_plane):
    proc = helm(
        control_plane,
        "template",
        "x",
        str(CHART),
        "-f",
        str(CHART / "ci" / "metrics-values.yaml"),
        check=False,
    )
    assert proc.returncode != 0
    assert "monitoring.coreos.com/v1 ServiceMonitor API" in proc.stderr


def test_a_shared_gpu_resource_without_its_replicas_fails_with_a_clear_message(control_plane):
    proc = helm(
        control_plane,
        "template",
        "x",
        str(CHART),
        "--set",
        "trial.sharedGpuResourceName=nvidia.com/gpu.shared",
        check=False,
    )
    assert proc.returncode != 0
    assert "trial.sharedGpuReplicas must be the device plugin's replicas" in proc.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_rendered_set_passes_server_side_dry_run(crds, namespace, extra_namespaces, values):
    release = release_name()
    sets: list[str] = []
    if "namespaced" in values.name:
        served = [extra_namespaces("a"), extra_namespaces("b")]
        sets.append("watchNamespaces={" + ",".join(served) + "}")
    docs = render(crds, release, namespace, values, *sets)

    # CRDs in the set (kopf's peering CRDs) first, for real, as `helm install` would.
    bundled = by_kind(docs, "CustomResourceDefinition")
    if bundled:
        kubectl_json(crds, "apply", "--server-side", "--force-conflicts", docs=bundled)
        for crd in bundled:
            name = crd["metadata"]["name"]
            crds.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")
    rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    result = kubectl_json(crds, "apply", "--dry-run=server", docs=rest)
    assert "(server dry run)" in result.stdout

    container = container_of(docs)
    args = container["args"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    (deployment,) = by_kind(component(docs, "operator"), "Deployment")
    replicas = deployment["spec"]["replicas"]
    if replicas > 1:
        assert "--peering=kubetune" in args and "--standalone" not in args
        assert {c["metadata"]["name"] for c in bundled} == {
            "clusterkopfpeerings.kopf.dev",
            "kopfpeerings.kopf.dev",
        }
        assert by_kind(docs, "ClusterKopfPeering")
    else:
        assert "--standalone" in args and deployment["spec"]["strategy"]["type"] == "Recreate"
        assert not bundled
    if sets:
        assert [a for a in args if a.startswith("--namespace")] == [
            f"--namespace={ns}" for ns in served
        ]
        assert {r["metadata"]["namespace"] for r in by_kind(docs, "Role")} == set(served)
        assert {c["metadata"]["name"] for c in by_kind(docs, "ClusterRole")} == {
            f"{release}-kubetune-discovery"
        }
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["KUBETUNE_DEFAULT_S3_BUCKET"] == "tuning"
        assert env["KUBETUNE_IMAGE_PULL_SECRETS"] == "registry-credentials"
        assert json.loads(env["KUBETUNE_EXTENDED_RESOURCES"]) == {"TPU": "google.com/tpu"}
    else:
        assert "--all-namespaces" in args
    if "metrics" in values.name:
        assert by_kind(docs, "Service") and by_kind(docs, "ServiceMonitor")
    if "pdb" in values.name or "ha" in values.name:
        assert by_kind(docs, "PodDisruptionBudget")
    env = {e["name"]: e.get("value") for e in container["env"]}
    if "fractional-gpu" in values.name:
        assert env["KUBETUNE_SHARED_GPU_RESOURCE"] == "nvidia.com/gpu.shared"
        assert env["KUBETUNE_SHARED_GPU_REPLICAS"] == "4"
    else:  # not configured: the operator refuses shares of a GPU
        assert "KUBETUNE_SHARED_GPU_RESOURCE" not in env


def test_notes_show_a_valid_sample_experiment_and_the_crd_upgrade_step(crds, namespace):
    out = helm(crds, "install", release_name(), str(CHART), "-n", namespace, "--dry-run=server")
    notes = out.stdout.split("NOTES:", 1)[1]
    assert "kubectl apply --server-side -f" in notes and "crds/" in notes
    sample = notes.split("cat <<'YAML' | kubectl apply -f -\n", 1)[1].split("\n  YAML", 1)[0]
    manifest = yaml.safe_load("\n".join(line[2:] for line in sample.splitlines()))
    assert manifest["kind"] == "TuneExperiment"
    result = kubectl_json(crds, "apply", "-n", namespace, "--dry-run=server", docs=[manifest])
    assert "(server dry run)" in result.stdout


# -- RBAC of an installed release -------------------------------------------------------------

# (verb, resource) pairs the operator uses in every namespace it serves (from
# operator/kubetune_operator/api.py and kopf's watches and patches).
OPERATOR_NEEDS = [
    ("list", "tuneexperiments.kubetune.io"),
    ("watch", "tuneexperiments.kubetune.io"),
    ("patch", "tuneexperiments.kubetune.io"),
    ("patch", "tuneexperiments.kubetune.io/status"),
    ("get", "tunetrials.kubetune.io"),
    ("list", "tunetrials.kubetune.io"),
    ("watch", "tunetrials.kubetune.io"),
    ("create", "tunetrials.kubetune.io"),
    ("patch", "tunetrials.kubetune.io"),
    ("patch", "tunetrials.kubetune.io/status"),
    # granted onwards to the trial sidecars' Role, so held too
    ("get", "tunetrials.kubetune.io/status"),
    ("list", "tunetrials.kubetune.io/status"),
    ("watch", "tunetrials.kubetune.io/status"),
    ("update", "tuneexperiments.kubetune.io/finalizers"),
    ("update", "tunetrials.kubetune.io/finalizers"),
    ("list", "pods"),
    ("watch", "pods"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "events"),
    ("get", "secrets"),
    ("get", "serviceaccounts"),
    ("create", "serviceaccounts"),
    ("get", "roles.rbac.authorization.k8s.io"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("get", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
]
# What it must never be able to do, even where it serves.
OPERATOR_MUST_NOT = [
    ("list", "secrets"),
    ("watch", "secrets"),
    ("create", "secrets"),
    ("get", "configmaps"),
    ("create", "pods/exec"),
    ("get", "pods/log"),
    ("patch", "pods/status"),
    ("update", "tuneexperiments.kubetune.io/status"),
    ("delete", "tuneexperiments.kubetune.io"),
    ("create", "tuneexperiments.kubetune.io"),
    ("escalate", "roles.rbac.authorization.k8s.io"),
    ("bind", "roles.rbac.authorization.k8s.io"),
    ("delete", "roles.rbac.authorization.k8s.io"),
    ("create", "deployments.apps"),
]


# Kueue's Workloads, read for why a trial is not admitted (rbac.readKueueWorkloads): asked by
# SubjectAccessReview, since `kubectl auth can-i` cannot name a resource whose CRD is absent.
KUEUE_NEEDS = [("get", "workloads"), ("list", "workloads")]
KUEUE_MUST_NOT = [("watch", "workloads"), ("patch", "workloads"), ("delete", "workloads")]


def can_kueue(cp: Any, user: str, verb: str, resource: str, namespace: str) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {
                "group": "kueue.x-k8s.io",
                "resource": resource,
                "verb": verb,
                "namespace": namespace,
            },
        },
    }
    status, body = cp.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    assert status == 201, body
    return bool(body["status"].get("allowed"))


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


def test_namespaced_release_grants_what_the_operator_needs_and_nothing_else(
    crds, namespace, extra_namespaces, releases, tmp_path
):
    served, other = extra_namespaces("served"), extra_namespaces("other")
    release = release_name()
    install(crds, release, namespace, "--set", f"watchNamespaces={{{served}}}")
    releases.append((release, namespace))
    sa = f"{release}-kubetune"
    user = f"system:serviceaccount:{namespace}:{sa}"

    missing = [p for p in OPERATOR_NEEDS if not can_i(crds, user, *p, served)]
    assert not missing, f"the chart does not grant {missing} in the served namespace"
    extra = [p for p in OPERATOR_MUST_NOT if can_i(crds, user, *p, served)]
    assert not extra, f"the chart grants {extra}"
    assert all(can_kueue(crds, user, *p, served) for p in KUEUE_NEEDS)
    assert not any(can_kueue(crds, user, *p, served) for p in KUEUE_MUST_NOT)
    assert not any(can_kueue(crds, user, *p, other) for p in KUEUE_NEEDS)
    leaked = [p for p in OPERATOR_NEEDS if can_i(crds, user, *p, other)]
    assert not leaked, f"namespaced mode grants {leaked} in a namespace it does not serve"
    assert not can_i(crds, user, "get", "secrets", namespace)  # not even its own namespace
    for verb, resource in [("list", "tuneexperiments.kubetune.io"), ("list", "pods")]:
        assert not can_i(crds, user, verb, resource, None), f"cluster-wide {verb} {resource}"
    for verb, resource in [("list", "nodes"), ("create", "namespaces"), ("get", "secrets")]:
        assert not can_i(crds, user, verb, resource, None)
    # Read-only, cluster-wide, names and schemas only: kopf resolves the served namespaces and
    # notices CRD upgrades.
    assert can_i(crds, user, "watch", "customresourcedefinitions.apiextensions.k8s.io", None)
    assert can_i(crds, user, "list", "namespaces", None)

    # The same with the ServiceAccount's own token (TokenRequest), not impersonation.
    for ns in (served, other):
        crds.kubectl("create", "secret", "generic", "s3", "-n", ns, "--from-literal=k=v")
    token = crds.kubectl("create", "token", sa, "-n", namespace, "--duration=10m").stdout.strip()
    kubeconfig = crds.write_kubeconfig(tmp_path / "sa.kubeconfig", token, user=sa)
    as_sa = [str(crds.kubectl_path), f"--kubeconfig={kubeconfig}"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_sa, *args], capture_output=True, text=True, timeout=30)

    assert run("get", "secret", "s3", "-n", served).returncode == 0
    denied = run("get", "secret", "s3", "-n", other)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr
    assert "Forbidden" in run("get", "secrets", "-n", served).stderr  # no list
    assert "Forbidden" in run("get", "tuneexperiments", "-A").stderr


def test_clusterwide_release_serves_every_namespace_without_listing_secrets(
    crds, namespace, extra_namespaces, releases
):
    anywhere = extra_namespaces("any")
    release = release_name()
    install(crds, release, namespace, "-f", str(CHART / "ci" / "default-values.yaml"))
    releases.append((release, namespace))
    user = f"system:serviceaccount:{namespace}:{release}-kubetune"
    missing = [p for p in OPERATOR_NEEDS if not can_i(crds, user, *p, anywhere)]
    assert not missing, f"the chart does not grant {missing}"
    extra = [p for p in OPERATOR_MUST_NOT if can_i(crds, user, *p, anywhere)]
    assert not extra, f"the chart grants {extra}"
    assert can_i(crds, user, "watch", "tuneexperiments.kubetune.io", None)
    assert not can_i(crds, user, "list", "secrets", None)
    assert not can_i(crds, user, "patch", "clusterkopfpeerings.kopf.dev", None)  # standalone


def test_ha_release_creates_the_peering_object_and_may_patch_it(crds, namespace, releases):
    release = release_name()
    install(crds, release, namespace, "-f", str(CHART / "ci" / "ha-values.yaml"))
    releases.append((release, namespace))
    user = f"system:serviceaccount:{namespace}:{release}-kubetune"
    assert crds.kubectl("get", "clusterkopfpeering", "kubetune").returncode == 0
    for verb in ("list", "watch", "patch"):
        assert can_i(crds, user, verb, "clusterkopfpeerings.kopf.dev", None)
    deployment = json.loads(
        crds.kubectl(
            "get", "deployment", f"{release}-kubetune", "-n", namespace, "-o", "json"
        ).stdout
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=kubetune" in args


# -- the operator under the chart's identity --------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_env(container: dict[str, Any], pod: dict[str, str]) -> dict[str, str]:
    """The container's env as the kubelet would set it (fieldRefs resolved)."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            field = var["valueFrom"]["fieldRef"]["fieldPath"]
            env[var["name"]] = pod[field]
    return env


def operator_entrypoint(command: str) -> Path | None:
    """The console script the image's PATH would find, from this interpreter's environment."""
    script = Path(sys.executable).parent / command
    return script if script.exists() else None


class RenderedOperator:
    """The operator as the rendered Deployment would run it: the container's command (the
    console script from this environment), args and env (fieldRefs resolved), logged in with
    a TokenRequest token of the Deployment's ServiceAccount; stopped by process group."""

    def __init__(
        self,
        cp: Any,
        release: str,
        namespace: str,
        workdir: Path,
        tag: str = "0",
        own_ports: bool = False,
    ):
        docs = docs_of(helm(cp, "get", "manifest", release, "-n", namespace).stdout)
        self.container = container_of(docs)
        if own_ports:  # a second replica on this host: pods would each have their own network
            ports = {"--liveness-port=": free_port(), "--metrics-port=": free_port()}
            self.container["args"] = [
                next((f"{flag}{port}" for flag, port in ports.items() if a.startswith(flag)), a)
                for a in self.container["args"]
            ]
            for entry in self.container["ports"]:
                flag = f"--{entry['name']}-port="
                if flag in ports:
                    entry["containerPort"] = ports[flag]
        spec = by_kind(component(docs, "operator"), "Deployment")[0]["spec"]["template"]["spec"]
        entry = operator_entrypoint(self.container["command"][0])
        if entry is None:
            pytest.skip(
                f"the console script {self.container['command'][0]!r} is not installed in "
                f"{Path(sys.executable).parent} (run `make .venv/.dev` after pyproject changes)"
            )
        sa = spec["serviceAccountName"]
        token = cp.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
        kubeconfig = cp.write_kubeconfig(workdir / f"operator-{tag}.kubeconfig", token, user=sa)
        pod = {"metadata.name": f"{release}-kubetune-{tag}", "metadata.namespace": namespace}
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            "KUBECONFIG": str(kubeconfig),
            **process_env(self.container, pod),
        }
        self.log_path = workdir / f"operator-{tag}.log"
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.liveness, self.metrics = ports["liveness"], ports["metrics"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(entry), *self.container["args"]],
                env=env,
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, "operator exited:\n" + self.log()[-4000:]

    def wait_healthy(self, timeout: float = 60) -> None:
        def healthy() -> bool:
            self.assert_alive()
            url = f"http://127.0.0.1:{self.liveness}/healthz"
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return True
            except OSError:
                return False

        wait_for(healthy, timeout, "the operator's /healthz (the Deployment's probes)")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


@pytest.fixture
def operators() -> Iterator[list[RenderedOperator]]:
    started: list[RenderedOperator] = []
    try:
        yield started
    finally:
        for op in started:
            op.stop()


def test_operator_runs_an_experiment_with_the_rendered_deployment_and_its_identity(
    crds, namespace, extra_namespaces, releases, operators, kubelet, kube_api, s3_server,
    s3_bucket, tmp_path,
):  # fmt: skip
    from kubernetes import client

    served = extra_namespaces("served")
    release = release_name()
    install(
        crds, release, namespace,
        "--set", f"watchNamespaces={{{served}}}",
        "--set", f"operator.livenessPort={free_port()}",
        "--set", f"operator.metricsPort={free_port()}",
        "--set", f"defaultStorage.endpoint={s3_server.endpoint_url}",
        "--set", "defaultStorage.addressingStyle=path",
    )  # fmt: skip
    releases.append((release, namespace))
    op = RenderedOperator(crds, release, namespace, tmp_path)
    operators.append(op)
    container = op.container
    op.wait_healthy()
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics}/metrics", timeout=5) as rsp:
        assert rsp.status == 200
    s3_secret(kube_api, served, s3_server)
    experiment = yaml.safe_load((REPO / "examples" / "quadratic.yaml").read_text())
    # The test kubelet runs the image's commands from this checkout: the trainable module is
    # examples/quadratic.py (in a real image it sits in /app, the working directory).
    experiment["spec"]["trainable"]["pythonPath"] = [str(REPO / "examples"), str(REPO)]
    # The endpoint comes from the chart's defaultStorage (KUBETUNE_DEFAULT_S3_ENDPOINT).
    experiment["spec"]["storage"] = {
        "bucket": s3_bucket,
        "secretName": "s3",
        "addressingStyle": "path",
    }
    custom = client.CustomObjectsApi(kube_api)
    custom.create_namespaced_custom_object(GROUP, VERSION, served, "tuneexperiments", experiment)
    name = experiment["metadata"]["name"]

    def status() -> dict[str, Any]:
        op.assert_alive()
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, served, "tuneexperiments", name)
        return obj.get("status") or {}

    try:
        wait_for(lambda: status().get("phase") in ("Succeeded", "Failed"), 120, "the end")
    except AssertionError:
        print(op.log()[-6000:])
        raise
    final = status()
    assert final["phase"] == "Succeeded", (final, op.log()[-6000:])
    conditions = {c["type"]: c for c in final["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    total = experiment["spec"]["tuneConfig"]["numSamples"]
    assert final["trials"]["terminated"] == total
    trials = custom.list_namespaced_custom_object(GROUP, VERSION, served, "tunetrials")["items"]
    losses = {t["metadata"]["name"]: (t["spec"]["config"]["x"] - 3) ** 2 for t in trials}
    assert len(losses) == total
    best = min(losses, key=losses.__getitem__)
    assert final["bestTrial"]["name"] == best
    assert final["bestTrial"]["metric"] == pytest.approx(losses[best])
    keys = [
        o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    ]
    assert sum(k.endswith("/result.json") for k in keys) == total, keys
    # The sidecars' identity, made by the operator under the chart's RBAC (and used: the real
    # sidecar reported every result with its token).
    core = client.CoreV1Api(kube_api)
    trial_sa = next(e["value"] for e in container["env"] if e["name"].endswith("ACCOUNT"))
    core.read_namespaced_service_account(trial_sa, served)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    assert rbac.list_namespaced_role(served).items
    assert rbac.list_namespaced_role_binding(served).items
    text = op.log()
    assert "forbidden" not in text.lower(), text[-6000:]


def test_ha_operator_serves_through_its_peering_object(
    crds, namespace, extra_namespaces, releases, operators, tmp_path
):
    """replicaCount > 1 renders --peering: the operator, under the chart's RBAC, keeps itself
    alive in the KopfPeering object that the chart's hook created in the served namespace."""
    served = extra_namespaces("served")
    release = release_name()
    install(
        crds, release, namespace, "-f", str(CHART / "ci" / "ha-values.yaml"),
        "--set", f"watchNamespaces={{{served}}}",
        "--set", f"operator.livenessPort={free_port()}",
        "--set", f"operator.metricsPort={free_port()}",
    )  # fmt: skip
    releases.append((release, namespace))
    op = RenderedOperator(crds, release, namespace, tmp_path)
    operators.append(op)
    assert "--peering=kubetune" in op.container["args"]
    op.wait_healthy()

    def peers() -> dict[str, Any]:
        op.assert_alive()
        out = crds.kubectl("get", "kopfpeering", "kubetune", "-n", served, "-o", "json").stdout
        return json.loads(out).get("status") or {}

    status = wait_for(peers, 60, "the operator's keep-alive in its KopfPeering")
    assert len(status) == 1, status
    assert "forbidden" not in op.log().lower(), op.log()[-6000:]

    # A second replica (another pod name, so another priority): both keep themselves alive,
    # with different priorities, and the lower one pauses instead of acting (kopf #734: equal
    # priorities would pause both).
    second = RenderedOperator(crds, release, namespace, tmp_path, tag="1", own_ports=True)
    operators.append(second)
    second.wait_healthy()
    status = wait_for(lambda: len(peers()) == 2 and peers(), 60, "both replicas in the peering")
    priorities = sorted(int(peer["priority"]) for peer in status.values())
    assert priorities[0] != priorities[1], status

    def active(o: RenderedOperator) -> bool:
        # kopf starts a replica with mandatory peering paused and logs only changes: it acts
        # once it logged "Resuming operations" after its last "Pausing operations"
        log = o.log()
        return log.rfind("Resuming operations") > log.rfind("Pausing operations")

    def one_acts() -> bool:
        return sum(map(active, (op, second))) == 1

    try:
        wait_for(one_acts, 90, "exactly one replica to act")
        time.sleep(5)  # and it stays so: the other one has seen the peering and still waits
        assert one_acts()
    except AssertionError:
        print("first replica:", op.log()[-4000:], "second replica:", second.log()[-4000:])
        print("peering:", peers())
        raise
    for o in (op, second):
        assert "including self" not in o.log().lower()  # equal priorities would pause both


# -- GitOps: the examples as a kustomization --------------------------------------------------


def test_examples_build_with_kustomize_and_pass_server_side_dry_run(crds, namespace):
    built = docs_of(crds.kubectl("kustomize", str(REPO / "examples")).stdout)
    kinds = {d["kind"] for d in built}
    assert kinds == {"TuneExperiment"}, kinds
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kubetune" for d in built)
    result = crds.kubectl(
        "apply", "-k", str(REPO / "examples"), "-n", namespace, "--dry-run=server"
    )
    assert result.stdout.count("(server dry run)") == len(built)


# -- the dashboard (dashboard.enabled) ----------------------------------------------------------
DASHBOARD_RULES = [
    {"apiGroups": ["kubetune.io"], "resources": ["tuneexperiments"], "verbs": ["get", "list"]},
    {"apiGroups": ["kubetune.io"], "resources": ["tunetrials"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]
DASHBOARD_NEEDS = [
    ("get", "tuneexperiments.kubetune.io"),
    ("list", "tuneexperiments.kubetune.io"),
    ("list", "tunetrials.kubetune.io"),
    ("list", "pods"),
    ("list", "events"),
    ("get", "pods/log"),
]
DASHBOARD_MUST_NOT = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("watch", "tuneexperiments.kubetune.io"),
    ("patch", "tuneexperiments.kubetune.io"),
    ("create", "tuneexperiments.kubetune.io"),
    ("delete", "tuneexperiments.kubetune.io"),
    ("patch", "tunetrials.kubetune.io"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "pods/exec"),
    ("create", "events"),
    ("get", "configmaps"),
]


def test_dashboard_renders_read_only_next_to_the_operator(crds, namespace, extra_namespaces):
    """`helm template` with dashboard.enabled: the dashboard's Deployment runs `kubetune
    dashboard --cluster` from the operator image on every interface of its pod, behind a
    ClusterIP Service; the S3 keys come by secretKeyRef; its RBAC is the read-only rules above,
    per served namespace in namespaced mode; it has its own ServiceAccount."""
    release = release_name()
    values = CHART / "ci" / "dashboard-values.yaml"
    served = [extra_namespaces("a"), extra_namespaces("b")]
    for sets in ([], ["watchNamespaces={" + ",".join(served) + "}"]):
        docs = render(crds, release, namespace, values, *sets)
        dash = component(docs, "dashboard")
        container = container_of(docs, "dashboard")
        assert container["image"] == container_of(docs)["image"]  # the operator image
        assert container["command"] == ["kubetune"]
        args = container["args"]
        assert args[:2] == ["dashboard", "--cluster"] and "--host=0.0.0.0" in args
        if sets:
            assert [a for a in args if a.startswith("--namespace")] == [
                f"--namespace={ns}" for ns in served
            ]
        else:
            assert "--all-namespaces" in args
        env = {e["name"]: e for e in container["env"]}
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-credentials"
        assert env["KUBETUNE_S3_ENDPOINT_URL"]["value"] == "http://minio.minio.svc:9000"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        (service,) = by_kind(dash, "Service")
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["ports"][0]["targetPort"] == "http"
        (deployment,) = by_kind(dash, "Deployment")
        pod = deployment["spec"]["template"]
        assert service["spec"]["selector"] == pod["metadata"]["labels"]
        (sa,) = by_kind(dash, "ServiceAccount")
        name = f"{release}-kubetune-dashboard"
        assert pod["spec"]["serviceAccountName"] == sa["metadata"]["name"] == name
        roles = by_kind(dash, "Role" if sets else "ClusterRole")
        assert [r["rules"] for r in roles] == [DASHBOARD_RULES] * (len(served) if sets else 1)
        if sets:
            assert {r["metadata"]["namespace"] for r in roles} == set(served)
            assert not by_kind(dash, "ClusterRole")
        result = kubectl_json(crds, "apply", "--dry-run=server", docs=dash)
        assert "(server dry run)" in result.stdout


def test_dashboard_release_may_read_and_nothing_more(crds, namespace, extra_namespaces, releases):
    served, other = extra_namespaces("served"), extra_namespaces("other")
    release = release_name()
    install(
        crds,
        release,
        namespace,
        "--set",
        f"watchNamespaces={{{served}}}",
        "--set",
        "dashboard.enabled=true",
    )
    releases.append((release, namespace))
    user = f"system:serviceaccount:{namespace}:{release}-kubetune-dashboard"
    missing = [p for p in DASHBOARD_NEEDS if not can_i(crds, user, *p, served)]
    assert not missing, f"the dashboard lacks {missing} in the served namespace"
    extra = [p for p in DASHBOARD_MUST_NOT if can_i(crds, user, *p, served)]
    assert not extra, f"the dashboard may {extra}"
    leaked = [p for p in DASHBOARD_NEEDS if can_i(crds, user, *p, other)]
    assert not leaked, f"the dashboard may {leaked} in a namespace the operator does not serve"
    assert not can_i(crds, user, "get", "secrets", namespace)
    assert not can_i(crds, user, "list", "tuneexperiments.kubetune.io", None)
