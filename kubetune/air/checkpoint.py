"""``Checkpoint``: Ray AIR's checkpoint, held as a dict or as a directory.

A checkpoint is either *dict data* (kept in memory; written to a directory as one pickle file
when it has to be persisted) or a *directory* on local disk. Either form converts to the other.
Metadata is a small JSON-able dict stored beside the data (``.metadata.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

DICT_FILE = "_dict_checkpoint.pkl"
METADATA_FILE = ".metadata.json"
# Keys of a dict made from a directory checkpoint: {relative path: bytes}
_FILES_KEY = "_kubetune_dir_files"


class Checkpoint:
    """A trial's saved state: dict data or a local directory (Ray's ``ray.air.Checkpoint``)."""

    def __init__(
        self,
        local_path: str | os.PathLike[str] | None = None,
        data_dict: dict[str, Any] | None = None,
    ) -> None:
        if (local_path is None) == (data_dict is None):
            raise ValueError("Checkpoint needs exactly one of local_path or data_dict")
        self._local_path = os.fspath(local_path) if local_path is not None else None
        self._data_dict = data_dict
        self._metadata: dict[str, Any] = {}
        if self._local_path is not None:
            self._metadata = _read_metadata(self._local_path)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        if not isinstance(data, dict):
            raise TypeError(f"Checkpoint.from_dict expects a dict, got {type(data).__name__}")
        return cls(data_dict=dict(data))

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str]) -> Checkpoint:
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"checkpoint directory does not exist: {path!r}")
        return cls(local_path=os.path.abspath(path))

    # -- conversion ------------------------------------------------------------------------
    @property
    def path(self) -> str | None:
        """The directory this checkpoint lives in, or None for dict data."""
        return self._local_path

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's data as a dict (a directory's files come back as bytes)."""
        if self._data_dict is not None:
            return dict(self._data_dict)
        assert self._local_path is not None
        dict_file = os.path.join(self._local_path, DICT_FILE)
        if os.path.exists(dict_file):
            with open(dict_file, "rb") as f:
                data = pickle.load(f)
            if not isinstance(data, dict):
                raise TypeError(f"{dict_file} does not hold a dict")
            return data
        return {_FILES_KEY: _pack_directory(self._local_path)}

    def to_directory(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write the checkpoint into ``path`` (a new temporary directory if None)."""
        target = os.fspath(path) if path is not None else tempfile.mkdtemp(prefix="checkpoint_")
        os.makedirs(target, exist_ok=True)
        if self._data_dict is not None:
            files = self._data_dict.get(_FILES_KEY)
            if isinstance(files, dict) and len(self._data_dict) == 1:
                _unpack_directory(files, target)
            else:
                import cloudpickle

                _atomic_write_bytes(
                    os.path.join(target, DICT_FILE), cloudpickle.dumps(self._data_dict)
                )
        else:
            assert self._local_path is not None
            if os.path.abspath(target) != self._local_path:
                shutil.copytree(self._local_path, target, dirs_exist_ok=True)
        if self._metadata:
            _write_metadata(target, self._metadata)
        return target

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        """Yield a directory holding the checkpoint; a temporary one is removed afterwards."""
        if self._local_path is not None:
            yield self._local_path
            return
        tmp = self.to_directory()
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- metadata ---------------------------------------------------------------------------
    def get_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        _check_metadata(metadata)
        self._metadata = dict(metadata)
        self._persist_metadata()

    def update_metadata(self, metadata: dict[str, Any]) -> None:
        _check_metadata(metadata)
        self._metadata.update(metadata)
        self._persist_metadata()

    def _persist_metadata(self) -> None:
        if self._local_path is not None:
            _write_metadata(self._local_path, self._metadata)

    # -- plumbing for the trial runner -----------------------------------------------------
    def _move_to(self, target: str) -> None:
        """Take a directory checkpoint over (Ray moves it); dict data is written out."""
        if self._local_path is not None:
            if not os.path.isdir(self._local_path):
                raise FileNotFoundError(
                    f"checkpoint directory does not exist: {self._local_path!r}"
                )
            shutil.move(self._local_path, target)
            self._local_path = os.path.abspath(target)
        else:
            self.to_directory(target)

    def __repr__(self) -> str:
        if self._local_path is not None:
            return f"Checkpoint(local_path={self._local_path!r})"
        return f"Checkpoint(data_dict=<{len(self._data_dict or {})} keys>)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Checkpoint):
            return NotImplemented
        return self._local_path == other._local_path and self._data_dict == other._data_dict

    def __hash__(self) -> int:
        return hash(self._local_path) if self._local_path else id(self)


def _check_metadata(metadata: dict[str, Any]) -> None:
    if not isinstance(metadata, dict):
        raise TypeError(f"checkpoint metadata must be a dict, got {type(metadata).__name__}")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"checkpoint metadata must be JSON-serialisable: {exc}") from None


def _read_metadata(path: str) -> dict[str, Any]:
    try:
        with open(os.path.join(path, METADATA_FILE)) as f:
            data = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_metadata(path: str, metadata: dict[str, Any]) -> None:
    _atomic_write_bytes(os.path.join(path, METADATA_FILE), json.dumps(metadata).encode())


def _atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _pack_directory(root: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if rel == METADATA_FILE:
                continue
            with open(full, "rb") as f:
                files[rel] = f.read()
    return files


def _unpack_directory(files: dict[str, bytes], root: str) -> None:
    base = os.path.abspath(root)
    for rel, content in files.items():
        full = os.path.abspath(os.path.join(base, rel))
        if not full.startswith(base + os.sep):
            raise ValueError(f"refusing to write {rel!r} outside the checkpoint directory")
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(content)
