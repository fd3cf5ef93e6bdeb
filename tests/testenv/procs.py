"""Child processes of the test environment that never outlive the test run.

Every server is started in its own session (so its process group can be signalled as a whole),
logs to a file, is registered for an ``atexit`` sweep, and on Linux gets ``PR_SET_PDEATHSIG``
so that the kernel kills it even when the Python process dies without running ``atexit``
(SIGKILL, a crashed interpreter, a pytest-timeout hard kill).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

_PR_SET_PDEATHSIG = 1
_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low, high = (int(v) for v in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


_picked: set[int] = set()
_picked_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Chosen outside the kernel's ephemeral range: a port the kernel hands out (bind to 0) is
    also the source port of the next outgoing connection of any process here, and with a
    kubelet, containerd and relays talking to the API server one of them took such a port
    before the server we picked it for could bind it (SeaweedFS: address already in use).
    """
    low, high = _ephemeral_range()
    # below the ephemeral range and below NodePorts (30000-32767)
    candidates = [(20000, min(low, 30000))] if low > 21000 else [(high + 1, 65535)]
    rng = random.SystemRandom()
    for _ in range(200):
        start, stop = candidates[0]
        port = rng.randrange(start, stop)
        with _picked_lock:
            if port in _picked:
                continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        with _picked_lock:
            _picked.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded machine
        s.bind(("127.0.0.1", 0))
        fallback: int = s.getsockname()[1]
        return fallback


def _die_with_parent() -> Callable[[], None] | None:
    # PDEATHSIG fires when the *thread* that forked exits, so only use it from the main thread,
    # whose end is the end of the process.
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class ManagedProcess:
    """One server process with its own process group and a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        with _live_lock:
            _live.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after GRACE seconds; idempotent."""
        try:
            if self.popen.poll() is None:
                _signal_group(self.popen.pid, signal.SIGTERM)
                try:
                    self.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
            # Kill whatever is left in the group even when the leader already exited.
            _signal_group(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)
        finally:
            with _live_lock:
                _live.discard(self)

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.popen.pid})"


def end_process(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM to ``proc``, SIGKILL if it has not exited ``grace`` seconds later."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_S = TypeVar("_S", bound="StopsOnExit")


class StopsOnExit:
    """A part of the test environment that ``with`` stops on the way out (``stop``)."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_all(processes: Sequence[ManagedProcess], grace: float = 5.0) -> None:
    """Stop PROCESSES in order, all of them even if one stop raises."""
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.stop(grace)


@atexit.register
def _sweep() -> None:
    with _live_lock:
        leftovers = list(_live)
    stop_all(leftovers, grace=2.0)


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    *,
    interval: float = 0.05,
    watch: Sequence[ManagedProcess] = (),
) -> None:
    """Poll CHECK until it returns true; fail early if a watched process exits."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in watch:
            if not proc.alive():
                raise RuntimeError(
                    f"{proc.name} exited with code {proc.popen.returncode} while waiting for "
                    f"{what}; last lines of {proc.log_path}:\n{proc.log_tail()}"
                )
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name} ({p.log_path}):\n{p.log_tail(20)}" for p in watch)
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(interval)
