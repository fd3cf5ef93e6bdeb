"""Which GPUs CUDA should use in a trial container, from what the device plugin set.

A GPU trial's pod asks for ``nvidia.com/gpu``; the NVIDIA device plugin answers the kubelet's
Allocate with ``NVIDIA_VISIBLE_DEVICES`` (device UUIDs or host indices, by its
``deviceIDStrategy``) and the NVIDIA container runtime then exposes exactly those devices in
the container, where CUDA numbers them 0..n-1. The plugin does not set
``CUDA_VISIBLE_DEVICES``. Code ported from Ray reads that variable (Ray sets it for each
trial), so when it is unset and the plugin named n devices the runner sets it to
``0,...,n-1``: the container's own indices, which are right whatever the plugin's ID strategy
(copying host indices like ``2,3`` would hide both devices from CUDA). A value already set
(by a plugin that sets it, the pod spec, or local mode's scheduler) is left as it is, and so
is a container without a plugin's list (``all``, ``none``, ``void`` or unset).
"""

from __future__ import annotations

from collections.abc import MutableMapping

NOT_A_LIST = ("", "all", "none", "void", "NoDevFiles")


def plugin_devices(env: MutableMapping[str, str]) -> list[str]:
    """The devices the device plugin named in NVIDIA_VISIBLE_DEVICES (empty: none named)."""
    value = env.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    if value in NOT_A_LIST:
        return []
    return [d.strip() for d in value.split(",") if d.strip()]


def set_cuda_visible_devices(env: MutableMapping[str, str]) -> str | None:
    """Set CUDA_VISIBLE_DEVICES from the plugin's list when unset; return the value set."""
    if "CUDA_VISIBLE_DEVICES" in env:
        return None
    devices = plugin_devices(env)
    if not devices:
        return None
    value = ",".join(str(i) for i in range(len(devices)))
    env["CUDA_VISIBLE_DEVICES"] = value
    return value
