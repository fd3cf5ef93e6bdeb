"""Where experiments live: a local directory or an S3 bucket, behind one interface.

Keys are '/'-separated paths relative to the storage root, laid out as DESIGN.md §3.3:
``EXPERIMENT/experiment_state.json``, ``EXPERIMENT/TRIAL/result.json``,
``EXPERIMENT/TRIAL/checkpoint_000000/...``.
"""

from __future__ import annotations

from kubetune.storage.base import Storage, StorageError
from kubetune.storage.local import LocalStorage
from kubetune.storage.locations import open_storage

__all__ = ["LocalStorage", "Storage", "StorageError", "open_storage"]
