"""A real node on this machine: containerd 2.x + runc + CNI bridge + kubelet, joined to a
tests.testenv.controlplane.ControlPlane, with a fake GPU device plugin.

    with RealNode.start(control_plane, registry_host, workdir) as node:
        ...   # pods scheduled to node.name run in real containers

- containerd (built by tests.testenv.build) with its root, state and socket in WORKDIR, the
  cgroupfs driver (``SystemdCgroup = false``; this machine has cgroup v1 and no systemd),
  Debian's runc, CNI config and IPAM state of its own (tests.testenv.node_net), plain-HTTP pulls
  from the loopback registry through ``hosts.toml``, and the sandbox image from that registry.
- kubelet v1.36.3 with its own client certificate (``system:node:<name>``, group
  ``system:nodes``, signed by the control plane's CA; RBAC binds the bootstrap ``system:node``
  role to it), ``failCgroupV1: false``, ``cgroupDriver: cgroupfs``, serving on the bridge
  address only. The apiserver reaches it for logs/exec without a client certificate, so its
  API allows anonymous requests, on that address only.
- kubetune-fakegpu, registered on the kubelet's device-plugin socket, advertising
  ``nvidia.com/gpu`` x GPUS and answering Allocate with NVIDIA_VISIBLE_DEVICES.
- cluster DNS (tests.testenv.node_dns) on the bridge address: the kubelet's ``clusterDNS``
  and ``clusterDomain: cluster.local`` give pods a resolv.conf naming it, so in-cluster
  clients reach the API server as ``kubernetes.default.svc`` too; nothing is forwarded.

``stop()`` (also at exit, and from the pytest fixture's finally) kills every container and
shim, unmounts what containerd and the kubelet mounted under WORKDIR, removes the pod network
namespaces, the bridge and the kubelet's cgroups, and deletes the Node.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.testenv import build, debian, node_dns, node_net
from tests.testenv.controlplane import SERVICE_IP, ControlPlane
from tests.testenv.procs import ManagedProcess, StopsOnExit, free_port, wait_until

GPUS = 4
DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")  # fixed in the kubelet
CGROUP_ROOT = Path("/sys/fs/cgroup")
LOCK_PATH = Path("/run/kubetune-realnode.lock")


def node_client_cert(cp: ControlPlane, name: str, directory: Path) -> tuple[Path, Path]:
    ca_cert = x509.load_pem_x509_certificate(cp.ca_path.read_bytes())
    ca_key: Any = serialization.load_pem_private_key(cp.ca_key_path.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{name}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    crt, pem = directory / "kubelet-client.crt", directory / "kubelet-client.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pem.chmod(0o600)
    return crt, pem


def containerd_config(work: Path, registry_host: str, pause_ref: str) -> str:
    certs_d = work / "certs.d"
    (certs_d / registry_host).mkdir(parents=True, exist_ok=True)
    (certs_d / registry_host / "hosts.toml").write_text(
        f'server = "http://{registry_host}"\n\n'
        f'[host."http://{registry_host}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    rt = "plugins.'io.containerd.cri.v1.runtime'"
    return f"""version = 3
root = "{work / "root"}"
state = "{work / "state"}"

[grpc]
  address = "{work / "containerd.sock"}"

[ttrpc]
  address = "{work / "containerd.sock.ttrpc"}"

[{rt}]
  enable_selinux = false
  disable_apparmor = true
  # This machine withholds CAP_SYS_RESOURCE even from root, so no process may lower its
  # oom_score_adj (the sandbox's default -998 fails in runc): keep them at containerd's own.
  restrict_oom_score_adj = true

[{rt}.containerd]
  default_runtime_name = "runc"

[{rt}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{rt}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = "/usr/sbin/runc"

[{rt}.cni]
  bin_dirs = ["/usr/lib/cni"]
  conf_dir = "{work / "cni"}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{pause_ref}"

[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = "{certs_d}"
"""


def kubelet_config(cp: ControlPlane, work: Path, sock: Path, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{sock}",
        "address": node_net.GATEWAY,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 0,
        "authentication": {
            "anonymous": {"enabled": True},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(cp.ca_path)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "failSwapOn": False,
        "rotateCertificates": False,
        "serializeImagePulls": False,
        "registerNode": True,
        "staticPodPath": "",
        # pods (dnsPolicy ClusterFirst) resolve through the fixture's DNS only: no host
        # nameserver or search domain reaches them
        "clusterDNS": [node_net.GATEWAY],
        "clusterDomain": node_dns.CLUSTER_DOMAIN,
        "resolvConf": str(work / "resolv.conf"),
        # A busy shared machine must not make the kubelet evict the tests' pods.
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "5s",
        "volumeStatsAggPeriod": "0s",
        "localStorageCapacityIsolation": True,
        "maxPods": 110,
        "shutdownGracePeriod": "0s",
    }


class RealNode(StopsOnExit):
    def __init__(self, cp: ControlPlane, workdir: Path, name: str) -> None:
        self.cp = cp
        self.workdir = workdir
        self.name = name
        self.processes: list[ManagedProcess] = []
        self.relays: list[node_net.Relay] = []
        self.dns: node_dns.DnsServer | None = None
        self._lock: IO[str] | None = None
        self.sock = workdir / "containerd" / "containerd.sock"
        # pod network namespaces that exist before this node: not ours to remove
        self._netns_before = set(_pod_netns())

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(cls, cp: ControlPlane, registry_host: str, pause_ref: str, workdir: Path) -> RealNode:
        debian.ensure()
        absent = [b.name for b in build.missing(("node",))]
        if absent:
            raise build_missing(absent)
        node = cls(cp, workdir, f"realnode-{secrets.token_hex(3)}")
        atexit.register(node.stop)
        try:
            node._start(registry_host, pause_ref)
        except BaseException:
            node.stop()
            raise
        return node

    def _start(self, registry_host: str, pause_ref: str) -> None:
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(LOCK_PATH, "w")  # noqa: SIM115 (held until stop())
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # one real node per machine at a time
        bins = build.bin_dir()
        logs = self.workdir / "logs"
        env = dict(os.environ, PATH=f"{bins}:/usr/sbin:/usr/bin:/sbin:/bin")
        node_net.create_bridge(SERVICE_IP)
        node_net.write_cni_config(
            self.workdir / "containerd" / "cni", self.workdir / "cni-ipam", self.cp.service_cidr
        )
        # The kubernetes Service (10.0.0.1:443), as kube-proxy would route it, and its name.
        self.relays.append(node_net.Relay(SERVICE_IP, 443, "127.0.0.1", self.cp.api_port))
        self.dns = node_dns.DnsServer(
            node_net.GATEWAY, 53, {f"kubernetes.default.svc.{node_dns.CLUSTER_DOMAIN}": SERVICE_IP}
        )

        cd = self.workdir / "containerd"
        (cd / "config.toml").write_text(containerd_config(cd, registry_host, pause_ref))
        self.processes.append(
            ManagedProcess(
                "containerd",
                [str(bins / "containerd"), "--config", str(cd / "config.toml")],
                logs / "containerd.log",
                env=env,
            )
        )
        ctr = [str(bins / "ctr"), "--address", str(self.sock), "version"]
        wait_until(
            "containerd's socket",
            lambda: subprocess.run(ctr, capture_output=True, timeout=10).returncode == 0,
            60,
            interval=0.2,
            watch=self.processes,
        )

        kl = self.workdir / "kubelet"
        crt, key = node_client_cert(self.cp, self.name, kl / "pki")
        self._bind_node_role()
        kubeconfig = kl / "kubeconfig"
        kubeconfig.write_text(
            _kubeconfig(self.cp, crt, key),
        )
        import yaml

        port = free_port()
        (kl / "resolv.conf").write_text("# no host nameserver or search domain for pods\n")
        (kl / "config.yaml").write_text(
            yaml.safe_dump(kubelet_config(self.cp, kl, self.sock, port))
        )
        DEVICE_PLUGIN_DIR.mkdir(parents=True, exist_ok=True)
        for stale in DEVICE_PLUGIN_DIR.iterdir():  # an earlier kubelet's socket and checkpoint
            with contextlib.suppress(OSError):
                stale.unlink()
        self.processes.append(
            ManagedProcess(
                "kubelet",
                [
                    str(bins / "kubelet"),
                    f"--config={kl / 'config.yaml'}",
                    f"--kubeconfig={kubeconfig}",
                    f"--root-dir={kl / 'root'}",
                    f"--cert-dir={kl / 'pki'}",
                    f"--hostname-override={self.name}",
                    f"--node-ip={node_net.GATEWAY}",
                    "--v=1",
                ],
                logs / "kubelet.log",
                env=env,
            )
        )
        wait_until(
            f"node {self.name} Ready",
            self._ready,
            120,
            interval=0.5,
            watch=self.processes,
        )
        self.processes.append(
            ManagedProcess(
                "kubetune-fakegpu",
                [str(bins / "kubetune-fakegpu"), f"-count={GPUS}"],
                logs / "fakegpu.log",
                env=env,
            )
        )
        wait_until(
            f"node {self.name} to advertise nvidia.com/gpu",
            lambda: self._node()["status"]["allocatable"].get("nvidia.com/gpu") == str(GPUS),
            60,
            interval=0.5,
            watch=self.processes,
        )

    def _bind_node_role(self) -> None:
        status, body = self.cp.request(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"kubetune-test:{self.name}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:node",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": f"system:node:{self.name}",
                    }
                ],
            },
        )
        if status not in (201, 409):
            raise RuntimeError(f"binding system:node for the kubelet: {status} {body}")

    def _node(self) -> dict[str, Any]:
        status, body = self.cp.request("GET", f"/api/v1/nodes/{self.name}")
        return body if status == 200 else {"status": {"allocatable": {}, "conditions": []}}

    def _ready(self) -> bool:
        conditions = self._node()["status"].get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def relay_to_host(self, port: int) -> str:
        """Make 127.0.0.1:PORT of this machine reachable from pods; return host:port for them."""
        relay = node_net.Relay(node_net.GATEWAY, 0, "127.0.0.1", port)
        self.relays.append(relay)
        return f"{node_net.GATEWAY}:{relay.address[1]}"

    def add_service_name(self, service: str, namespace: str, address: str) -> str:
        """Let pods resolve ``service.namespace.svc`` to ADDRESS; return the absolute name."""
        assert self.dns is not None
        name = f"{service}.{namespace}.svc.{node_dns.CLUSTER_DOMAIN}"
        self.dns.add(name, address)
        return name

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(build.binary("ctr")), "--address", str(self.sock), "-n", "k8s.io", *args],
            text=True,
            capture_output=True,
            timeout=60,
        )

    def peak_rss_kib(self) -> dict[str, int]:
        """VmHWM of each of the node's own processes (containerd, kubelet, device plugin)."""
        out: dict[str, int] = {}
        for proc in self.processes:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        out[proc.name] = int(line.split()[1])
        return out

    def gpu_allocations(self) -> list[list[str]]:
        """The device IDs of each Allocate the fake GPU plugin answered, in order."""
        log = self.workdir / "logs" / "fakegpu.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        # each line: "<date> <time> allocate [GPU-1 GPU-3]"
        return [
            line.split("allocate [", 1)[1].rstrip("]").split()
            for line in text.splitlines()
            if "allocate [" in line
        ]

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(f"--- {p.name}:\n{p.log_tail(lines)}" for p in self.processes)

    def stop(self) -> None:
        """Idempotent; removes everything the node made on this machine."""
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop(grace=5)
        self.processes.clear()
        for relay in self.relays:
            relay.close()
        self.relays.clear()
        if self.dns is not None:
            self.dns.close()
            self.dns = None
        _kill_containers(self.workdir)
        _unmount_under(self.workdir)
        # containers killed without a CNI DEL leave their netns (and veth) behind
        for ns in set(_pod_netns()) - self._netns_before:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
        node_net.remove_bridge()
        _remove_kubepods_cgroups()
        if self._lock is not None:  # the kubelet's registration socket and checkpoint
            for leftover in DEVICE_PLUGIN_DIR.glob("*"):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        with contextlib.suppress(Exception):
            self.cp.request("DELETE", f"/api/v1/nodes/{self.name}")
            self.cp.request(
                "DELETE",
                f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kubetune-test:{self.name}",
            )
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _pod_netns() -> list[str]:
    """The CNI network namespaces on this machine (containerd names them cni-UUID)."""
    try:
        return [p.name for p in Path("/var/run/netns").iterdir() if p.name.startswith("cni-")]
    except OSError:
        return []


def build_missing(names: list[str]) -> RuntimeError:
    return RuntimeError(
        f"real node binaries not built: {', '.join(names)} (python -m tests.testenv.build)"
    )


def _kubeconfig(cp: ControlPlane, crt: Path, key: Path) -> str:
    import yaml

    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "t",
                    "cluster": {"server": cp.api_url, "certificate-authority": str(cp.ca_path)},
                }
            ],
            "users": [
                {"name": "k", "user": {"client-certificate": str(crt), "client-key": str(key)}}
            ],
            "contexts": [{"name": "t", "context": {"cluster": "t", "user": "k"}}],
            "current-context": "t",
        }
    )


def _kill_containers(workdir: Path) -> None:
    """SIGKILL every shim of our containerd and every process in the kubelet's pod cgroups."""
    marker = str(workdir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if b"containerd-shim" in cmdline and marker in cmdline:
                os.kill(int(entry.name), signal.SIGKILL)
    for procs in CGROUP_ROOT.glob("*/kubepods*/**/cgroup.procs"):
        with contextlib.suppress(OSError):
            for pid in procs.read_text().split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.5)


def _unmount_under(workdir: Path) -> None:
    prefix = str(workdir)
    with contextlib.suppress(OSError):
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
        targets = [line.split()[4] for line in lines]
        for target in sorted((t for t in targets if t.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)
    shutil.rmtree(workdir / "containerd" / "state", ignore_errors=True)


def _remove_kubepods_cgroups() -> None:
    for top in CGROUP_ROOT.glob("*/kubepods*"):
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                d.rmdir()
