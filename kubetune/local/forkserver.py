"""A warm Python process that forks trial runners on request (local mode's fast path).

Starting ``python -m kubetune.trial`` costs an interpreter start and kubetune's imports for
every trial (about 80 ms of CPU here); on a small machine running hundreds of short trials that
is most of the work. The fork server pays it once: it imports the runner, then forks a child
per trial. It is single-threaded, so forking is safe; each child runs in its own session, so
signals reach only it.

Protocol over a SOCK_SEQPACKET socket pair (one JSON message per packet):
  driver -> server: {"spec": PATH, "env": {...}} with three fds: gate write end (trial ->
                    driver), gate read end (driver -> trial), log file
  server -> driver: {"pid": PID} for each request, in order; {"exit": PID, "code": CODE}
                    whenever a child ends (code as subprocess reports it: -N for a signal)
The server exits when the driver closes its end, and dies with the driver (PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
from typing import Any

MAX_MESSAGE = 1 << 16


def _child(request: dict[str, Any], fds: list[int], server: socket.socket) -> int:
    gate_w, gate_r, log_fd = fds
    server.close()
    os.setsid()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.environ.update(request.get("env", {}))
    os.environ["KUBETUNE_PARENT_PID"] = str(os.getppid())
    from kubetune.trial.runner import run_spec
    from kubetune.trial.spec import TrialSpec

    spec = TrialSpec.load(request["spec"])
    spec.gate = {"kind": "pipe", "write_fd": gate_w, "read_fd": gate_r}
    return run_spec(spec)


def serve(fd: int) -> None:
    server = socket.socket(fileno=fd)
    # warm the imports every trial needs
    import cloudpickle  # noqa: F401

    import kubetune.trial.runner
    import kubetune.tune.trainable  # noqa: F401
    from kubetune.trial.ending import _die_with_parent

    _die_with_parent()
    children: set[int] = set()
    while True:
        readable, _, _ = select.select([server], [], [], 0.05 if children else 1.0)
        if readable:
            try:
                message, fds, _flags, _addr = socket.recv_fds(server, MAX_MESSAGE, 3)
            except ConnectionResetError:
                message, fds = b"", []
            if not message:
                break  # the driver is gone
            request = json.loads(message)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = _child(request, fds, server)
                finally:
                    try:
                        sys.stdout.flush()
                        sys.stderr.flush()
                    finally:
                        os._exit(code)
            for extra in fds:
                os.close(extra)
            children.add(pid)
            if not _tell(server, {"pid": pid}):
                break  # the driver is gone (its reaper ends the children)
        driver_gone = False
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            children.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            if not _tell(server, {"exit": pid, "code": code}):
                driver_gone = True
                break
        if driver_gone:
            break


def _tell(server: socket.socket, message: dict[str, Any]) -> bool:
    """Send to the driver; False when it has gone (a driver killed mid-spawn)."""
    try:
        server.send(json.dumps(message).encode())
    except OSError:
        return False
    return True


class ForkServer:
    """The driver's handle on a fork server."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        import subprocess

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**os.environ, **(env or {}), "KUBETUNE_PARENT_PID": str(os.getpid())}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubetune.local.forkserver", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            start_new_session=True,
        )
        theirs.close()
        self.sock = ours
        self.exit_codes: dict[int, int] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def _handle(self, message: dict[str, Any]) -> int | None:
        if "exit" in message:
            self.exit_codes[int(message["exit"])] = int(message["code"])
            return None
        return int(message["pid"])

    def spawn(self, spec_path: str, env: dict[str, str], fds: list[int]) -> int:
        payload = json.dumps({"spec": spec_path, "env": env}).encode()
        socket.send_fds(self.sock, [payload], fds)
        while True:
            data = self.sock.recv(MAX_MESSAGE)
            if not data:
                raise RuntimeError("the fork server exited")
            pid = self._handle(json.loads(data))
            if pid is not None:
                return pid

    def drain(self) -> None:
        """Read exit notices that have arrived (non-blocking)."""
        while True:
            ready, _, _ = select.select([self.sock], [], [], 0)
            if not ready:
                return
            data = self.sock.recv(MAX_MESSAGE)
            if not data:
                return
            self._handle(json.loads(data))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            try:
                self.proc.wait(timeout=5)
            except Exception:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
