"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, built by ``tests.testenv.build``. No kubelet: tests/testenv/kubelet* registers
nodes and runs the pods that the scheduler binds to them.

    python -m tests.testenv.controlplane     # start one by hand; prints KUBECONFIG; Ctrl-C stops

In Python::

    with ControlPlane.start() as cp:
        subprocess.run([cp.kubectl_path, "--kubeconfig", cp.kubeconfig, "get", "ns"])

Identities (static tokens, so they exist from the first request on):
``token`` is ``kubetune-admin`` in ``system:masters``; ``kubelet_token`` is
``kubetune-test-kubelet`` in ``system:masters`` (for the test kubelet, so its writes are told
apart in audit and managedFields); the scheduler runs as ``system:kube-scheduler`` with the
bootstrap RBAC policy's role; the controller-manager runs as ``system:kube-controller-manager``
in ``system:masters``, its controllers sharing that identity (see the flag's comment below).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.testenv import build, certs
from tests.testenv.procs import ManagedProcess, StopsOnExit, free_port, stop_all, wait_until

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service's ClusterIP, first address of SERVICE_CIDR
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
READY_TIMEOUT_S = 60.0


class BinariesMissing(RuntimeError):
    """The testenv binaries are not built (run ``python -m tests.testenv.build``)."""


@dataclass
class ControlPlane(StopsOnExit):
    workdir: Path
    bin_dir: Path
    api_port: int
    etcd_url: str
    token: str
    kubelet_token: str
    ca_path: Path
    ca_key_path: Path
    sa_private_key_path: Path
    sa_public_key_path: Path
    kubeconfig: Path
    kubelet_kubeconfig: Path
    service_account_issuer: str = SA_ISSUER
    service_cidr: str = SERVICE_CIDR
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    keep_workdir: bool = False
    startup_seconds: float = 0.0

    # -- addresses -------------------------------------------------------------------------

    @property
    def api_host(self) -> str:
        return "127.0.0.1"

    @property
    def api_url(self) -> str:
        return f"https://{self.api_host}:{self.api_port}"

    @property
    def kubectl_path(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def helm_path(self) -> Path:
        return self.bin_dir / "helm"

    def env(self) -> dict[str, str]:
        """Variables a process needs to reach this control plane as an in-cluster client would,
        plus KUBECONFIG for kubectl and helm, and helm's homes inside the work dir."""
        helm = self.workdir / "helm"
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(helm / "cache"),
            "HELM_CONFIG_HOME": str(helm / "config"),
            "HELM_DATA_HOME": str(helm / "data"),
            "KUBERNETES_SERVICE_HOST": self.api_host,
            "KUBERNETES_SERVICE_PORT": str(self.api_port),
        }

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        bin_dir: Path | None = None,
        workdir: Path | None = None,
        timeout: float = READY_TIMEOUT_S,
    ) -> ControlPlane:
        """Start etcd, the apiserver, the controller-manager and the scheduler; return once the
        apiserver's and the scheduler's /readyz and the controller-manager's /healthz answer
        200 and the `default` namespace has its ServiceAccount and root-CA ConfigMap. A port
        taken between choosing it and binding it costs one more try."""
        for attempt in range(3):
            try:
                return cls._start_once(bin_dir, workdir, timeout)
            except RuntimeError as err:
                if "address already in use" not in str(err) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _start_once(
        cls, bin_dir: Path | None, workdir: Path | None, timeout: float
    ) -> ControlPlane:
        began = time.monotonic()
        bin_dir = bin_dir or build.bin_dir()
        absent = [
            n
            for n in (
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kubectl",
            )
            if not os.access(bin_dir / n, os.X_OK)
        ]
        if absent:
            raise BinariesMissing(
                f"testenv binaries missing in {bin_dir}: {', '.join(absent)}; build them with "
                "`python -m tests.testenv.build` (or `make testenv`)"
            )
        keep = bool(os.environ.get("KUBETUNE_TESTENV_KEEP"))
        workdir = workdir or Path(tempfile.mkdtemp(prefix="kubetune-cp-"))
        keys = certs.generate(workdir / "pki", ip_addresses=("127.0.0.1", SERVICE_IP))
        etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
        cp = cls(
            workdir=workdir,
            bin_dir=bin_dir,
            api_port=api_port,
            etcd_url=f"http://127.0.0.1:{etcd_port}",
            token=secrets.token_hex(16),
            kubelet_token=secrets.token_hex(16),
            ca_path=keys.ca_cert,
            ca_key_path=keys.ca_key,
            sa_private_key_path=keys.sa_private_key,
            sa_public_key_path=keys.sa_public_key,
            kubeconfig=workdir / "admin.kubeconfig",
            kubelet_kubeconfig=workdir / "kubelet.kubeconfig",
            keep_workdir=keep,
        )
        try:
            cp._launch(keys, etcd_port, etcd_peer_port, timeout)
        except BaseException:
            cp.stop()
            raise
        cp.startup_seconds = time.monotonic() - began
        # Processes are swept by procs' own atexit hook; this also removes the work dir.
        atexit.register(cp.stop)
        return cp

    def _launch(
        self, keys: certs.ControlPlaneCerts, etcd_port: int, etcd_peer_port: int, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        logs = self.workdir / "logs"
        peer = f"http://127.0.0.1:{etcd_peer_port}"
        etcd = self._spawn(
            "etcd",
            [
                "--name=testenv",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=testenv={peer}",
                # Tests do not survive power loss; fsync would dominate every write.
                "--unsafe-no-fsync",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
            logs,
        )
        wait_until(
            "etcd /health",
            lambda: _http_ok(f"{self.etcd_url}/health"),
            deadline - time.monotonic(),
            watch=[etcd],
        )

        tokens = self.workdir / "tokens.csv"
        kcm_token, sched_token = secrets.token_hex(16), secrets.token_hex(16)
        tokens.write_text(
            f'{self.token},kubetune-admin,kubetune-admin,"system:masters"\n'
            f'{self.kubelet_token},kubetune-test-kubelet,kubetune-test-kubelet,"system:masters"\n'
            f'{kcm_token},system:kube-controller-manager,system:kube-controller-manager,"system:masters"\n'
            f"{sched_token},system:kube-scheduler,system:kube-scheduler\n"
        )
        tokens.chmod(0o600)
        self._write_kubeconfig(self.kubeconfig, "kubetune-admin", self.token)
        self._write_kubeconfig(self.kubelet_kubeconfig, "kubetune-test-kubelet", self.kubelet_token)
        kcm_kubeconfig = self._write_kubeconfig(
            self.workdir / "controller-manager.kubeconfig",
            "system:kube-controller-manager",
            kcm_token,
        )
        sched_kubeconfig = self._write_kubeconfig(
            self.workdir / "scheduler.kubeconfig", "system:kube-scheduler", sched_token
        )

        apiserver = self._spawn(
            "kube-apiserver",
            [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.workdir / 'apiserver'}",
                f"--tls-cert-file={keys.serving_cert}",
                f"--tls-private-key-file={keys.serving_key}",
                f"--client-ca-file={keys.ca_cert}",
                f"--etcd-servers={self.etcd_url}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={self.service_account_issuer}",
                f"--service-account-key-file={keys.sa_public_key}",
                f"--service-account-signing-key-file={keys.sa_private_key}",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--allow-privileged=true",
                # Endpoints may not point at loopback; nothing here routes Service IPs anyway
                # (in-cluster clients get KUBERNETES_SERVICE_HOST=127.0.0.1 from the kubelet).
                "--endpoint-reconciler-type=none",
                # Logs and exec reach a real kubelet (tests/testenv/node.py) at its node's
                # InternalIP: nothing resolves node names here.
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
                "--v=1",
            ],
            logs,
        )
        # The controllers start once RBAC's bootstrap policy is in place (part of /readyz):
        # started earlier, their informers get 403s and back off for many seconds.
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        wait_until(
            "kube-apiserver /readyz",
            lambda: _http_ok(f"{self.api_url}/readyz", ctx, self.token),
            deadline - time.monotonic(),
            watch=[etcd, apiserver],
        )
        ports = {"kube-controller-manager": free_port(), "kube-scheduler": free_port()}
        kcm = self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kcm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kube-controller-manager']}",
                f"--cert-dir={self.workdir / 'controller-manager'}",
                "--leader-elect=false",
                # Every controller shares the manager's identity (in system:masters). One
                # service account per controller, as kubeadm does, doubles the time to ready
                # (about 4 s more on 2 cores) and changes nothing the tests can observe.
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={keys.sa_private_key}",
                f"--root-ca-file={keys.ca_cert}",
                f"--cluster-signing-cert-file={keys.ca_cert}",
                f"--cluster-signing-key-file={keys.ca_key}",
                f"--service-cluster-ip-range={self.service_cidr}",
                # A node whose Lease stops (the test kubelet renews it every 2 s; see
                # TestKubelet.crash) is marked unreachable after 15 s, checked every 2 s,
                # instead of 50 s and 5 s, so node-loss tests take seconds, not minutes.
                "--node-monitor-grace-period=15s",
                "--node-monitor-period=2s",
                "--profiling=false",
                "--v=1",
            ],
            logs,
        )
        scheduler = self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={sched_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kube-scheduler']}",
                f"--cert-dir={self.workdir / 'scheduler'}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
            logs,
        )

        insecure = ssl._create_unverified_context()  # their serving certs are self-signed
        for name, proc, check in (
            ("kube-controller-manager", kcm, "healthz"),
            # The scheduler's /readyz waits for its informers to sync.
            ("kube-scheduler", scheduler, "readyz"),
        ):
            url = f"https://127.0.0.1:{ports[name]}/{check}"
            wait_until(
                f"{name} /{check}",
                functools.partial(_http_ok, url, insecure),
                deadline - time.monotonic(),
                watch=[proc, apiserver],
            )
        # The controller-manager's /healthz passes before its controllers have all started;
        # ready means a pod could be created now, so wait for what the service-account and
        # root-CA controllers make in every namespace.
        for path in (
            "/api/v1/namespaces/default/serviceaccounts/default",
            "/api/v1/namespaces/default/configmaps/kube-root-ca.crt",
        ):
            wait_until(
                f"GET {path}",
                functools.partial(self._exists, path),
                deadline - time.monotonic(),
                watch=[apiserver, kcm],
            )

    def _exists(self, path: str) -> bool:
        return self.request("GET", path)[0] == 200

    def _spawn(self, name: str, args: list[str], logs: Path) -> ManagedProcess:
        proc = ManagedProcess(
            name, [str(self.bin_dir / name), *args], logs / f"{name}.log", cwd=self.workdir
        )
        self.processes[name] = proc
        return proc

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubetune-testenv",
                    "cluster": {"server": self.api_url, "certificate-authority": str(self.ca_path)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "kubetune-testenv",
                    "context": {
                        "cluster": "kubetune-testenv",
                        "user": user,
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "kubetune-testenv",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def write_kubeconfig(
        self, path: Path, token: str, user: str = "user", namespace: str = "default"
    ) -> Path:
        """Write a kubeconfig for another identity (a service-account token, say)."""
        self._write_kubeconfig(path, user, token)
        text = yaml.safe_load(path.read_text())
        text["contexts"][0]["context"]["namespace"] = namespace
        path.write_text(yaml.safe_dump(text, sort_keys=False))
        return path

    def stop(self) -> None:
        """Stop every process (scheduler first, etcd last) and remove the work directory
        unless KUBETUNE_TESTENV_KEEP is set. Idempotent."""
        atexit.unregister(self.stop)
        order = ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
        procs = [self.processes[n] for n in order if n in self.processes]
        procs += [p for n, p in self.processes.items() if n not in order]
        stop_all(procs)
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def alive(self) -> bool:
        return bool(self.processes) and all(p.alive() for p in self.processes.values())

    # -- conveniences ----------------------------------------------------------------------

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl as the admin against this control plane."""
        return subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            text=True,
            capture_output=True,
            input=input,
            timeout=timeout,
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """A raw API call with the stdlib (no kubernetes client needed): (status, body), the
        body decoded from JSON where it is JSON, else text."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, _decode(err.read())

    def apply_crds(self, path: Path | str, *names: str, timeout: float = 90) -> str:
        """``kubectl apply --server-side`` of the CRDs at ``path``, then wait until each of
        ``names`` is Established (polled through the API: a just-started apiserver may not
        serve a new CRD for a moment, where ``kubectl wait`` fails at once). Returns kubectl's
        output."""
        out = self.kubectl("apply", "--server-side", "-f", str(path)).stdout
        self.wait_established(*names, timeout=timeout)
        return out

    def wait_established(self, *names: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            while True:
                try:
                    code, body = self.request("GET", path)
                except OSError:  # a connection reset while the apiserver is busy
                    code, body = 0, None
                ok = code == 200 and isinstance(body, dict)
                conditions = (body.get("status") or {}).get("conditions") or [] if ok else []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"CRD {name} not Established in {timeout:g} s: {body}")
                time.sleep(0.2)

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {n} ({p.log_path}):\n{p.log_tail(lines)}" for n, p in self.processes.items()
        )


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _http_ok(url: str, ctx: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
        return bool(resp.status == 200)


def main() -> int:
    try:
        cp = ControlPlane.start()
    except BinariesMissing as err:
        print(err, file=sys.stderr)
        return 2

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    with cp:
        print(f"control plane ready in {cp.startup_seconds:.1f} s at {cp.api_url}")
        print(f"work dir: {cp.workdir}  (logs in {cp.workdir / 'logs'})")
        print(f"kubeconfig: {cp.kubeconfig}")
        print(f"  export KUBECONFIG={cp.kubeconfig} PATH={cp.bin_dir}:$PATH")
        print(
            "Ctrl-C stops it and removes the work dir (KUBETUNE_TESTENV_KEEP=1 keeps it).",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while cp.alive():
                time.sleep(1)
            print("a control-plane process exited:\n" + cp.log_tails(), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
