"""Decision points: where a trial waits for the scheduler's verdict (DESIGN.md §3.4).

Its own small module so that the trial runner can use it without importing the schedulers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DecisionPoints:
    """Where a trial must wait for the scheduler's verdict, in units of ``time_attr``.

    A result with ``t = result[time_attr]`` (and ``prev`` the previous result's ``t``) is a
    decision point when ``t >= start`` and any of:

    * ``every_result`` is true;
    * it is the first result to reach a milestone: ``prev < m <= t`` for some ``m`` in
      ``milestones``;
    * ``interval`` is set and ``t - last >= interval``, where ``last`` is the ``t`` of the
      previous decision point (initially ``anchor``).

    A runner that waits at more points than needed only costs time; the engine answers every
    result anyway.
    """

    time_attr: str = "training_iteration"
    milestones: tuple[float, ...] = ()
    interval: float | None = None
    anchor: float = 0.0
    start: float = 0.0
    every_result: bool = False

    def is_due(self, t: float, prev: float | None = None, last: float | None = None) -> bool:
        if t < self.start:
            return False
        if self.every_result:
            return True
        lo = -math.inf if prev is None else prev
        if any(lo < m <= t for m in self.milestones):
            return True
        if self.interval is not None:
            base = self.anchor if last is None else last
            if t - base >= self.interval:
                return True
        return False

    def is_empty(self) -> bool:
        return not self.every_result and not self.milestones and self.interval is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_attr": self.time_attr,
            "milestones": list(self.milestones),
            "interval": self.interval,
            "anchor": self.anchor,
            "start": self.start,
            "every_result": self.every_result,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecisionPoints:
        return cls(
            time_attr=d.get("time_attr", "training_iteration"),
            milestones=tuple(d.get("milestones", ())),
            interval=d.get("interval"),
            anchor=d.get("anchor", 0.0),
            start=d.get("start", 0.0),
            every_result=bool(d.get("every_result", False)),
        )
