"""Constants in a param space that JSON cannot hold (a ``Checkpoint``, a model, a class).

Ray passes such values to every trial as they are. kubetune keeps configs as JSON (engine
state, trial specs, manifests), so the driver stores each such constant once, pickled, in the
experiment's params directory (beside the ``with_parameters`` objects) and puts a small marker
in its place; the trial runner swaps the markers back for the objects before the trainable
sees its config. Searchers, schedulers and the saved state only ever see the marker, and a
restored experiment finds the same objects under the same names.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from kubetune.search.sample import Domain

MARKER = "__kubetune_constant__"


def _is_json_leaf(value: Any) -> bool:
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, (int, float)):
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            return False
        return True
    return False


def _file(params_dir: str, key: str) -> str:
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
    return os.path.join(params_dir, f"constant-{digest}.pkl")


def extract_constants(space: dict[str, Any], params_dir: str) -> dict[str, Any]:
    """``space`` with every non-JSON constant stored under ``params_dir`` and replaced by a
    marker (the same markers for the same space, so a restore matches its saved state)."""
    stored: dict[str, Any] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, Domain) or _is_json_leaf(value):
            return value
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {k: walk(v, f"{path}/{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(value)]
        stored[path] = value
        return {MARKER: path, "repr": repr(value)[:200]}

    out = {k: walk(v, k) for k, v in space.items()}
    if stored:
        import cloudpickle

        os.makedirs(params_dir, exist_ok=True)
        for path, value in stored.items():
            try:
                data = cloudpickle.dumps(value)
            except Exception as exc:
                raise TypeError(
                    f"param_space[{path!r}]: a {type(value).__name__} cannot be serialised for"
                    f" the trials ({exc})"
                ) from exc
            with open(_file(params_dir, path), "wb") as f:
                f.write(data)
    return out


def has_markers(value: Any) -> bool:
    if isinstance(value, dict):
        return MARKER in value or any(has_markers(v) for v in value.values())
    if isinstance(value, list):
        return any(has_markers(v) for v in value)
    return False


def resolve_constants(config: dict[str, Any], params_dir: str | None) -> dict[str, Any]:
    """``config`` with the markers replaced by the stored objects."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if isinstance(value.get(MARKER), str):
                path = value[MARKER]
                if not params_dir:
                    raise RuntimeError(f"config constant {path!r} needs the params directory")
                import cloudpickle

                with open(_file(params_dir, path), "rb") as f:
                    return cloudpickle.load(f)
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    result: dict[str, Any] = walk(config)
    return result
