"""The test kubelet's nodes: what a fake node offers (:class:`NodeSpec`), its Node object and
its status as a healthy kubelet posts them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .kubelet_status import now_rfc3339

JSON = dict[str, Any]
LEASE_NS = "kube-node-lease"


@dataclass
class NodeSpec:
    """One fake node. Capacity equals allocatable."""

    name: str = ""
    cpu: str = "8"
    memory: str = "32Gi"
    pods: int = 110
    gpus: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    ephemeral_storage: str = "100Gi"
    extended: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[JSON] = field(default_factory=list)

    def resources(self) -> dict[str, str]:
        res = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.pods),
            "ephemeral-storage": self.ephemeral_storage,
        }
        if self.gpus:
            res[self.gpu_resource] = str(self.gpus)
        res.update(self.extended)
        return res


def node_body(spec: NodeSpec) -> JSON:
    """The Node object registered for ``spec`` (its status is written separately)."""
    labels = {
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "kubetune.io/test-kubelet": "true",
        **spec.labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
        "spec": {"taints": spec.taints} if spec.taints else {},
    }


def node_status(
    spec: NodeSpec, host_ip: str, kubelet_version: str, transition: str | None = None
) -> JSON:
    """A healthy node's status: capacity = allocatable, the conditions of a Ready node
    (heartbeat now, last transition at ``transition``), its address and node info."""
    now = now_rfc3339()
    since = transition or now

    def cond(ctype: str, status: str, reason: str, message: str) -> JSON:
        return {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": since,
        }

    res = spec.resources()
    return {
        "capacity": res,
        "allocatable": res,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": host_ip},
            {"type": "Hostname", "address": spec.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": spec.name,
            "systemUUID": spec.name,
            "bootID": spec.name,
            "kernelVersion": os.uname().release,
            "osImage": "kubetune test kubelet",
            "containerRuntimeVersion": "kubetune-test://1",
            "kubeletVersion": kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def lease_body(name: str, node_uid: str, spec: JSON) -> JSON:
    """The node's Lease in ``kube-node-lease``, owned by its Node (deleted with it)."""
    owner = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": LEASE_NS, "ownerReferences": [owner]},
        "spec": spec,
    }


def node_specs(*specs: NodeSpec | Mapping[str, Any]) -> Iterable[NodeSpec]:
    """NodeSpecs from NodeSpec objects or keyword dicts."""
    for s in specs:
        yield s if isinstance(s, NodeSpec) else NodeSpec(**s)
