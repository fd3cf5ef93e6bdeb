"""A real Kueue controller against the test control plane (Kueue's plain-pod integration).

``kueue-manager`` is Kueue's own ``cmd/kueue`` at ``build.KUEUE_VERSION``, built by
``tests.testenv.build`` (group ``kueue``). Its CRDs come from the same module
(``config/components/crd/bases``), its webhooks from ``config/components/webhook/manifests.yaml``,
pointed by URL at the manager's webhook server on loopback (``clientConfig.url``) with a
throwaway CA from ``tests.testenv.certs`` as ``caBundle``; internal cert management is off.

Only what the tests need is enabled: the ``pod`` integration, for namespaces labelled
``kubetune.test/kueue=true`` alone (``managedJobsNamespaceSelector``, and the same selector on
the pod webhooks, so pods of every other test never meet Kueue); no leader election, metrics or
visibility server.

Kueue with internal certs off reads a metrics certificate from a fixed path
(``/etc/kueue/metrics/certs``) even when metrics are off: the manager runs in a private mount
namespace (``unshare --mount``, root only) where the fixture's own certificates are bind-mounted
there, so nothing of the machine's /etc changes but an empty mount point.

Fixtures: ``kueue`` (session: the controller), ``kueue_namespace`` (the test's namespace,
labelled) and ``kueue_queue`` (a ResourceFlavor, a ClusterQueue with a quota and a LocalQueue in
``kueue_namespace``; ``kueue_queue(gpus=2)``), all removed afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.testenv import build, certs
from tests.testenv.procs import ManagedProcess, free_port, wait_until

NAMESPACE_LABEL = "kubetune.test/kueue"
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")  # fixed in Kueue's cmd/kueue/main.go
API = "kueue.x-k8s.io/v1beta2"
READY_TIMEOUT_S = 120.0
MUTATING = "kubetune-testenv-kueue-mutating"
VALIDATING = "kubetune-testenv-kueue-validating"


class KueueUnavailable(RuntimeError):
    """Kueue cannot run here (not built, or no root for its private mount)."""


def module_dir() -> Path:
    """The Kueue module's source tree in the Go module cache (downloaded when missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = build.run_go(
            ["mod", "download", "-json", f"sigs.k8s.io/kueue@{build.KUEUE_VERSION}"], Path(tmp)
        )
    info = json.loads(out)
    if info.get("Error") or not info.get("Dir"):
        raise KueueUnavailable(f"sigs.k8s.io/kueue@{build.KUEUE_VERSION}: {info.get('Error')}")
    return Path(info["Dir"])


def crd_documents(source: Path) -> list[dict[str, Any]]:
    folder = source / "config" / "components" / "crd" / "bases"
    return [yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))]


def webhook_configurations(source: Path, url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """Kueue's webhook configurations, cut to the webhooks of pods and of Kueue's own kinds,
    each reached at URL + its path; the pod webhooks only see labelled namespaces."""
    path = source / "config" / "components" / "webhook" / "manifests.yaml"
    out = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        kept = []
        for hook in doc.get("webhooks") or []:
            groups = {g for rule in hook.get("rules") or [] for g in rule.get("apiGroups") or []}
            resources = {r for rule in hook.get("rules") or [] for r in rule.get("resources") or []}
            is_pod = groups == {""} and resources == {"pods"}
            if not is_pod and groups != {"kueue.x-k8s.io"}:
                continue
            service = hook["clientConfig"]["service"]
            hook["clientConfig"] = {"url": url + service["path"], "caBundle": ca_bundle}
            if is_pod:
                hook["namespaceSelector"] = {"matchLabels": {NAMESPACE_LABEL: "true"}}
            hook["timeoutSeconds"] = 10
            kept.append(hook)
        name = MUTATING if doc["kind"] == "MutatingWebhookConfiguration" else VALIDATING
        out.append({**doc, "metadata": {"name": name}, "webhooks": kept})
    return out


def manager_config(namespace: str, webhook_port: int, health_port: int, cert_dir: Path) -> str:
    config = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": namespace,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "managedJobsNamespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "true"}},
        "integrations": {"frameworks": ["pod"]},
        "clientConnection": {"qps": 50, "burst": 100},
    }
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class Kueue:
    control_plane: Any
    workdir: Path
    process: ManagedProcess
    webhook_port: int
    health_port: int
    webhook_configs: list[dict[str, Any]] = field(default_factory=list)
    startup_seconds: float = 0.0

    @classmethod
    def start(cls, control_plane: Any, workdir: Path | None = None) -> Kueue:
        binary = build.binary("kueue-manager")
        if not os.access(binary, os.X_OK):
            raise KueueUnavailable(
                f"{binary} is not built: `python -m tests.testenv.build --only kueue`"
            )
        if os.geteuid() != 0:
            raise KueueUnavailable(
                "Kueue needs its metrics certificate at /etc/kueue/metrics/certs; the fixture "
                "bind-mounts one in a private mount namespace, which needs root"
            )
        began = time.monotonic()
        source = module_dir()
        workdir = workdir or Path(tempfile.mkdtemp(prefix="kubetune-kueue-"))
        keys = certs.generate(workdir / "pki")
        cert_dir = workdir / "certs"
        cert_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(keys.serving_cert, cert_dir / "tls.crt")
        shutil.copy(keys.serving_key, cert_dir / "tls.key")
        ca_bundle = base64.b64encode(keys.ca_cert.read_bytes()).decode()

        crds = workdir / "crds.yaml"
        crds.write_text(yaml.safe_dump_all(crd_documents(source)))
        # the Workload CRD is too large for client-side apply's last-applied annotation
        control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
        control_plane.wait_established(
            *(doc["metadata"]["name"] for doc in crd_documents(source)), timeout=90
        )
        namespace = "kubetune-kueue-system"
        control_plane.kubectl("create", "namespace", namespace, check=False)

        webhook_port, health_port = free_port(), free_port()
        config = workdir / "config.yaml"
        config.write_text(manager_config(namespace, webhook_port, health_port, cert_dir))
        METRICS_CERT_DIR.mkdir(parents=True, exist_ok=True)  # an empty mount point
        script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "kueue",
            str(cert_dir),
            str(METRICS_CERT_DIR),
            str(binary),
            f"--config={config}",
            f"--kubeconfig={control_plane.kubeconfig}",
            "--feature-gates=VisibilityOnDemand=false",
            "--zap-log-level=info",
        ]
        process = ManagedProcess("kueue-manager", argv, workdir / "kueue-manager.log")
        kueue = cls(control_plane, workdir, process, webhook_port, health_port)
        try:
            wait_until("Kueue's /readyz", kueue.ready, READY_TIMEOUT_S, watch=[process])
            url = f"https://127.0.0.1:{webhook_port}"
            kueue.webhook_configs = webhook_configurations(source, url, ca_bundle)
            for body in kueue.webhook_configs:
                control_plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(body))
            # the webhooks answer through the API server once a defaulted object comes back
            wait_until(
                "Kueue's webhooks, through the API server",
                kueue._webhooks_answer,
                60,
                interval=0.5,
                watch=[process],
            )
        except BaseException:
            kueue.stop()
            raise
        kueue.startup_seconds = time.monotonic() - began
        return kueue

    def ready(self) -> bool:
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)

    def _webhooks_answer(self) -> bool:
        # server-side dry run through the mutating webhook of ResourceFlavors
        body = {
            "apiVersion": API,
            "kind": "ResourceFlavor",
            "metadata": {"name": f"probe-{secrets.token_hex(3)}"},
        }
        status, _ = self.control_plane.request(
            "POST", "/apis/kueue.x-k8s.io/v1beta2/resourceflavors?dryRun=All", body
        )
        return bool(status == 201)

    def alive(self) -> bool:
        return self.process.alive()

    def log_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines)

    def stop(self) -> None:
        """Remove the webhook configurations first (nothing may call a stopped webhook), then
        stop the manager. The CRDs stay: they are the control plane's, gone with it."""
        for name, kind in (
            (MUTATING, "mutatingwebhookconfiguration"),
            (VALIDATING, "validatingwebhookconfiguration"),
        ):
            with contextlib.suppress(Exception):
                self.control_plane.kubectl("delete", kind, name, "--ignore-not-found")
        self.process.stop()
        if not os.environ.get("KUBETUNE_TESTENV_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)


# -- queues ---------------------------------------------------------------------------------
def queue_objects(
    name: str, namespace: str, quota: dict[str, str], preemption: bool = False
) -> list[dict[str, Any]]:
    """A ResourceFlavor, a ClusterQueue covering QUOTA's resources with it, and a LocalQueue
    NAME in NAMESPACE pointing at the ClusterQueue (all named NAME)."""
    cluster_queue: dict[str, Any] = {
        "apiVersion": API,
        "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {},
            "queueingStrategy": "BestEffortFIFO",
            "resourceGroups": [
                {
                    "coveredResources": sorted(quota),
                    "flavors": [
                        {
                            "name": name,
                            "resources": [
                                {"name": r, "nominalQuota": q} for r, q in sorted(quota.items())
                            ],
                        }
                    ],
                }
            ],
        },
    }
    if preemption:
        cluster_queue["spec"]["preemption"] = {"withinClusterQueue": "LowerPriority"}
    return [
        {"apiVersion": API, "kind": "ResourceFlavor", "metadata": {"name": name}},
        cluster_queue,
        {
            "apiVersion": API,
            "kind": "LocalQueue",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterQueue": name},
        },
    ]


def kueue_get(control_plane: Any, path: str) -> Any:
    status, body = control_plane.request("GET", f"/apis/kueue.x-k8s.io/v1beta2{path}")
    if status != 200:
        raise AssertionError(f"GET {path}: HTTP {status}: {body}")
    return body


def _active(control_plane: Any, namespace: str, name: str) -> bool:
    body = kueue_get(control_plane, f"/namespaces/{namespace}/localqueues/{name}")
    conds = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Active" and c.get("status") == "True" for c in conds)


# -- pytest fixtures ------------------------------------------------------------------------
def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run every test)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kueue(control_plane: Any) -> Iterator[Kueue]:
    try:
        controller = Kueue.start(control_plane)
    except KueueUnavailable as err:
        _unavailable(str(err))
        raise  # unreachable: _unavailable raised
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def kueue_namespace(kueue: Kueue, namespace: str) -> str:
    """The test's namespace (tests/cluster/conftest.py), labelled for Kueue: returned once
    Kueue's pod webhook gates a (dry-run) queued pod there, so Kueue has seen the label."""
    cp = kueue.control_plane
    status, body = cp.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}",
        {"metadata": {"labels": {NAMESPACE_LABEL: "true"}}},
        content_type="application/merge-patch+json",
    )
    assert status == 200, body
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kueue-probe", "labels": {"kueue.x-k8s.io/queue-name": "probe"}},
        "spec": {"containers": [{"name": "c", "image": "probe"}]},
    }

    def gated() -> bool:
        code, pod = cp.request("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", probe)
        gates = (pod.get("spec") or {}).get("schedulingGates") or [] if code == 201 else []
        return any(g.get("name") == "kueue.x-k8s.io/admission" for g in gates)

    wait_until("Kueue's webhook gating pods in the namespace", gated, 30, interval=0.2)
    return namespace


QueueFactory = Callable[..., str]


@pytest.fixture
def kueue_queue(kueue: Kueue, kueue_namespace: str) -> Iterator[QueueFactory]:
    """``kueue_queue(gpus=2, cpu="16", memory="64Gi", preemption=False)``: the name of a new
    LocalQueue in ``kueue_namespace`` whose ClusterQueue has that quota; once Active."""
    cp = kueue.control_plane
    made: list[str] = []

    def make(gpus: int = 2, cpu: str = "16", memory: str = "64Gi", preemption: bool = False) -> str:
        name = f"q-{secrets.token_hex(3)}"
        quota = {"cpu": cpu, "memory": memory, "nvidia.com/gpu": str(gpus)}
        made.append(name)
        for body in queue_objects(name, kueue_namespace, quota, preemption):
            cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(body))
        wait_until(
            f"LocalQueue {name} Active",
            lambda: _active(cp, kueue_namespace, name),
            60,
            interval=0.2,
            watch=[kueue.process],
        )
        return name

    try:
        yield make
    finally:
        for name in made:
            # the LocalQueue goes with the namespace; its Workloads hold the ClusterQueue's
            # finalizer until they are gone, so the ClusterQueue is deleted without waiting
            cp.kubectl("delete", "clusterqueue", name, "--wait=false", "--ignore-not-found")
            cp.kubectl("delete", "resourceflavor", name, "--wait=false", "--ignore-not-found")
