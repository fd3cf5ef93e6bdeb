"""How a trial ends: ``TrialExit``, the runner's signal handlers, error.txt and the done marker.

See ``kubetune.trial.stopping`` for what SIGTERM means to a trial.
"""

from __future__ import annotations

import json
import os
import sys
from types import FrameType

from kubetune.trial import exit_codes
from kubetune.trial.gate import Gate
from kubetune.trial.output import OutputWriter
from kubetune.trial.spec import TrialSpec
from kubetune.trial.stopping import STOP_NOW_SIGNAL, StopWindow
from kubetune.tune._autofill import AutoFiller


class TrialExit(BaseException):
    """Unwinds user code when the trial must end (stop, pause, SIGTERM).

    A BaseException so that a user's ``except Exception`` does not swallow it.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class RunnerEnding:
    """The trial runner's signal handlers and its last writes."""

    # the runner's state (TrialRunner.__init__ sets it up)
    spec: TrialSpec
    writer: OutputWriter
    gate: Gate | None
    filler: AutoFiller
    stop_reason: str
    last_checkpoint: str | None
    stopping: bool
    _in_write: bool
    _term_pending: bool
    _stop_now: bool
    _at_gate: bool
    _window: StopWindow | None
    _window_s: float

    # -- signals and the end ----------------------------------------------------------------
    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM (a preemption, an eviction, a stop): see ``kubetune.trial.stopping``."""
        first = not self.stopping
        self.stopping = True
        if self._in_write:
            self._term_pending = True  # finish the write, then exit
            return
        if first and not self._at_gate and self._window_s > 0:
            # go on to the next checkpoint; the window's deadline signals again
            self._term_pending = True
            self._window = StopWindow(self._window_s)
            self._window.open()
            return
        raise TrialExit(exit_codes.TERMINATED, "SIGTERM")

    def _on_stop_now(self, signum: int, frame: FrameType | None) -> None:
        """Local mode's own stop (the engine's verdict, the driver's end): at once."""
        self.stopping = self._stop_now = True
        if self._in_write:
            self._term_pending = True
            return
        raise TrialExit(exit_codes.TERMINATED, "stopped by the driver")

    def _saves_on_stop(self) -> bool:
        """A stop is under way that should leave a checkpoint behind (SIGTERM, with time)."""
        return self.stopping and not self._stop_now and self._window_s > 0

    def _record_error(self, text: str) -> None:
        """error.txt; on a full disk the driver still gets the error, through the gate pipe."""
        try:
            self.writer.write_error(text)
            return
        except OSError as exc:
            text = f"{text}\n(error.txt could not be written: {exc})\n"
        notify = getattr(self.gate, "notify", None)
        if notify is not None:
            notify({"event": "error", "text": text})
        try:
            sys.stderr.write(text)
        except OSError:
            pass

    def _finish(self, code: int) -> None:
        self.writer.close()
        try:
            self._write_done_marker(code)
        except OSError as exc:  # a full disk: the exit code still says how the trial ended
            notify = getattr(self.gate, "notify", None)
            if notify is not None and code != exit_codes.ERRORED:
                notify({"event": "error", "text": f"cannot write the done marker: {exc}"})
            try:
                sys.stderr.write(f"kubetune.trial: cannot write the done marker: {exc}\n")
            except OSError:
                pass

    def _write_done_marker(self, code: int) -> None:
        if self.spec.done_marker:
            status = {
                "exit_code": code,
                "status": exit_codes.NAMES.get(code, "unknown"),
                "reason": self.stop_reason,
                "training_iteration": self.filler.iteration,
                "last_checkpoint": self.last_checkpoint,
            }
            tmp = f"{self.spec.done_marker}.tmp"
            with open(tmp, "w") as f:
                json.dump(status, f)
            os.replace(tmp, self.spec.done_marker)


PARENT_ENV = "KUBETUNE_PARENT_PID"


def _die_with_parent() -> None:
    """In local mode a trial must not outlive its driver (kill -9 of the driver included):
    ask Linux to signal it when the parent dies, and exit if it is already gone."""
    expected = os.environ.get(PARENT_ENV)
    if not expected or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        pr_set_pdeathsig = 1
        # the stop-now signal: no time is spent reaching a checkpoint for a driver that is gone
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, STOP_NOW_SIGNAL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(expected):
        raise TrialExit(exit_codes.TERMINATED, "the driver exited before the trial started")
