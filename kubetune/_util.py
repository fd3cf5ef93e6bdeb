"""Small helpers shared by the trial runner, the engine and the stoppers."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

FLATTEN_DELIMITER = "/"


def flatten_dict(d: Mapping[str, Any], delimiter: str = FLATTEN_DELIMITER) -> dict[str, Any]:
    """Flatten nested mappings into one level, joining keys with ``delimiter`` (Ray's rule)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, (dict, Mapping)) and value:  # dict first: the ABC check is slow
            for k, v in value.items():
                walk(f"{prefix}{delimiter}{k}" if prefix else str(k), v)
        else:
            out[prefix] = value

    for key, value in d.items():
        walk(str(key), value)
    return out


def unflattened_lookup(key: str, d: Mapping[str, Any], delimiter: str = FLATTEN_DELIMITER) -> Any:
    """Look up ``a/b/c`` in a nested mapping; a literal key ``a/b/c`` wins if present."""
    if key in d:
        return d[key]
    node: Any = d
    for part in key.split(delimiter):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def dns_name(*parts: str, limit: int = 63) -> str:
    """A DNS-1123 label made of ``parts``; a hash suffix keeps long names unique (the
    operator names TuneTrials, and so their storage folders, with it)."""
    raw = "-".join(parts).lower()
    name = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-") or "x"
    if len(name) <= limit and name == raw:
        return name
    digest = hashlib.sha1(raw.encode()).hexdigest()[:6]
    return f"{name[: limit - 7].rstrip('-')}-{digest}"


def malformed_s3_path(path: str) -> bool:
    """An s3 path without a bucket (``s3://``, ``s3:///x``, ``s3:bucket``): used as a local
    directory it would silently become a folder named ``s3:``."""
    if not path.lower().startswith("s3:"):
        return False
    return not path.startswith("s3://") or not path[5:].partition("/")[0]
