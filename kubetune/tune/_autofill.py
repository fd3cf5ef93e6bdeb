"""The fields that every result gets, with Ray's names, computed once per report.

Shared by the Function API session and ``Trainable.train`` so both count iterations and time
the same way, and restore the same counters from a checkpoint.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime
from typing import Any

from kubetune.tune.result import DATE_FORMAT


def _node_ip() -> str:
    # In a pod the builder passes the pod IP through the downward API; elsewhere the
    # hostname's address is good enough (no network traffic either way).
    ip = os.environ.get("KUBETUNE_POD_IP")
    if ip:
        return ip
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class AutoFiller:
    """Iteration and time counters of one trial, and the host facts put into each result."""

    def __init__(self, trial_id: str | None, config: dict[str, Any]) -> None:
        self.trial_id = trial_id
        self.config = config
        self.iteration = 0
        self.time_total = 0.0
        self.iterations_since_restore = 0
        self.time_since_restore = 0.0
        self.pid = os.getpid()
        self.hostname = socket.gethostname()
        self.node_ip = _node_ip()
        self._last = time.time()
        self._date_second = -1
        self._date = ""

    def mark_start(self) -> None:
        """Start timing the next iteration now (after setup or restore)."""
        self._last = time.time()

    def restore_counters(self, iteration: int, time_total: float) -> None:
        self.iteration = iteration
        self.time_total = time_total
        self.iterations_since_restore = 0
        self.time_since_restore = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {"training_iteration": self.iteration, "time_total_s": self.time_total}

    def fill(
        self, metrics: dict[str, Any], time_this_iter: float | None = None, *, commit: bool = True
    ) -> dict[str, Any]:
        """Return ``metrics`` plus the auto-filled fields; advance counters if ``commit``.

        ``time_this_iter_s`` is the user's value if they reported one, else ``time_this_iter``
        if given, else the time since the previous result.
        """
        now = time.time()
        user_time = metrics.get("time_this_iter_s")
        if user_time is not None:
            time_this_iter = float(user_time)
        elif time_this_iter is None:
            time_this_iter = now - self._last
        iteration = self.iteration + 1
        time_total = self.time_total + time_this_iter
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            self._date = datetime.fromtimestamp(now).strftime(DATE_FORMAT)
        result = dict(metrics)
        result["time_this_iter_s"] = time_this_iter
        result.setdefault("done", False)
        result["training_iteration"] = iteration
        result["trial_id"] = self.trial_id
        result["date"] = self._date
        result["timestamp"] = second
        result["time_total_s"] = time_total
        result["pid"] = self.pid
        result["hostname"] = self.hostname
        result["node_ip"] = self.node_ip
        result["config"] = self.config
        result["time_since_restore"] = self.time_since_restore + time_this_iter
        result["iterations_since_restore"] = self.iterations_since_restore + 1
        if commit:
            self.commit(result, now)
        return result

    def commit(self, result: dict[str, Any], now: float | None = None) -> None:
        self.iteration = result["training_iteration"]
        self.time_total = result["time_total_s"]
        self.time_since_restore = result["time_since_restore"]
        self.iterations_since_restore = result["iterations_since_restore"]
        self._last = time.time() if now is None else now
