"""A ``Checkpoint`` of an experiment in S3 that downloads only when it is used.

Reading the results of an experiment of hundreds of trials must not download every stored
checkpoint: ``ResultGrid`` hands out these, and the files come down (once, into the staging
directory) on the first ``path``, ``to_directory``, ``as_directory``, ``to_dict`` or
``get_metadata``.
"""

from __future__ import annotations

import os
from typing import Any

from kubetune.air.checkpoint import Checkpoint, _read_metadata


class StoredCheckpoint(Checkpoint):
    def __init__(self, uri: str, local_path: str) -> None:
        self.uri = uri.rstrip("/")
        self._staged_path = os.path.abspath(local_path)
        self._fetched = os.path.isdir(self._staged_path)
        self._data_dict = None
        self._meta: dict[str, Any] | None = None

    def _fetch(self) -> str:
        if not self._fetched:
            from kubetune.storage import open_storage

            tmp = f"{self._staged_path}.tmp{os.getpid()}"
            open_storage(self.uri).get_directory("", tmp)
            os.makedirs(os.path.dirname(self._staged_path), exist_ok=True)
            if os.path.isdir(self._staged_path):  # another reader was faster
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.replace(tmp, self._staged_path)
            self._fetched = True
        return self._staged_path

    # Checkpoint's methods read these two attributes: fetch on first use.
    @property
    def _local_path(self) -> str:
        return self._fetch()

    @_local_path.setter
    def _local_path(self, value: str | None) -> None:
        if value is not None:
            self._staged_path = value

    @property
    def _metadata(self) -> dict[str, Any]:
        if self._meta is None:
            self._meta = _read_metadata(self._fetch())
        return self._meta

    @_metadata.setter
    def _metadata(self, value: dict[str, Any]) -> None:
        self._meta = value

    def __repr__(self) -> str:
        return f"Checkpoint(uri={self.uri!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StoredCheckpoint):
            return self.uri == other.uri
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.uri)
