"""Where a pod's mounts are, as seen by this process.

In a real pod a volume is mounted at its ``mountPath`` and this module changes nothing. The
test kubelet (tests/testenv) runs containers as local processes, which cannot have mounts; it
sets ``KUBETUNE_PATH_MAP`` to a JSON object ``{mountPath: hostPath}`` and code that opens a
mounted path asks :func:`host_path` first (the longest matching mountPath wins).
"""

from __future__ import annotations

import functools
import json
import os

PATH_MAP_ENV = "KUBETUNE_PATH_MAP"


@functools.lru_cache(maxsize=1)
def _path_map(raw: str) -> list[tuple[str, str]]:
    try:
        mapping = json.loads(raw)
    except json.JSONDecodeError:
        return []
    if not isinstance(mapping, dict):
        return []
    items = [(str(k).rstrip("/") or "/", str(v)) for k, v in mapping.items()]
    return sorted(items, key=lambda kv: len(kv[0]), reverse=True)


def host_path(path: str) -> str:
    """``path`` as this process can open it (unchanged outside the test kubelet)."""
    raw = os.environ.get(PATH_MAP_ENV)
    if not raw or not path:
        return path
    for mount, host in _path_map(raw):
        if path == mount:
            return host
        if path.startswith(mount + "/"):
            return host + path[len(mount) :]
    return path
