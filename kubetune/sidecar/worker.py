"""The sidecar of a worker pod of a multi-worker trial (ranks 1..N-1), role ``worker``.

It prepares the pod as the trial's own sidecar does (restores the checkpoint, the
with_parameters objects and shipped code, writes the trial spec), but only once it knows
where rank 0 is: the operator publishes rank 0's pod IP in the TuneTrial's
``status.workers`` (``attempt``, ``masterAddr``) when that pod has one, and this sidecar
writes it into ``rendezvous.json`` on the shared volume, where the worker's runner reads
``MASTER_ADDR`` from (``kubetune.train._context.load_rendezvous``). Only then does its
startup probe pass and the worker start. It uploads nothing and reports nothing: rank 0's
sidecar does both for the trial; a worker's results are dropped, as Ray drops them.

The address goes through the API server rather than cluster DNS (a headless Service) so
that a trial needs neither DNS nor the pods to be scheduled one after the other: all of a
trial's pods are created at once, as a gang scheduler (Kueue) wants them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Protocol

from kubetune.sidecar.config import SidecarConfig

log = logging.getLogger("kubetune.sidecar.worker")
RENDEZVOUS_FILE = "rendezvous.json"
POLL_S = 0.5


class TrialReader(Protocol):
    def get(self) -> dict[str, Any]: ...


def master_address(trial: dict[str, Any], attempt: int) -> str | None:
    workers = (trial.get("status") or {}).get("workers") or {}
    addr = workers.get("masterAddr")
    if workers.get("attempt") == attempt and isinstance(addr, str) and addr:
        return addr
    return None


def wait_rendezvous(api: TrialReader, cfg: SidecarConfig, stop: threading.Event) -> str | None:
    """Rank 0's address for this attempt, once the operator has published it."""
    while not stop.is_set():
        try:
            addr = master_address(api.get(), cfg.attempt)
        except Exception as exc:  # the API server is away for a moment: ask again
            log.warning("cannot read the trial's rendezvous (will retry): %s", exc)
            addr = None
        if addr is not None:
            return addr
        stop.wait(POLL_S)
    return None


def write_rendezvous(cfg: SidecarConfig, addr: str) -> None:
    path = cfg.path(RENDEZVOUS_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"masterAddr": addr, "attempt": cfg.attempt}, f)
    os.replace(path + ".tmp", path)


def run_worker(cfg: SidecarConfig, api: TrialReader, stop: threading.Event) -> int:
    """The whole life of a worker pod's sidecar: rendezvous, restore, then wait for the end."""
    from kubetune.sidecar.core import Sidecar

    addr = wait_rendezvous(api, cfg, stop)
    if addr is None:
        return 0  # stopped before rank 0 ran
    write_rendezvous(cfg, addr)
    log.info("rank 0 of attempt %d is at %s", cfg.attempt, addr)
    Sidecar(cfg, api=None).restore()  # writes trial.json and .ready: the worker starts
    stop.wait()
    return 0
