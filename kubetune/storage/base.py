"""The storage interface shared by local mode, the sidecar and the operator."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable


class StorageError(OSError):
    """A storage operation failed; the message names the URI. ``code`` is the store's error
    code where it gave one (S3: ``AccessDenied``, ``NoSuchBucket``, ...)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class Storage(ABC):
    """A tree of objects addressed by '/'-separated keys."""

    @abstractmethod
    def uri(self, key: str = "") -> str:
        """A URI a user can paste (``/abs/path/key`` or ``s3://bucket/prefix/key``)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError if there is none."""

    @abstractmethod
    def put_file(self, local_path: str, key: str) -> None: ...

    @abstractmethod
    def get_file(self, key: str, local_path: str) -> None: ...

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (recursively), sorted, as full keys."""

    @abstractmethod
    def list_children(self, prefix: str = "") -> list[str]:
        """Names of the immediate children ("directories" and objects) under ``prefix``."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (a key or a "directory")."""

    def get_bytes_from(self, key: str, start: int) -> bytes:
        """The object's bytes from offset ``start`` on; b"" when it has none there (or no
        object): how a reader follows a log that only grows without reading it again."""
        try:
            return self.get_bytes(key)[start:]
        except FileNotFoundError:
            return b""

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """Every key under ``prefix`` with its size in bytes (one listing in S3)."""
        return {key: len(self.get_bytes(key)) for key in self.list_keys(prefix)}

    def exists(self, key: str) -> bool:
        try:
            self.get_bytes(key)
        except FileNotFoundError:
            return False
        return True

    def put_files(
        self,
        pairs: list[tuple[str, str]],
        on_done: Callable[[str, str], None] | None = None,
    ) -> None:
        """Store each ``(local_path, key)``; ``on_done`` is called after each one is stored."""
        for local_path, key in pairs:
            self.put_file(local_path, key)
            if on_done is not None:
                on_done(local_path, key)

    def copy_objects(self, source: Storage, pairs: list[tuple[str, str]]) -> None:
        """Copy each ``(key in source, key here)``, overwriting; S3 to S3 copies server-side."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="kubetune-copy-") as tmp:
            path = os.path.join(tmp, "object")
            for src_key, key in pairs:
                source.get_file(src_key, path)
                self.put_file(path, key)

    def put_directory(self, local_dir: str, prefix: str) -> None:
        for dirpath, _dirs, files in os.walk(local_dir):
            for name in files:
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, local_dir).replace(os.sep, "/")
                self.put_file(full, join_key(prefix, rel))

    def get_directory(self, prefix: str, local_dir: str) -> None:
        keys = self.list_keys(prefix)
        if not keys:
            raise FileNotFoundError(f"nothing stored under {self.uri(prefix)}")
        # under no prefix every key keeps its whole path (it was flattened to its basename)
        base = prefix.strip("/") + "/" if prefix.strip("/") else ""
        for key in keys:
            rel = key[len(base) :] if key.startswith(base) else os.path.basename(key)
            target = os.path.join(local_dir, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            self.get_file(key, target)

    def is_local(self) -> bool:
        return False

    def local_path(self, key: str = "") -> str:
        raise StorageError(f"{self.uri(key)} is not on the local file system")
