"""The cluster a benchmark runs on: the real control plane of tests/testenv and, as the
benchmark asks, the S3 server, a namespace ready for experiments, the test kubelet and the
operator as a process. Leaving the ``with`` block stops all of it, the last started first.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from tests.testenv.controlplane import ControlPlane
    from tests.testenv.kubelet import TestKubelet
    from tests.testenv.s3 import S3Server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def api_writes_by_kind(metrics: dict[str, float]) -> dict[str, float]:
    """The operator's API writes (``kubetune_api_writes_total``) by their labels."""
    prefix = "kubetune_api_writes_total{"
    return {k[len(prefix) :].rstrip("}"): v for k, v in metrics.items() if k.startswith(prefix)}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class BenchCluster:
    """``with BenchCluster() as c:`` the control plane is up (``c.cp``)."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._api: Any = None
        self.cp: ControlPlane
        self.s3: S3Server

    def __enter__(self) -> BenchCluster:
        from tests.testenv.controlplane import ControlPlane

        self.cp = ControlPlane.start()
        self.on_exit(self.cp.stop)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def on_exit(self, stop: Callable[[], object]) -> None:
        """Call ``stop`` on the way out (before what was started earlier is stopped)."""
        self._stack.callback(stop)

    @property
    def api(self) -> Any:
        """A kubernetes ``ApiClient`` logged in as the admin."""
        if self._api is None:
            from kubernetes import client, config

            cfg = client.Configuration()
            config.load_kube_config(config_file=str(self.cp.kubeconfig), client_configuration=cfg)
            self._api = client.ApiClient(cfg)
        return self._api

    def start_s3(self) -> S3Server:
        from tests.testenv.s3 import S3Server

        self.s3 = S3Server.start()
        self.on_exit(self.s3.stop)
        return self.s3

    def experiment_namespace(self, namespace: str, bucket: str) -> None:
        """The CRDs applied; ``namespace`` with the S3 credentials Secret ``s3``; ``bucket``."""
        from kubernetes import client

        from tests.testenv.helpers import s3_secret

        self.cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        core = client.CoreV1Api(self.api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        s3_secret(self.api, namespace, self.s3)
        self.s3.client().create_bucket(Bucket=bucket)

    def start_kubelet(self, **kwargs: Any) -> TestKubelet:
        """The test kubelet registered with the control plane (``TestKubelet``'s arguments)."""
        from tests.testenv.kubelet import TestKubelet

        kubelet = TestKubelet(self.cp.kubelet_kubeconfig, **kwargs).start()
        self.on_exit(kubelet.stop)
        return kubelet

    def start_operator(self, namespace: str, log_name: str) -> tuple[subprocess.Popen[bytes], int]:
        """The operator watching ``namespace``, standalone, logging to TMPDIR/``log_name``;
        the process and its metrics port."""
        from tests.testenv.helpers import operator_command
        from tests.testenv.procs import end_process

        metrics_port = free_port()
        env = {**os.environ, "KUBECONFIG": str(self.cp.kubeconfig)}
        log = open(Path(tempfile.gettempdir()) / log_name, "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            operator_command(namespace, metrics_port),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.on_exit(lambda: end_process(proc))
        return proc, metrics_port


def worker_resources(workers: int, cpu: float, strategy: str) -> dict[str, Any]:
    """``spec.resources`` of a trial of ``workers`` pods of ``cpu`` CPUs each (Ray's
    placement group of a trainer bundle and one bundle a worker)."""
    return {"bundles": [{}] + [{"CPU": cpu}] * workers, "strategy": strategy, "workers": workers}


def run_experiment(
    custom: Any,
    namespace: str,
    body: dict[str, Any],
    operator: subprocess.Popen[bytes],
    timeout: float,
    poll: float,
) -> tuple[dict[str, Any], str, float]:
    """Create the TuneExperiment ``body`` and poll it until it has Succeeded or Failed: it,
    its phase and the seconds that took. Raises if the operator exits first or after
    ``timeout`` seconds."""
    from tests.cluster.operator_helpers import GROUP, VERSION

    name = body["metadata"]["name"]
    began = time.monotonic()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "tuneexperiments", body)
    while True:
        exp = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "tuneexperiments", name
        )
        phase = (exp.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return exp, phase, time.monotonic() - began
        if operator.poll() is not None or time.monotonic() - began > timeout:
            raise RuntimeError(f"operator exited or timed out (phase {phase})")
        time.sleep(poll)
