"""Where a worker of a multi-worker trial is: its ranks and the rendezvous, from the env.

The backend (local mode, or the operator's pod builder) gives every worker of a trial
torch.distributed's environment (``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``NODE_RANK``) and kubetune's own copies of the ranks
(``KUBETUNE_WORLD_RANK``, ``KUBETUNE_WORLD_SIZE``): the runner trusts only its own names, so a
``RANK`` that a single-worker trial's image happens to set never silences its reports.

On a cluster the address of rank 0 is known only once its pod runs: a worker pod's sidecar
writes it into the file ``KUBETUNE_RENDEZVOUS_FILE`` names before the worker starts, and
:func:`load_rendezvous` copies it into ``MASTER_ADDR``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

RANK_ENV = "KUBETUNE_WORLD_RANK"
SIZE_ENV = "KUBETUNE_WORLD_SIZE"
RENDEZVOUS_FILE_ENV = "KUBETUNE_RENDEZVOUS_FILE"
DEFAULT_MASTER_PORT = 29500


@dataclass(frozen=True)
class WorkerPlace:
    world_rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0


def rendezvous_env(place: WorkerPlace, master_addr: str | None, master_port: int) -> dict[str, str]:
    """The environment of one worker (``MASTER_ADDR`` left out when not yet known)."""
    env = {
        "WORLD_SIZE": str(place.world_size),
        "RANK": str(place.world_rank),
        "LOCAL_RANK": str(place.local_rank),
        "LOCAL_WORLD_SIZE": str(place.local_world_size),
        "NODE_RANK": str(place.node_rank),
        "MASTER_PORT": str(master_port),
        RANK_ENV: str(place.world_rank),
        SIZE_ENV: str(place.world_size),
    }
    if master_addr is not None:
        env["MASTER_ADDR"] = master_addr
    return env


def _int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def current_place() -> WorkerPlace:
    """This process's place; a process outside a multi-worker trial is rank 0 of 1."""
    size = _int(SIZE_ENV, 1)
    if size <= 1:
        return WorkerPlace()
    return WorkerPlace(
        world_rank=_int(RANK_ENV, 0),
        world_size=size,
        local_rank=_int("LOCAL_RANK", 0),
        local_world_size=_int("LOCAL_WORLD_SIZE", 1),
        node_rank=_int("NODE_RANK", 0),
    )


def load_rendezvous() -> None:
    """Copy the rendezvous file's address into ``MASTER_ADDR`` (a worker pod's sidecar wrote
    it); without the variable or the file nothing changes."""
    path = os.environ.get(RENDEZVOUS_FILE_ENV)
    if not path:
        return
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and isinstance(data.get("masterAddr"), str):
        os.environ["MASTER_ADDR"] = data["masterAddr"]
