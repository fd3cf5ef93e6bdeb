"""kopf handlers: thin adapters between kopf's watches and the pure modules.

* TuneTrial and Pod events (from ``api.Watcher``, leaner than kopf for these busy streams) only
  update :class:`~kubetune_operator.store.Store` views and wake the experiment's loop (cheap and
  idempotent, so a re-list after 410 Gone is harmless).
* One daemon per TuneExperiment (one thread, never one per trial or pod) runs
  :func:`kubetune_operator.loop.run_experiment`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from typing import Any

import kopf

from kubetune_operator import loop, objects
from kubetune_operator.api import Watcher
from kubetune_operator.state import STATE
from kubetune_operator.views import pod_view, trial_view


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    prefix = "kubetune.io"
    settings.persistence.finalizer = f"{prefix}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    settings.networking.error_backoffs = [1, 2, 3, 5, 5, 5, 10, 10, 10]
    settings.queueing.error_delays = [1, 2, 3, 5, 10, 10, 10, 20, 30]
    settings.background.cancellation_polling = 1
    settings.execution.max_workers = 256
    if STATE.config is not None and STATE.config.peering:
        settings.peering.name = STATE.config.peering
        # kopf pauses every replica when peers share a priority (PITFALLS: peering freezes):
        # give each replica its own, stable for its pod name, so exactly one acts
        settings.peering.priority = peering_priority()


def peering_priority() -> int:
    """``KUBETUNE_PEERING_PRIORITY``, else a number derived from the pod's name."""
    explicit = os.environ.get("KUBETUNE_PEERING_PRIORITY")
    if explicit:
        return int(explicit)
    name = os.environ.get("POD_NAME") or socket.gethostname()
    return 1 + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 1_000_000


def on_trial_event(kind: str, body: dict[str, Any]) -> None:
    view = trial_view(body)
    view["receivedAt"] = time.monotonic()
    namespace = (body.get("metadata") or {}).get("namespace")
    if view["experiment"] and namespace:
        STATE.store.put_trial((namespace, view["experiment"]), view, deleted=kind == "DELETED")


def on_pod_event(kind: str, body: dict[str, Any]) -> None:
    view = pod_view(body)
    namespace = (body.get("metadata") or {}).get("namespace")
    if view["experiment"] and namespace:
        STATE.store.put_pod((namespace, view["experiment"]), view, deleted=kind == "DELETED")


@kopf.on.startup()
def start_watchers(**_: Any) -> None:
    """TuneTrials and Pods are watched by our own lean watchers (see api.Watcher)."""
    config = STATE.config
    namespaces = [None] if config is None or config.all_namespaces else config.namespaces
    for ns in namespaces or [None]:
        base = f"/namespaces/{ns}" if ns else ""
        trials = f"/apis/{objects.GROUP}/{objects.VERSION}{base}/tunetrials"
        for path, handler, selector in (
            (trials, on_trial_event, None),
            (f"/api/v1{base}/pods", on_pod_event, objects.LABEL_EXPERIMENT),
        ):
            watcher = Watcher(STATE.api, path, handler, selector)
            watcher.start()
            STATE.watchers.append(watcher)
    for watcher in STATE.watchers:
        watcher.synced.wait(30)


@kopf.on.cleanup()
def stop_watchers(**_: Any) -> None:
    for watcher in STATE.watchers:
        watcher.stopped.set()


@kopf.daemon(
    objects.GROUP, objects.VERSION, "tuneexperiments", cancellation_timeout=10.0, initial_delay=0
)
def experiment_daemon(stopped: kopf.DaemonStopped, body: kopf.Body, **_: Any) -> None:
    loop.run_experiment(body, stopped.is_set, STATE)


@kopf.on.delete(objects.GROUP, objects.VERSION, "tuneexperiments", optional=True)
def on_experiment_deleted(**kwargs: Any) -> None:
    namespace, name = kwargs["namespace"], kwargs["name"]
    # Trials and pods go with their owner (garbage collection); storage stays, as in Ray.
    STATE.store.forget((namespace, name))
