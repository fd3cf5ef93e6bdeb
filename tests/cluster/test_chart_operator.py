"""The operator started as a local process with exactly the command, args and env of the
chart's rendered Deployment's container, authenticated with that ServiceAccount's token, runs an
experiment to Succeeded. Trial pods run as processes on the test kubelet with the real sidecar,
which reports with the trial ServiceAccount that the operator made under the chart's RBAC. With
replicaCount > 1 it serves through its peering object."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import chart_helpers
from tests.cluster.chart_helpers import (
    CHART,
    GROUP,
    REPO,
    VERSION,
    by_kind,
    component,
    container_of,
    docs_of,
    helm,
    install,
    release_name,
)
from tests.testenv.helpers import s3_secret, wait_for

crds = chart_helpers.crds  # fixtures
extra_namespaces = chart_helpers.extra_namespaces
releases = chart_helpers.releases


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
