"""A local directory as storage (local mode's default)."""

from __future__ import annotations

import os
import shutil

from kubetune.storage.base import Storage, StorageError


class LocalStorage(Storage):
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create storage directory {self.root}: {exc}") from exc
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"storage directory {self.root} is not writable")

    def _path(self, key: str) -> str:
        full = os.path.abspath(os.path.join(self.root, *[p for p in key.split("/") if p]))
        if full != self.root and not full.startswith(self.root + os.sep):
            raise StorageError(f"key {key!r} escapes the storage root {self.root}")
        return full

    def uri(self, key: str = "") -> str:
        return self._path(key)

    def is_local(self) -> bool:
        return True

    def local_path(self, key: str = "") -> str:
        return self._path(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no object at {path}")
        with open(path, "rb") as f:
            return f.read()

    def put_file(self, local_path: str, key: str) -> None:
        path = self._path(key)
        if os.path.abspath(local_path) == path:
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        shutil.copyfile(local_path, tmp)
        os.replace(tmp, path)

    def get_file(self, key: str, local_path: str) -> None:
        path = self._path(key)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no object at {path}")
        if os.path.abspath(local_path) != path:
            shutil.copyfile(path, local_path)

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self._path(prefix)
        if os.path.isfile(base):
            return [prefix.strip("/")]
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                rel = os.path.relpath(os.path.join(dirpath, name), self.root)
                keys.append(rel.replace(os.sep, "/"))
        return sorted(keys)

    def get_bytes_from(self, key: str, start: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                f.seek(start)
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return b""

    def sizes(self, prefix: str = "") -> dict[str, int]:
        out: dict[str, int] = {}
        for key in self.list_keys(prefix):
            try:
                out[key] = os.stat(self._path(key)).st_size
            except FileNotFoundError:
                pass  # deleted since the listing
        return out

    def list_children(self, prefix: str = "") -> list[str]:
        try:
            return sorted(os.listdir(self._path(prefix)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path == self.root:
            raise StorageError("refusing to delete the whole storage root")
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.unlink(path)
