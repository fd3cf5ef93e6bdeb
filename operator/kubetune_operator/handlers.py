"""kopf handlers: thin adapters between kopf's watches and the pure modules.

* TuneTrial and Pod events only update :class:`~kubetune_operator.store.Store` views and wake
  the experiment's loop (cheap and idempotent, so a re-list after 410 Gone is harmless).
* One daemon per TuneExperiment (one thread, never one per trial or pod) runs
  :func:`kubetune_operator.loop.run_experiment`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf

from kubetune_operator import loop, objects
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
    settings.watching.label_selectors["v1", "pods"] = objects.LABEL_EXPERIMENT
    if STATE.config is not None and STATE.config.peering:
        settings.peering.name = STATE.config.peering


@kopf.on.event(objects.GROUP, objects.VERSION, "tunetrials")
async def on_trial_event(**kwargs: Any) -> None:
    event, body, namespace = kwargs["event"], kwargs["body"], kwargs["namespace"]
    view = trial_view(dict(body))
    view["receivedAt"] = time.monotonic()
    if view["experiment"]:
        STATE.store.put_trial(
            (namespace, view["experiment"]), view, deleted=event.get("type") == "DELETED"
        )


@kopf.on.event("v1", "pods", labels={objects.LABEL_EXPERIMENT: kopf.PRESENT})
async def on_pod_event(**kwargs: Any) -> None:
    event, body, namespace = kwargs["event"], kwargs["body"], kwargs["namespace"]
    view = pod_view(dict(body))
    if view["experiment"]:
        STATE.store.put_pod(
            (namespace, view["experiment"]), view, deleted=event.get("type") == "DELETED"
        )


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
