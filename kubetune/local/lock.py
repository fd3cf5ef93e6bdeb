"""One driver per experiment: an exclusive lock held by the live driver.

The lock is ``flock`` on ``.kubetune/driver.lock`` in the experiment directory: the kernel
drops it when the holding process dies (``kill -9`` included), so a lock is never stale after
its holder is gone. The file names the holder (pid, host, start time) for the refusal message.
An ``s3://`` experiment is locked in its local staging directory: that refuses a second driver
on this machine, not on another one.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from kubetune.storage import StorageError

LOCK_FILE = "driver.lock"


class ExperimentLockedError(StorageError):
    """Another live driver runs this experiment."""


class ExperimentLock:
    def __init__(self, internal_dir: str, uri: str) -> None:
        self.path = os.path.join(internal_dir, LOCK_FILE)
        self.uri = uri
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ExperimentLockedError(
                f"{self.uri} is being run by another kubetune driver ({holder}); two drivers"
                " on one experiment would run its trials twice. Wait for it to end, or stop"
                " it (Ctrl-C, or kill that pid) and resume"
            ) from None
        except OSError:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_holder(fd: int) -> str:
    info: Any = None
    for _ in range(20):  # the holder writes its name right after it got the lock
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"null")
        except ValueError:
            info = None
        if isinstance(info, dict):
            break
        time.sleep(0.01)
    if not isinstance(info, dict):
        return "holder unknown"
    since = info.get("since")
    started = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
        if isinstance(since, (int, float))
        else "?"
    )
    return f"pid {info.get('pid')} on host {info.get('host')}, since {started}"
