"""Ends a driver's trial processes when the driver is gone, however it went (``kill -9``).

The driver starts ``python -m kubetune.local.reaper TOKEN GRACE_S`` in a session of its own,
with a pipe on its stdin, and puts ``KUBETUNE_DRIVER_TOKEN=TOKEN`` in the environment of every
trial process (and of the fork server, whose children inherit it). The reaper only waits on
the pipe. When the pipe closes (the driver ended, or died) it sweeps: every process whose
environment carries the token gets SIGTERM, to its process group as well; after GRACE_S those
still there get SIGKILL. That catches what PDEATHSIG alone does not: a trial that ignores or
swallows SIGTERM, sits in native code, or started a child of its own (even in a new session).
After a clean end the driver has stopped its trials already and the sweep finds nothing, or
only what a trial left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

TOKEN_ENV = "KUBETUNE_DRIVER_TOKEN"
PROC = "/proc"


def marked_processes(token: str) -> list[int]:
    """Pids of live processes (not zombies) whose environment holds the token."""
    needle = f"{TOKEN_ENV}={token}".encode()
    me = os.getpid()
    found = []
    try:
        names = os.listdir(PROC)
    except OSError:
        return []
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"{PROC}/{name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue  # gone, a zombie, or not ours
        if needle in env.split(b"\0"):
            found.append(int(name))
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, sig)
            except OSError:
                pass


def sweep(token: str, grace_s: float) -> int:
    """SIGTERM, then SIGKILL after ``grace_s``, to every marked process; returns how many."""
    pids = marked_processes(token)
    if not pids:
        return 0
    seen = set(pids)
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        pids = marked_processes(token)
        seen.update(pids)
        if not pids:
            return len(seen)
    for _ in range(50):  # a process may fork while we kill: repeat until none is left
        pids = marked_processes(token)
        if not pids:
            break
        seen.update(pids)
        _signal_all(pids, signal.SIGKILL)
        time.sleep(0.02)
    return len(seen)


def main(argv: list[str]) -> int:
    token, grace_s = argv[0], float(argv[1])
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    while stdin.read(4096):
        pass  # nothing is ever sent; end of file is the message
    sweep(token, grace_s)
    return 0


class Reaper:
    """The driver's handle: start it, give trials :attr:`env`, :meth:`close` at the end."""

    def __init__(self, grace_s: float) -> None:
        self.token = uuid.uuid4().hex
        self.env = {TOKEN_ENV: self.token}
        self._proc: subprocess.Popen[bytes] | None = None
        if not os.path.isdir(PROC):
            return  # no /proc to find marked processes in: process groups are all we have
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "kubetune.local.reaper", self.token, str(grace_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )

    def close(self) -> None:
        """The driver is done: the reaper sweeps once and exits (it is not waited for)."""
        if self._proc is not None and self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            self._proc = None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
