"""Decision points: where a trial waits for the scheduler's verdict (DESIGN.md §3.4).

At a decision point the runner has already appended the result to result.json; it then asks
the gate and blocks until a verdict comes back:

    request  {"seq": N, "trial_id": ..., "training_iteration": I, "time_attr": ..., "value": V}
    verdict  {"seq": N, "action": "continue" | "stop" | "pause" | "restart", "reason": ...}

With ``reuse_actors`` a finished Class-API trial also asks ``{"seq": N, "event": "next"}`` and
gets ``{"action": "next", "spec": {...}}`` (run that trial in this process) or ``"exit"``.

Two transports carry it: a pipe (local mode: the driver holds the other ends) and files in a
directory (in a pod: the sidecar relays the request to the operator and writes the verdict).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Protocol

ACTIONS = ("continue", "stop", "pause", "restart", "next", "exit")


class GateError(RuntimeError):
    """The verdict channel broke or sent something unusable."""


class Gate(Protocol):
    def ask(self, request: dict[str, Any]) -> dict[str, Any]: ...
    def close(self) -> None: ...


def _check_verdict(verdict: Any, seq: int) -> dict[str, Any]:
    if not isinstance(verdict, dict) or verdict.get("action") not in ACTIONS:
        raise GateError(f"bad verdict for decision {seq}: {verdict!r}")
    if verdict.get("seq") != seq:
        raise GateError(f"verdict for decision {verdict.get('seq')} while waiting for {seq}")
    return verdict


class PipeGate:
    """JSON lines over two file descriptors inherited from the driver."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self._w = os.fdopen(write_fd, "w", buffering=1, encoding="utf-8")
        self._r = os.fdopen(read_fd, "r", encoding="utf-8")

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self._w.write(json.dumps(request) + "\n")
        self._w.flush()
        line = self._r.readline()
        if not line:
            raise GateError("the driver closed the verdict pipe")
        return _check_verdict(json.loads(line), request["seq"])

    def notify(self, message: dict[str, Any]) -> None:
        """A message that needs no answer (the trial's error when the disk took none)."""
        try:
            self._w.write(json.dumps(message) + "\n")
            self._w.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        for f in (self._w, self._r):
            try:
                f.close()
            except OSError:
                pass


class FileGate:
    """``request.json`` and ``verdict-N.json`` in a directory shared with the sidecar."""

    REQUEST = "request.json"

    def __init__(self, directory: str, poll_max_s: float = 0.02) -> None:
        self.dir = directory
        self.poll_max_s = poll_max_s
        os.makedirs(directory, exist_ok=True)

    def verdict_path(self, seq: int) -> str:
        return os.path.join(self.dir, f"verdict-{seq}.json")

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        seq = request["seq"]
        tmp = os.path.join(self.dir, f".{self.REQUEST}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(request, f)
        os.replace(tmp, os.path.join(self.dir, self.REQUEST))
        path = self.verdict_path(seq)
        delay = 0.001
        while True:
            try:
                with open(path, encoding="utf-8") as f:
                    verdict = json.load(f)
            except FileNotFoundError:
                time.sleep(delay)
                delay = min(delay * 2, self.poll_max_s)
                continue
            except json.JSONDecodeError:  # the writer must rename into place; be lenient
                time.sleep(delay)
                continue
            os.unlink(path)
            return _check_verdict(verdict, seq)

    def close(self) -> None:
        pass


def open_gate(spec: dict[str, Any] | None) -> Gate | None:
    if spec is None:
        return None
    if spec["kind"] == "pipe":
        return PipeGate(int(spec["write_fd"]), int(spec["read_fd"]))
    return FileGate(str(spec["dir"]))


class DecisionTracker:
    """Follows a trial's results and says which ones are decision points.

    ``points`` is the engine's ``DecisionPoints.to_dict()`` (milestones, an interval, or every
    result), a plain list of milestones, or ``"every"``.
    """

    def __init__(self, points: dict[str, Any] | list[float] | str | None) -> None:
        from kubetune._decision import DecisionPoints

        if points is None:
            self.points = DecisionPoints()
        elif points == "every":
            self.points = DecisionPoints(every_result=True)
        elif isinstance(points, list):
            self.points = DecisionPoints(milestones=tuple(points))
        elif isinstance(points, dict):
            self.points = DecisionPoints.from_dict(points)
        else:
            raise ValueError(f"decision points must be a dict, a list or 'every': {points!r}")
        self.time_attr = self.points.time_attr
        # interval-based points are PBT's perturbations: the Class-API runner checkpoints there
        self.wants_checkpoints = self.points.interval is not None
        self._prev: float | None = None
        self._last: float | None = None

    def due(self, result: dict[str, Any]) -> bool:
        """True when this result is a decision point (call once per result, in order)."""
        value = result.get(self.time_attr)
        if self.points.is_empty() or not isinstance(value, (int, float)):
            return False
        due = self.points.is_due(value, self._prev, self._last)
        self._prev = value
        if due:
            self._last = value
        return due
