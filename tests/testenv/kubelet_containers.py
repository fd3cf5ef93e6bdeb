"""One container of the process kubelet: its process, started through the mount wrapper
(kubelet_mounts) in a session of its own, and signalled as a process group; its startup probe:
exec (inside the container's mounts), httpGet and tcpSocket against 127.0.0.1 (a pod's network
is this machine's), run until it passes as the kubelet does (initialDelaySeconds,
periodSeconds, timeoutSeconds). The pod's lifecycle is kubelet_process's."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import kubelet_mounts as mounts
from .kubelet_volumes import ProcessSpec

JSON = dict[str, Any]


def start_process(
    container_root: str, spec: ProcessSpec, log_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """The container's command, through the mount wrapper, in a session of its own, its output
    appended to ``log_path``; with the read end of its status pipe (EOF at the command's exec,
    an error message if it could not be started). OSError when not even the wrapper starts."""
    status_r, status_w = os.pipe()
    try:
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    mounts.SCRIPT,
                    mounts.plan(container_root, spec.mounts, spec.cwd, status_w),
                    *spec.argv,
                ],
                env=spec.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(status_w,),
            )
    except OSError:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    return proc, status_r


def wait_process(
    proc: subprocess.Popen[bytes], status_fd: int, execd: threading.Event
) -> tuple[int, str]:
    """Set ``execd`` once the command is exec'd (or could not be), then wait for its exit:
    (its wait status, the wrapper's error message or "")."""
    with os.fdopen(status_fd, "rb") as status:  # EOF at the container command's exec
        error = status.read().decode("utf-8", "replace")
    execd.set()
    return proc.wait(), error


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group of ``pid`` (the container and what it spawned), if any."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def probe_loop(
    probe: JSON,
    execd: threading.Event,
    stop: threading.Event,
    current: Callable[[], bool],
    check: Callable[[], bool],
    report: Callable[[bool, int], None],
) -> None:
    """Once the container's command runs (``execd``), ``check()`` every periodSeconds and
    ``report(ok, failureThreshold)`` each answer until one passes, ``stop`` is set or the
    container is no longer the ``current()`` one."""
    period = max(1, int(probe.get("periodSeconds", 10)))
    while not execd.wait(0.1):  # probes run in the container's mounts: once it has them
        if stop.is_set() or not current():
            return
    if stop.wait(float(probe.get("initialDelaySeconds", 0))):
        return
    while current() and not stop.is_set():
        ok = check()
        report(ok, int(probe.get("failureThreshold", 3)))
        if ok or stop.wait(period):
            return


def probe_once(
    probe: JSON, container: JSON, pid: int | None, env: Mapping[str, str], python: str
) -> bool:
    """One try of ``probe`` for ``container`` (its process ``pid``, None when it has none)."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "exec" in probe:
            argv = list(probe["exec"].get("command") or [])
            if not argv or pid is None:
                return False
            if os.path.basename(argv[0]) in ("python", "python3"):
                argv[0] = python
            proc = subprocess.Popen(
                mounts.enter_argv(pid, argv),  # in the container's mounts
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                return proc.wait(timeout) == 0
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return False
        if "httpGet" in probe:
            http = probe["httpGet"]
            scheme = http.get("scheme", "HTTP").lower()
            port = container_port(container, http["port"])
            url = f"{scheme}://127.0.0.1:{port}{http.get('path', '/')}"
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return bool(200 <= resp.status < 400)
        if "tcpSocket" in probe:
            port = container_port(container, probe["tcpSocket"]["port"])
            with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                return True
    except Exception:
        return False
    return False


def container_port(container: JSON, port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"no port named {port!r}")
