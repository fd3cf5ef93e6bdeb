"""The real node's pod network, on this machine only.

A Linux bridge made here (``kt-e2e0``, 10.244.0.1/24) that the CNI ``bridge`` plugin attaches
each pod's veth to, with host-local IPAM handing out 10.244.0.0/24. Pods get one route besides
their subnet: the Service CIDR (10.0.0.0/24) via the bridge. No default route, no masquerade,
and IP forwarding stays as it is (off here): a pod can reach this machine and other pods,
nothing else.

The ``kubernetes`` Service's ClusterIP (10.0.0.1) is an address of the bridge, so a pod's
``KUBERNETES_SERVICE_HOST:443`` lands on this machine, where a relay passes the bytes to the
apiserver on loopback (TLS end to end: the apiserver's certificate names 10.0.0.1). It stands
in for kube-proxy's DNAT for this one Service; the S3 server gets the same kind of relay on the
bridge's own address. ``remove()`` deletes the bridge (its addresses go with it).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
from pathlib import Path

BRIDGE = "kt-e2e0"
POD_SUBNET = "10.244.0.0/24"
GATEWAY = "10.244.0.1"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, text=True, capture_output=True)


def create_bridge(service_ip: str) -> None:
    remove_bridge()
    _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
    _ip("addr", "add", f"{service_ip}/32", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def remove_bridge() -> None:
    _ip("link", "del", BRIDGE, check=False)


def write_cni_config(conf_dir: Path, ipam_dir: Path, service_cidr: str) -> None:
    conf_dir.mkdir(parents=True, exist_ok=True)
    conflist = {
        "cniVersion": "1.0.0",
        "name": "kubetune-e2e",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                    "routes": [{"dst": service_cidr}],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }
    (conf_dir / "10-kubetune-e2e.conflist").write_text(json.dumps(conflist, indent=2))


class Relay:
    """Accept TCP on (host, port) and pass each connection's bytes to (to_host, to_port)."""

    def __init__(self, host: str, port: int, to_host: str, to_port: int) -> None:
        self.target = (to_host, to_port)
        self.listener = socket.create_server((host, port), reuse_port=False)
        self.address = self.listener.getsockname()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name=f"relay-{port}").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                src.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.close()
