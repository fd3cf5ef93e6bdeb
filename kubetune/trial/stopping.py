"""What a trial does when it is asked to stop (SIGTERM): reach a checkpoint if time allows.

Kubernetes ends a preempted or evicted pod with SIGTERM and kills it
``terminationGracePeriodSeconds`` later; the runner knows that period (the trial spec's
``termination_grace_s``). On SIGTERM it opens a *stopping window*: the grace period less what
the sidecar needs for its final upload (half the period, at most ``UPLOAD_RESERVE_MAX_S``).

- A Class-API trial finishes the ``step()`` in progress, saves a checkpoint with that result
  and exits; one waiting for a decision saves a checkpoint and exits at once.
- A Function-API trial keeps running until its next ``session.report(...)``, which is written
  (with its checkpoint, if it passes one) before the runner exits; the function can ask
  ``session.is_stopping()`` (also ``tune.is_stopping()``) to decide to pass one.
- When the window closes first, the runner unwinds the trainable as it did before (the write
  in progress, if any, is finished first); a second SIGTERM does the same at once.
- Without a known grace period, or with one too short, SIGTERM ends the trial at once.

The backend then retries the trial from that checkpoint: in a pod the operator sees the
pod's DisruptionTarget condition and does not count a failure; in local mode a trial process
that someone else sent SIGTERM is retried the same way. Local mode's own stops use
``STOP_NOW_SIGNAL`` instead, which ends the trial at once, as before.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

UPLOAD_RESERVE_MAX_S = 10.0
MIN_WINDOW_S = 0.5
STOP_NOW_SIGNAL = signal.SIGUSR2  # local mode's "end now" (stop, pause, driver gone)


def stop_window_s(grace_s: float | None) -> float:
    """Seconds after SIGTERM that the trial may use to reach a checkpoint (0: none)."""
    if not grace_s or grace_s <= 0:
        return 0.0
    window = grace_s - min(grace_s / 2, UPLOAD_RESERVE_MAX_S)
    return window if window >= MIN_WINDOW_S else 0.0


class StopWindow:
    """The window's deadline: when it passes, SIGTERM is sent to the main thread again, and
    the runner's handler (which sees a stop already pending) unwinds the trainable."""

    def __init__(self, seconds: float, on_deadline: Callable[[], None] | None = None) -> None:
        self.seconds = seconds
        self._timer: threading.Timer | None = None
        self._main = threading.main_thread().ident
        self._on_deadline = on_deadline or self._resignal

    def open(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.seconds, self._on_deadline)
            self._timer.daemon = True
            self._timer.start()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _resignal(self) -> None:
        if self._main is not None:
            try:
                signal.pthread_kill(self._main, signal.SIGTERM)
            except (ProcessLookupError, OSError):
                pass
