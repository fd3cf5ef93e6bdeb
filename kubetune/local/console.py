"""Trial output on the driver's console, as Ray shows it: ``(trial_name pid=N) line``.

Each trial process writes its stdout and stderr to its ``trial.log`` (kept, as before); the
driver follows that file and echoes each complete line to its own stdout with the trial's name
and the process id in front, so ``print`` in a trainable shows up where the user ran ``fit()``.
``KUBETUNE_TRIAL_OUTPUT=0`` turns the echo off (the log files stay).
"""

from __future__ import annotations

import os
import sys
from typing import IO

CHUNK = 65536


def echo_enabled() -> bool:
    return os.environ.get("KUBETUNE_TRIAL_OUTPUT", "1") != "0"


class OutputEcho:
    def __init__(self, path: str, offset: int, prefix: str) -> None:
        self._file: IO[bytes] | None = open(path, "rb")  # noqa: SIM115
        self._file.seek(offset)
        self._buf = b""
        self.prefix = prefix

    def pump(self, final: bool = False) -> None:
        """Echo the complete lines written since the last call (all of it when ``final``)."""
        if self._file is None:
            return
        data = self._buf
        while True:
            chunk = self._file.read(CHUNK)
            if not chunk:
                break
            data += chunk
        lines = data.split(b"\n")
        self._buf = b"" if final else lines.pop()
        out = "".join(
            f"{self.prefix}{line.decode('utf-8', 'replace').rstrip(chr(13))}\n"
            for line in lines
            if line or not final
        )
        if out:
            try:
                sys.stdout.write(out)
                sys.stdout.flush()
            except (OSError, ValueError):
                pass  # the console is gone: the log file still has everything

    def close(self) -> None:
        if self._file is not None:
            self.pump(final=True)
            self._file.close()
            self._file = None
