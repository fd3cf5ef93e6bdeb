"""Mirror a local experiment directory to remote storage (local mode with an s3:// path)."""

from __future__ import annotations

import os

from kubetune.storage.base import Storage, join_key

SKIP_DIRS = {".kubetune"}


class DirectoryMirror:
    """Uploads files that changed since the last push and deletes remote files that vanished
    locally (checkpoints removed by num_to_keep)."""

    def __init__(self, local_dir: str, storage: Storage, prefix: str) -> None:
        self.local_dir = local_dir
        self.storage = storage
        self.prefix = prefix
        self._sent: dict[str, tuple[int, int]] = {}

    def push(self) -> int:
        seen: set[str] = set()
        sent = 0
        for dirpath, dirnames, filenames in os.walk(self.local_dir):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".tmp_")]
            for name in filenames:
                if name.endswith(".tmp") or ".tmp" in name.rsplit(".", 1)[-1]:
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, self.local_dir).replace(os.sep, "/")
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                seen.add(rel)
                stamp = (st.st_size, st.st_mtime_ns)
                if self._sent.get(rel) == stamp:
                    continue
                self.storage.put_file(full, join_key(self.prefix, rel))
                self._sent[rel] = stamp
                sent += 1
        for rel in [r for r in self._sent if r not in seen]:
            self.storage.delete_prefix(join_key(self.prefix, rel))
            del self._sent[rel]
        return sent

    def pull(self) -> None:
        """Download the remote experiment into the local directory (for restore)."""
        self.storage.get_directory(self.prefix, self.local_dir)
