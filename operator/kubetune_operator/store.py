"""What the watches saw, per experiment: small views of its TuneTrials and Pods.

The kopf event handlers write here (cheap, idempotent: a re-list after 410 Gone just
overwrites), the experiment's loop reads a copy and is woken when something changed.
"""

from __future__ import annotations

import threading
from typing import Any

from kubetune_operator.controller import Observed

Key = tuple[str, str]  # (namespace, experiment)
GONE_KEPT = 256  # deleted pods' disruption reasons kept per experiment


class Store:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trials: dict[Key, dict[str, dict[str, Any]]] = {}
        self._pods: dict[Key, dict[str, dict[str, Any]]] = {}
        self._wake: dict[Key, threading.Event] = {}
        self._changed_at: dict[Key, float] = {}
        self._gone: dict[Key, dict[str, str]] = {}

    def wake_event(self, key: Key) -> threading.Event:
        with self._lock:
            return self._wake.setdefault(key, threading.Event())

    def _touch(self, key: Key) -> None:
        self._wake.setdefault(key, threading.Event()).set()

    def put_trial(self, key: Key, view: dict[str, Any], deleted: bool = False) -> None:
        with self._lock:
            trials = self._trials.setdefault(key, {})
            if deleted:
                trials.pop(view["name"], None)
            else:
                trials[view["name"]] = view
            self._touch(key)

    def put_pod(self, key: Key, view: dict[str, Any], deleted: bool = False) -> None:
        with self._lock:
            pods = self._pods.setdefault(key, {})
            if deleted:
                pods.pop(view["name"], None)
                if view.get("disruption"):
                    # its last state said the cluster ended it: the loop may not have seen
                    # that state before the pod went (bounded: oldest forgotten first)
                    gone = self._gone.setdefault(key, {})
                    gone[view["name"]] = view["disruption"]
                    while len(gone) > GONE_KEPT:
                        del gone[next(iter(gone))]
            else:
                pods[view["name"]] = view
            self._touch(key)

    def observed(self, key: Key) -> Observed:
        with self._lock:
            return Observed(
                dict(self._trials.get(key, {})),
                dict(self._pods.get(key, {})),
                dict(self._gone.get(key, {})),
            )

    def forget(self, key: Key) -> None:
        with self._lock:
            self._trials.pop(key, None)
            self._pods.pop(key, None)
            self._wake.pop(key, None)
            self._gone.pop(key, None)
