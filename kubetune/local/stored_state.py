"""An experiment's ``experiment_state.json``, whoever wrote it, in the one shape readers use.

Local mode writes ``{"format": 1, "engine": ..., "trials": [summary, ...], "metric", ...}``.
The operator writes a segmented snapshot (kubetune.engine.snapshot):
``{"engine": head, "experiment": name}`` where the head lists ``segments`` whose records live
in ``experiment_state/trials-NNNNNN.json``. :func:`read_state` turns either into the local
shape, so ``ResultGrid``, ``kubetune results``/``plot`` and ``Tuner.restore`` read an
operator-written experiment exactly as a local one.

:func:`stage_experiment` copies an ``s3://`` experiment into a local staging directory without
its checkpoints (those download when a ``Checkpoint`` is used, see stored_checkpoint.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

STATE_FILE = "experiment_state.json"
CHECKPOINT_DIR_PREFIX = "checkpoint_"
# Stored beside the experiment but not needed to read its results (the with_parameters
# objects and the shipped working directory can be large).
_SKIP_WHEN_STAGING = (".kubetune/params/", ".kubetune/code/")


def operator_trial_dirname(experiment: str, trial_id: str) -> str:
    """The folder of a trial in an operator experiment: its TuneTrial's name."""
    from kubetune._util import dns_name

    return dns_name(experiment, trial_id)


def _trial_summary(rec: dict[str, Any], experiment: str) -> dict[str, Any]:
    checkpoints = [c[2] for c in rec.get("checkpoints") or []]
    return {
        "trial_id": rec["trial_id"],
        "trial_name": rec["name"],
        "dirname": operator_trial_dirname(experiment, rec["trial_id"]),
        "experiment_tag": rec.get("tag"),
        "status": rec.get("status"),
        "error": rec.get("error"),
        "num_failures": rec.get("num_failures", 0),
        "latest_checkpoint": rec.get("latest_checkpoint"),
        "best_checkpoint": None,
        "checkpoints": checkpoints,
        "config": rec.get("config") or {},
        "last_result": rec.get("last_result"),
        "num_results": rec.get("num_results", 0),
    }


def from_operator_state(head: dict[str, Any], local_dir: str) -> dict[str, Any]:
    """The local shape of an operator snapshot staged in ``local_dir``."""

    def read(key: str) -> bytes:
        try:
            with open(os.path.join(local_dir, *key.split("/")), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{local_dir}: the snapshot names the segment {key} but it is not stored"
            ) from None

    return operator_state(head, read, os.path.basename(local_dir))


def operator_state(
    head: dict[str, Any], read: Callable[[str], bytes], default_name: str
) -> dict[str, Any]:
    """The local shape of an operator snapshot whose segments ``read(key)`` returns."""
    from kubetune.engine.snapshot import load_state

    engine, _ = load_state(head["engine"], read)
    config = engine.get("config") or {}
    name = head.get("experiment") or config.get("name") or default_name
    return {
        "format": 1,
        "writer": "operator",
        "finished": engine.get("finished"),
        "engine": engine,
        "trials": [_trial_summary(rec, name) for rec in engine.get("trials", [])],
        "name": name,
        "metric": config.get("metric"),
        "mode": config.get("mode"),
    }


class StoredStateReader:
    """Reads an operator experiment's state straight from its storage, again and again (a
    follower's poll): the segments a head names never change, so each is fetched once."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self._segments: dict[str, bytes] = {}

    def read(self) -> dict[str, Any] | None:
        """The state in the local shape; None while the experiment has none yet."""
        try:
            head = json.loads(self.storage.get_bytes(STATE_FILE))
        except FileNotFoundError:
            return None
        if not is_operator_state(head):
            return dict(head)

        def segment(key: str) -> bytes:
            if key not in self._segments:
                self._segments[key] = self.storage.get_bytes(key)
            return self._segments[key]

        return operator_state(head, segment, head.get("experiment") or "")


def is_operator_state(state: dict[str, Any]) -> bool:
    return "experiment" in state and "engine" in state and "trials" not in state


def read_state(local_dir: str) -> dict[str, Any]:
    """The experiment state in ``local_dir`` (local mode's or the operator's)."""
    from kubetune.local.state_file import load_state  # checks the shape, names the file

    state = load_state(local_dir)
    if is_operator_state(state):
        return from_operator_state(state, local_dir)
    return dict(state)


def _staged(key: str) -> bool:
    if any(key.startswith(p) for p in _SKIP_WHEN_STAGING):
        return False
    return not any(part.startswith(CHECKPOINT_DIR_PREFIX) for part in key.split("/")[:-1])


def stage_experiment(uri: str, local_dir: str) -> None:
    """Download an ``s3://`` experiment's state and result files (not its checkpoints)."""
    from kubetune.storage import open_storage

    storage = open_storage(uri)
    os.makedirs(local_dir, exist_ok=True)

    def fetch(key: str) -> None:
        target = os.path.join(local_dir, *key.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        storage.get_file(key, target)

    # The head first, then the segments it names: a writer writes them before the head, so
    # they exist even when they were written after the listing below.
    try:
        fetch(STATE_FILE)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{uri} holds no kubetune experiment ({STATE_FILE} is missing)"
        ) from None
    with open(os.path.join(local_dir, STATE_FILE), encoding="utf-8") as f:
        head = json.load(f)
    segments = list(
        ((head.get("engine") or {}) if is_operator_state(head) else {}).get("segments") or []
    )
    for key in segments:
        fetch(key)
    done = {STATE_FILE, *segments}
    for key in storage.list_keys(""):
        if key not in done and _staged(key) and not key.startswith("experiment_state/"):
            fetch(key)
