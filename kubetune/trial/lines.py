"""Line files that stay readable whatever happens mid-write (result.json, progress.csv).

A line is appended with one ``write`` of the whole line; if the write fails part-way (a full
disk), the file is cut back to where it was, so no half line stays behind. A half line that a
killed process did leave (SIGKILL, power loss) is cut off before the next append, so the next
line never glues onto it: the cut bytes are kept next to the file (``NAME.torn``).
"""

from __future__ import annotations

import json
import os
from typing import Any

TORN_SUFFIX = ".torn"
_TAIL_CHUNK = 1 << 16


def trim_torn_tail(path: str) -> int:
    """Cut ``path`` back to its last complete line; returns how many bytes were cut."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0
        if os.pread(fd, 1, size - 1) == b"\n":
            return 0
        end = size
        keep = 0
        while end > 0:  # find the last newline, reading backwards
            start = max(0, end - _TAIL_CHUNK)
            chunk = os.pread(fd, end - start, start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            end = start
        torn = os.pread(fd, size - keep, keep)
        try:
            with open(path + TORN_SUFFIX, "ab") as f:
                f.write(torn + b"\n")
        except OSError:
            pass  # keeping the fragment is a courtesy; the cut is what matters
        os.ftruncate(fd, keep)
        return size - keep
    finally:
        os.close(fd)


class LineAppender:
    """Appends whole lines to a file; a failed append leaves the file as it was."""

    def __init__(self, path: str) -> None:
        self.path = path
        trim_torn_tail(path)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size  # this appender is the file's only writer

    def append(self, text: str) -> None:
        """Write ``text`` (one or more lines, ending in a newline)."""
        assert self._fd is not None, "closed"
        data = text.encode("utf-8")
        before = self._size
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except BaseException:
            try:
                os.ftruncate(self._fd, before)
            except OSError:
                pass
            raise
        self._size = before + len(data)

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None


def complete_rows(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects on the complete lines of ``data`` (bytes a reader of a growing log got
    past its offset) and how many bytes those lines take: the reader's offset moves by that,
    so a torn last line (a copy in flight) is read again, whole, next time. A damaged complete
    line is skipped."""
    end = data.rfind(b"\n") + 1
    rows: list[dict[str, Any]] = []
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows, end
