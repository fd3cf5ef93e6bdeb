"""A new run under the name of an earlier one: Ray's behaviour, without losing the earlier one.

Ray writes a second ``Tuner.fit()`` with the same ``RunConfig.name`` into the same folder, new
trial folders beside the old ones, and the new experiment state replaces the old (so the
earlier run can no longer be restored: ray-project/ray#35812). Scripts do this (Ray's own
``mlflow_example.py`` runs two Tuners under one name), so refusing would break them.

Here the new run goes into the folder too, and the earlier run's state
(``experiment_state.json`` and its segments, with a copy of the driver's ``tuner.pkl`` and
``trainable.pkl``) moves to ``.kubetune/earlier/STAMP/`` first, in
the folder and, for an ``s3://`` experiment, in the bucket; its trial folders stay untouched,
because the new run's trial IDs get a prefix no folder there uses. ``Tuner.restore(path)``
continues the newest run; the ResultGrid of each ``fit()`` holds that run's trials.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time

from kubetune.engine.config import default_id_prefix
from kubetune.engine.snapshot import SEGMENT_PREFIX
from kubetune.local.common import INTERNAL_DIR
from kubetune.local.stored_state import STATE_FILE
from kubetune.storage import open_storage

SEGMENTS = SEGMENT_PREFIX.rstrip("/")  # the snapshot's sealed segments
EARLIER = f"{INTERNAL_DIR}/earlier"
DRIVER_FILES = ("tuner.pkl", "trainable.pkl")  # what Tuner.restore needs besides the state


def earlier_state_keys(local_dir: str, uri: str) -> list[str]:
    """The state files an earlier run left: in the folder, or in the bucket (whose staging
    folder on this machine may be gone, or never existed: a run from another machine)."""
    if uri.startswith("s3://"):
        storage = open_storage(uri)
        if not storage.exists(STATE_FILE):
            return []
        return [STATE_FILE, *storage.list_keys(f"{SEGMENTS}/")]
    if not os.path.exists(os.path.join(local_dir, STATE_FILE)):
        return []
    keys = [STATE_FILE]
    segments = os.path.join(local_dir, SEGMENTS)
    if os.path.isdir(segments):
        keys += [f"{SEGMENTS}/{n}" for n in sorted(os.listdir(segments))]
    return keys


def set_aside(local_dir: str, uri: str, keys: list[str]) -> str:
    """Move the earlier run's state files to ``.kubetune/earlier/STAMP/``; return that key."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.gmtime())
    dest = f"{EARLIER}/{stamp}"
    n = 1
    while os.path.exists(os.path.join(local_dir, dest)):
        n += 1
        dest = f"{EARLIER}/{stamp}_{n}"
    if uri.startswith("s3://"):
        storage = open_storage(uri)
        for key in keys:  # copied first, deleted after: an interruption loses nothing
            storage.put_bytes(f"{dest}/{key}", storage.get_bytes(key))
        os.makedirs(os.path.join(local_dir, dest), exist_ok=True)  # taken, for the next stamp
        for key in keys:
            storage.delete_prefix(key)  # each an exact key
    for key in keys:  # the staging folder's copy (s3://) or the state itself
        src = os.path.join(local_dir, key)
        if os.path.exists(src):
            target = os.path.join(local_dir, dest, key)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(src, target)
    shutil.rmtree(os.path.join(local_dir, SEGMENTS), ignore_errors=True)
    for name in DRIVER_FILES:  # the next run writes its own
        src = os.path.join(local_dir, INTERNAL_DIR, name)
        if os.path.exists(src):
            os.makedirs(os.path.join(local_dir, dest), exist_ok=True)
            shutil.copy2(src, os.path.join(local_dir, dest, name))
    return dest


def fresh_prefix(name: str, local_dir: str) -> str:
    """A trial-ID prefix that no trial folder in ``local_dir`` (nor the default one, which the
    earlier run of this name may have used) carries."""
    try:
        taken = os.listdir(local_dir)
    except OSError:
        taken = []
    default = default_id_prefix(name)
    for n in range(1, 10_000):
        prefix = hashlib.sha1(f"{name}\0{time.time_ns()}\0{n}".encode()).hexdigest()[:5] + "_"
        if prefix != default and not any(f"_{prefix}" in t or t.startswith(prefix) for t in taken):
            return prefix
    raise RuntimeError(f"no free trial-ID prefix in {local_dir}")  # 10,000 collisions: never
