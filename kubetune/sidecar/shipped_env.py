"""The installed requirements of shipped code, cached in storage per requirements hash.

``kubetune submit --requirements`` ships a requirements.txt under ``.kubetune/code/``. The first
trial pod installs it (kubetune.cluster.bootstrap, into ``ROOT/site``) and its sidecar stores
the result under ``.kubetune/env/HASH/`` (``.complete`` written last); every later pod's
sidecar restores ``ROOT/site`` from there before the trial starts, so N trials do not install
N times. The trial container never touches storage: it only finds ``ROOT/site`` ready (its
``.installed-HASH`` marker) or builds it and leaves ``.built-here`` for the sidecar.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from typing import Any

log = logging.getLogger("kubetune.sidecar")

COMPLETE = ".complete"
BUILT_HERE = ".built-here"


def requirements_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def cache_uri(code_from: str, root: str) -> str | None:
    """``.kubetune/env/HASH`` beside the shipped code, or None without a requirements file."""
    req = os.path.join(root, "code", "requirements.txt")
    if not os.path.exists(req):
        return None
    return f"{code_from.rstrip('/').rsplit('/', 1)[0]}/env/{requirements_hash(req)}"


def restore_site(code_from: str | None, root: str, open_storage: Any) -> None:
    """Fill ROOT/site from the cache when a complete one is stored (else the trial builds it)."""
    uri = cache_uri(code_from, root) if code_from else None
    if uri is None:
        return
    try:
        store = open_storage(uri)
        if not store.exists(COMPLETE):
            return
        tmp = os.path.join(root, "site.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        store.get_directory("", tmp)
        os.remove(os.path.join(tmp, COMPLETE))
        os.replace(tmp, os.path.join(root, "site"))
        log.info("requirements restored from %s", uri)
    except Exception as exc:  # a cache miss costs an install, never the trial
        log.warning("requirements cache %s unusable (%s); the trial installs them", uri, exc)


def store_when_built(
    code_from: str | None, root: str, open_storage: Any, stop: threading.Event
) -> None:
    """Wait for the trial's bootstrap to build ROOT/site, then store it (``.complete`` last)."""
    uri = cache_uri(code_from, root) if code_from else None
    if uri is None:
        return
    site = os.path.join(root, "site")
    marker = os.path.join(site, BUILT_HERE)
    while not os.path.exists(marker):
        if stop.wait(0.5) and not os.path.exists(marker):
            return
    store = open_storage(uri)
    if store.exists(COMPLETE):
        return
    for dirpath, _dirs, files in os.walk(site):
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, site).replace(os.sep, "/")
            if rel != BUILT_HERE:
                store.put_file(full, rel)
    store.put_bytes(COMPLETE, b"")
    log.info("requirements stored in %s for the next trials", uri)
