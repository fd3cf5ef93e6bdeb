"""Volumes, environment and command line of the test kubelet's processes.

Each volume of a pod is a directory on this machine (``<pod_dir>/volumes/<volume name>``;
hostPath is the path itself, a PVC a directory shared by the kubelet's pods). A container
sees it at its ``volumeMounts[].mountPath``: the container's process runs in a mount
namespace of its own where each volume is bound there (tests/testenv/kubelet_mounts.py), so
command, args, env and ``workingDir`` are the container's own, unchanged.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from .kubelet_api import ApiError, KubeRest
from .kubelet_mounts import Mount
from .kubelet_status import POD_IP

JSON = dict[str, Any]

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class ConfigError(Exception):
    """The container cannot be configured yet (missing Secret, ConfigMap, ...).

    The kubelet reports it as ``CreateContainerConfigError`` and retries."""


def _ns_path(namespace: str, kind: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/{kind}/{name}"


class ObjectCache:
    """Secrets and ConfigMaps read once per pod setup."""

    def __init__(self, api: KubeRest, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self._cache: dict[tuple[str, str], JSON | None] = {}

    def get(self, kind: str, name: str) -> JSON | None:
        key = (kind, name)
        if key not in self._cache:
            try:
                self._cache[key] = self.api.get(_ns_path(self.namespace, kind, name))
            except ApiError as e:
                if e.status != 404:
                    raise
                self._cache[key] = None
        return self._cache[key]

    def data(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        obj = self.get(kind, name)
        if obj is None:
            if optional:
                return None
            singular = "secret" if kind == "secrets" else "configmap"
            raise ConfigError(f'{singular} "{name}" not found')
        out: dict[str, bytes] = {}
        if kind == "secrets":
            for k, v in (obj.get("data") or {}).items():
                out[k] = base64.b64decode(v)
            for k, v in (obj.get("stringData") or {}).items():
                out[k] = v.encode()
        else:
            for k, v in (obj.get("data") or {}).items():
                out[k] = v.encode()
            for k, v in (obj.get("binaryData") or {}).items():
                out[k] = base64.b64decode(v)
        return out

    def key(self, kind: str, ref: JSON) -> str | None:
        optional = bool(ref.get("optional"))
        data = self.data(kind, ref["name"], optional)
        if data is None:
            return None
        if ref["key"] not in data:
            if optional:
                return None
            raise ConfigError(f"couldn't find key {ref['key']} in {kind[:-1]} {ref['name']}")
        return data[ref["key"]].decode("utf-8", "replace")


# -- field and resource references ------------------------------------------------------
def field_value(pod: JSON, path: str, host_ip: str = POD_IP) -> str:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    m = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path) or re.match(
        r'^metadata\.(labels|annotations)\["(.+)"\]$', path
    )
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = sorted((meta.get(path.split(".")[1]) or {}).items())
        return "\n".join(f"{k}={json.dumps(v)}" for k, v in items)
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": POD_IP,
        "status.podIPs": POD_IP,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path not in simple:
        raise ConfigError(f"unsupported fieldPath {path!r}")
    return str(simple[path])


def resource_value(
    pod: JSON, container_name: str, ref: JSON, allocatable: Mapping[str, str]
) -> str:
    resource = ref["resource"]
    cname = ref.get("containerName") or container_name
    containers = list(pod["spec"].get("containers") or []) + list(
        pod["spec"].get("initContainers") or []
    )
    container = next((c for c in containers if c["name"] == cname), None)
    if container is None:
        raise ConfigError(f"resourceFieldRef: no container {cname!r}")
    kind, _, name = resource.partition(".")
    res = container.get("resources") or {}
    value = (res.get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = (res.get("limits") or {}).get(name)
    if value is None:
        value = allocatable.get(name, "0")
    divisor = parse_quantity(str(ref.get("divisor") or "1"))
    if divisor == 0:
        divisor = Decimal(1)
    return str(math.ceil(parse_quantity(str(value)) / divisor))


def expand_refs(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names are replaced, ``$$`` is a ``$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_REF.sub(sub, value)


# -- volumes ----------------------------------------------------------------------------
def _write_file(path: Path, data: bytes, mode: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    if mode is not None:
        os.chmod(tmp, mode & 0o777)
    os.replace(tmp, path)


@dataclass
class TokenProjection:
    """A projected service-account token file and when to refresh it."""

    path: Path
    audience: str
    expiration_seconds: int
    mode: int | None
    refresh_at: float = 0.0


class PodVolumes:
    """Materialises a pod's volumes as directories under ``<pod_dir>/volumes``."""

    def __init__(
        self,
        api: KubeRest | None,
        pod: JSON,
        pod_dir: Path,
        shared_root: Path,
        allocatable: Mapping[str, str],
    ) -> None:
        self.api = api
        self.pod = pod
        self.pod_dir = pod_dir
        self.shared_root = shared_root
        self.allocatable = allocatable
        self.dirs: dict[str, Path] = {}
        self.tokens: list[TokenProjection] = []

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    def setup(self, cache: ObjectCache | None, with_content: bool = True) -> None:
        """Create every volume's directory and (process mode) write its files.

        Raises ConfigError while a referenced Secret or ConfigMap is missing."""
        for vol in self.pod["spec"].get("volumes") or []:
            name = vol["name"]
            path = self.pod_dir / "volumes" / name
            if "hostPath" in vol:
                path = Path(vol["hostPath"]["path"])
                if vol["hostPath"].get("type") in ("DirectoryOrCreate", "", None):
                    path.mkdir(parents=True, exist_ok=True)
            elif "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                path = self.shared_root / "pvc" / self.namespace / claim
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.mkdir(parents=True, exist_ok=True)
                if with_content and cache is not None:
                    self._fill(vol, path, cache)
            self.dirs[name] = path

    def _fill(self, vol: JSON, path: Path, cache: ObjectCache) -> None:
        if "secret" in vol:
            src = vol["secret"]
            self._write_keys(
                path,
                cache.data("secrets", src["secretName"], bool(src.get("optional"))),
                src.get("items"),
                src.get("defaultMode", 0o644),
                bool(src.get("optional")),
            )
        elif "configMap" in vol:
            src = vol["configMap"]
            self._write_keys(
                path,
                cache.data("configmaps", src["name"], bool(src.get("optional"))),
                src.get("items"),
                src.get("defaultMode", 0o644),
                bool(src.get("optional")),
            )
        elif "downwardAPI" in vol:
            src = vol["downwardAPI"]
            self._write_downward(path, src.get("items") or [], src.get("defaultMode", 0o644))
        elif "projected" in vol:
            proj = vol["projected"]
            mode = proj.get("defaultMode", 0o644)
            for source in proj.get("sources") or []:
                if "secret" in source:
                    s = source["secret"]
                    data = cache.data("secrets", s["name"], bool(s.get("optional")))
                    self._write_keys(path, data, s.get("items"), mode, bool(s.get("optional")))
                elif "configMap" in source:
                    s = source["configMap"]
                    data = cache.data("configmaps", s["name"], bool(s.get("optional")))
                    self._write_keys(path, data, s.get("items"), mode, bool(s.get("optional")))
                elif "downwardAPI" in source:
                    self._write_downward(path, source["downwardAPI"].get("items") or [], mode)
                elif "serviceAccountToken" in source:
                    s = source["serviceAccountToken"]
                    token = TokenProjection(
                        path=path / s["path"],
                        audience=s.get("audience", ""),
                        expiration_seconds=int(s.get("expirationSeconds") or 3600),
                        mode=mode,
                    )
                    self.refresh_token(token)
                    self.tokens.append(token)

    def _write_keys(
        self,
        path: Path,
        data: dict[str, bytes] | None,
        items: list[JSON] | None,
        default_mode: int,
        optional: bool,
    ) -> None:
        if data is None:
            return
        if items:
            for item in items:
                if item["key"] not in data:
                    if optional:
                        continue
                    raise ConfigError(f"couldn't find key {item['key']}")
                _write_file(path / item["path"], data[item["key"]], item.get("mode", default_mode))
        else:
            for key, value in data.items():
                _write_file(path / key, value, default_mode)

    def _write_downward(self, path: Path, items: list[JSON], default_mode: int) -> None:
        for item in items:
            if "fieldRef" in item:
                value = field_value(self.pod, item["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in item:
                ref = item["resourceFieldRef"]
                cname = ref.get("containerName") or self.pod["spec"]["containers"][0]["name"]
                value = resource_value(self.pod, cname, ref, self.allocatable)
            else:
                continue
            _write_file(path / item["path"], value.encode(), item.get("mode", default_mode))

    def refresh_token(self, token: TokenProjection) -> None:
        """Request a token bound to the pod (TokenRequest API) and write it."""
        assert self.api is not None
        meta = self.pod["metadata"]
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [token.audience] if token.audience else [],
                "expirationSeconds": token.expiration_seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            resp = self.api.create(
                f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token", body
            )
        except ApiError as e:
            if e.status in (403, 404):
                raise ConfigError(f"token for service account {sa!r}: {e}") from e
            raise
        _write_file(token.path, resp["status"]["token"].encode(), token.mode)
        # The kubelet refreshes at 80% of the lifetime (or after 24 hours).
        token.refresh_at = time.monotonic() + min(0.8 * token.expiration_seconds, 86400)

    def mounts(self, container: JSON) -> list[Mount]:
        """The container's volumeMounts as (host path, mountPath) binds, subPath applied."""
        out = []
        for mount in container.get("volumeMounts") or []:
            base = self.dirs.get(mount["name"])
            if base is None:
                raise ConfigError(f"volume {mount['name']!r} not found")
            host = base
            if mount.get("subPath"):
                host = base / mount["subPath"]
                if not host.exists():
                    host.mkdir(parents=True, exist_ok=True)
            out.append(Mount(str(host), mount["mountPath"], bool(mount.get("readOnly"))))
        return out


# -- container environment and command line ------------------------------------------------
PYTHON_NAMES = ("python", "python3", f"python3.{sys.version_info.minor}")


def write_shims(bin_dir: Path) -> None:
    """``python``/``python3`` on the processes' PATH run this interpreter (the venv)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in PYTHON_NAMES:
        shim = bin_dir / name
        if not shim.exists():
            _write_file(
                shim, f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n'.encode(), 0o755
            )


@dataclass
class ProcessSpec:
    argv: list[str]
    env: dict[str, str]
    cwd: str  # in the container
    mounts: list[Mount]


def container_process(
    pod: JSON,
    container: JSON,
    volumes: PodVolumes,
    cache: ObjectCache,
    *,
    base_env: Mapping[str, str],
    api_host: str,
    api_port: int,
    allocatable: Mapping[str, str],
    host_ip: str = POD_IP,
    image_entrypoints: Mapping[str, Sequence[str]] | None = None,
    command_map: Mapping[str, Sequence[str]] | None = None,
) -> ProcessSpec:
    """argv, env, working directory and mounts of one container.

    Without a ``command`` the image's entrypoint comes from ``image_entrypoints`` (keyed by
    the image as written, or without its tag); ``command_map`` replaces an ``argv[0]``
    (as written, or its basename) by a local command line."""
    mounts = volumes.mounts(container)
    env: dict[str, str] = dict(base_env)
    env.update(
        {
            "HOSTNAME": pod["metadata"]["name"],
            "KUBERNETES_SERVICE_HOST": api_host,
            "KUBERNETES_SERVICE_PORT": str(api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(api_port),
            "KUBERNETES_PORT": f"tcp://{api_host}:{api_port}",
        }
    )
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            ref = src["configMapRef"]
            data = cache.data("configmaps", ref["name"], bool(ref.get("optional")))
        elif "secretRef" in src:
            ref = src["secretRef"]
            data = cache.data("secrets", ref["name"], bool(ref.get("optional")))
        else:
            continue
        for k, v in (data or {}).items():
            if _ENV_NAME.match(prefix + k):
                env[prefix + k] = v.decode("utf-8", "replace")
    declared: dict[str, str] = {}
    for var in container.get("env") or []:
        name = var["name"]
        value: str | None
        if "valueFrom" in var:
            vf = var["valueFrom"]
            if "fieldRef" in vf:
                value = field_value(pod, vf["fieldRef"]["fieldPath"], host_ip)
            elif "resourceFieldRef" in vf:
                value = resource_value(pod, container["name"], vf["resourceFieldRef"], allocatable)
            elif "secretKeyRef" in vf:
                value = cache.key("secrets", vf["secretKeyRef"])
            elif "configMapKeyRef" in vf:
                value = cache.key("configmaps", vf["configMapKeyRef"])
            else:
                raise ConfigError(f"env {name}: unsupported valueFrom {sorted(vf)}")
            if value is None:
                continue
        else:
            value = expand_refs(var.get("value", ""), {**env, **declared})
        declared[name] = value
        env[name] = value
    command = list(container.get("command") or [])
    if not command:
        image = str(container.get("image", ""))
        entrypoints = image_entrypoints or {}
        command = list(entrypoints.get(image) or entrypoints.get(image.rsplit(":", 1)[0]) or [])
    argv = [expand_refs(a, env) for a in command]
    argv += [expand_refs(a, env) for a in (container.get("args") or [])]
    if not argv:
        raise ConfigError(
            "the test kubelet has no images: give the container a command "
            "(or the kubelet an image_entrypoints entry)"
        )
    if command_map:
        mapped = command_map.get(argv[0]) or command_map.get(os.path.basename(argv[0]))
        if mapped:
            argv = [*mapped, *argv[1:]]
    if (os.path.basename(argv[0]) in PYTHON_NAMES and "/" not in argv[0]) or argv[0] in (
        "/usr/bin/python",
        "/usr/bin/python3",
        "/usr/local/bin/python",
    ):
        argv[0] = sys.executable
    # the image's WORKDIR would be the default; the test kubelet's "image" is this machine
    cwd = str(container.get("workingDir") or "/")
    return ProcessSpec(argv=argv, env=env, cwd=cwd, mounts=mounts)
