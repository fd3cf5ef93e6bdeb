"""One trial subprocess in local mode: start it, follow its results, answer its gate, end it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import IO, Any

from kubetune.local.console import OutputEcho, echo_enabled
from kubetune.local.forkserver import ForkServer
from kubetune.trial import exit_codes
from kubetune.trial.lines import trim_torn_tail
from kubetune.trial.output import RESULT_FILE
from kubetune.trial.spec import TrialSpec
from kubetune.trial.stopping import STOP_NOW_SIGNAL


class ResultTail:
    """Reads the complete lines appended to a result.json since the last call."""

    def __init__(self, path: str, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self._f: IO[bytes] | None = None
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        if self._f is None:
            try:
                self._f = open(self.path, "rb")  # noqa: SIM115 - held while the trial runs
            except FileNotFoundError:
                return []
            self._f.seek(self.offset)
        chunk = self._f.read()
        if not chunk:
            return []
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict):
                out.append(row)
            else:  # not written by the runner (whole lines only): name it, skip it
                print(
                    f"kubetune: {self.path}: skipped a line that is not a JSON result",
                    file=sys.stderr,
                )
        return out

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class ForkedProcess:
    """A trial forked by the fork server, with the part of Popen's interface we use."""

    def __init__(self, pid: int, server: ForkServer) -> None:
        self.pid = pid
        self._server = server

    def poll(self) -> int | None:
        code = self._server.exit_codes.get(self.pid)
        if code is None:
            self._server.drain()
            code = self._server.exit_codes.get(self.pid)
        return code

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                return code
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"trial {self.pid}", timeout or 0)
            time.sleep(0.005)


class TrialProcess:
    """``python -m kubetune.trial`` for one trial attempt, with a verdict pipe."""

    def __init__(
        self,
        spec: TrialSpec,
        spec_path: str,
        env: dict[str, str] | None = None,
        log_path: str | None = None,
        forkserver: ForkServer | None = None,
    ) -> None:
        self.spec = spec
        to_trial_r, to_trial_w = os.pipe()
        from_trial_r, from_trial_w = os.pipe()
        spec.gate = {"kind": "pipe", "write_fd": from_trial_w, "read_fd": to_trial_r}
        spec.done_marker = os.path.join(spec.out_dir, ".done.json")
        os.makedirs(spec.out_dir, exist_ok=True)
        try:
            os.unlink(spec.done_marker)
        except FileNotFoundError:
            pass
        spec.dump(spec_path)
        result_path = os.path.join(spec.out_dir, RESULT_FILE)
        # a retry appends to the same result.json: follow only what this attempt writes, after
        # cutting off a half line an earlier attempt left (the runner would cut it, too late
        # for this offset)
        trim_torn_tail(result_path)
        offset = os.path.getsize(result_path) if os.path.exists(result_path) else 0
        self.tail = ResultTail(result_path, offset)
        log_offset = os.path.getsize(log_path) if log_path and os.path.exists(log_path) else 0
        self._log: IO[bytes] | None = open(log_path or os.devnull, "ab")  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | ForkedProcess
        if forkserver is not None:
            pid = forkserver.spawn(
                spec_path, dict(env or {}), [from_trial_w, to_trial_r, self._log.fileno()]
            )
            self.proc = ForkedProcess(pid, forkserver)
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kubetune.trial", spec_path],
                env={**os.environ, **(env or {}), "KUBETUNE_PARENT_PID": str(os.getpid())},
                pass_fds=(from_trial_w, to_trial_r),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the driver reaches the driver only
            )
        os.close(from_trial_w)
        os.close(to_trial_r)
        self.echo: OutputEcho | None = None
        if log_path and echo_enabled():
            self.echo = OutputEcho(log_path, log_offset, _prefix(spec, self.proc.pid))
        self.exit_fd: int | None = None
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                self.exit_fd = pidfd_open(self.proc.pid)
            except OSError:
                self.exit_fd = None
        self._gate_in = from_trial_r
        os.set_blocking(self._gate_in, False)
        self._gate_out = to_trial_w
        self._gate_buf = b""
        self.started = time.monotonic()
        self.kill_requested: str | None = None
        self._term_sent_at: float | None = None
        self.error_text: str | None = None  # the runner's error, when it could not write it

    def retarget(self, spec: TrialSpec) -> dict[str, Any]:
        """The process takes over another trial (reuse_actors): follow that trial's output.
        Returns the spec as the process must receive it."""
        spec.done_marker = os.path.join(spec.out_dir, ".done.json")
        spec.gate = None  # the process keeps its pipe
        os.makedirs(spec.out_dir, exist_ok=True)
        try:
            os.unlink(spec.done_marker)
        except FileNotFoundError:
            pass
        self.tail.close()
        result_path = os.path.join(spec.out_dir, RESULT_FILE)
        trim_torn_tail(result_path)
        offset = os.path.getsize(result_path) if os.path.exists(result_path) else 0
        self.tail = ResultTail(result_path, offset)
        self.spec = spec
        self.kill_requested = None
        if self.echo is not None:
            self.echo.pump()
            self.echo.prefix = _prefix(spec, self.proc.pid)
        return spec.to_dict()

    def reply(self, seq: int, message: dict[str, Any]) -> None:
        try:
            os.write(self._gate_out, (json.dumps({"seq": seq, **message}) + "\n").encode())
        except OSError:
            pass

    @property
    def gate_fd(self) -> int:
        return self._gate_in

    def read_gate(self) -> list[dict[str, Any]]:
        """Decision requests the trial has sent (non-blocking)."""
        try:
            chunk = os.read(self._gate_in, 65536)
        except BlockingIOError:
            return []
        except OSError:
            return []
        if not chunk:
            return []
        data = self._gate_buf + chunk
        lines = data.split(b"\n")
        self._gate_buf = lines.pop()
        requests = []
        for line in lines:
            if not line.strip():
                continue
            message = json.loads(line)
            if message.get("event") == "error":  # not a request: nothing to answer
                self.error_text = str(message.get("text") or "")
            else:
                requests.append(message)
        return requests

    def answer(self, seq: int, action: str, reason: str = "") -> None:
        message = json.dumps({"seq": seq, "action": action, "reason": reason}) + "\n"
        try:
            os.write(self._gate_out, message.encode())
        except (BrokenPipeError, OSError):
            pass  # the trial already exited; its exit status tells the rest

    def poll(self) -> int | None:
        return self.proc.poll()

    def terminate(self, reason: str) -> None:
        """Ask the trial to end now (the stop-now signal: it finishes the write in progress
        but, unlike on SIGTERM, does not go on to a checkpoint; see kubetune.trial.stopping)."""
        if self.kill_requested is None:
            self.kill_requested = reason
        if self.proc.poll() is None and self._term_sent_at is None:
            self._term_sent_at = time.monotonic()
            try:
                os.killpg(self.proc.pid, STOP_NOW_SIGNAL)
            except ProcessLookupError:
                pass

    def kill_if_overdue(self, grace_s: float) -> None:
        if (
            self._term_sent_at is not None
            and self.proc.poll() is None
            and time.monotonic() - self._term_sent_at > grace_s
        ):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill_group(self) -> None:
        """SIGKILL the trial's process group: what the trial started and left behind."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass  # nothing left in it

    def status(self, spec: TrialSpec | None = None) -> dict[str, Any]:
        """The runner's done marker, or what the exit code alone says (e.g. after SIGKILL)."""
        code = self.proc.poll()
        spec = spec or self.spec
        assert spec.done_marker is not None
        self.read_gate()  # an error event sent just before the exit
        try:
            with open(spec.done_marker, encoding="utf-8") as f:
                marker = json.load(f)
            if isinstance(marker, dict):
                if self.error_text:
                    marker.setdefault("error", self.error_text)
                return marker
        except (OSError, ValueError):
            pass
        name = exit_codes.NAMES.get(code or 0, "errored")
        reason = f"exit code {code}"
        if code is not None and code < 0:
            name = "killed"
            reason = f"killed by signal {-code}"
        elif code == exit_codes.FINISHED:
            # the runner writes its marker before every exit it makes: an exit 0 without it
            # is user code ending the process (os._exit(0)) mid-run, not a finished trial
            name = "errored"
            reason = (
                "the trial process exited with code 0 before the trainable returned (os._exit"
                " in user code?); the runner wrote no done marker"
            )
        status: dict[str, Any] = {"exit_code": code, "status": name, "reason": reason}
        if self.error_text:
            status["error"] = self.error_text
        return status

    def close(self) -> None:
        if self.echo is not None:
            self.echo.close()
        self.tail.close()
        if self.exit_fd is not None:
            os.close(self.exit_fd)
            self.exit_fd = None
        for fd in (self._gate_in, self._gate_out):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._log is not None:
            self._log.close()


def _prefix(spec: TrialSpec, pid: int) -> str:
    return f"({spec.trial_name or spec.trial_id} pid={pid}) "
