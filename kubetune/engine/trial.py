"""The engine's record of one trial, kept small: no result history, bounded metric statistics."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

PENDING = "PENDING"
RUNNING = "RUNNING"
PAUSED = "PAUSED"
TERMINATED = "TERMINATED"
ERROR = "ERROR"
ACTIVE = (PENDING, RUNNING)
FINISHED = (TERMINATED, ERROR)

LAST_N = 10  # the longest best-trial scope is last-10-avg
# PBT exploits kept per record (for the dashboard's lineage): the first ones, so a record stays
# small however long a trial trains with a short perturbation interval
MAX_EXPLOITS_RECORDED = 64


class MetricStats:
    """Running statistics of one metric over a trial's results: O(1) memory."""

    __slots__ = ("count", "last", "max", "min", "recent", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = -math.inf
        self.min = math.inf
        self.last = math.nan
        self.recent: deque[float] = deque(maxlen=LAST_N)

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value
        if value < self.min:
            self.min = value
        self.last = value
        self.recent.append(value)

    def value(self, scope: str, mode: str) -> float:
        if self.count == 0:
            return math.nan
        if scope == "last":
            return self.last
        if scope == "all":
            return self.max if mode == "max" else self.min
        if scope == "avg":
            return self.total / self.count
        n = 5 if scope == "last-5-avg" else LAST_N
        window = list(self.recent)[-n:]
        return sum(window) / len(window)

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "total": self.total,
            "max": self.max,
            "min": self.min,
            "last": self.last,
            "recent": list(self.recent),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricStats:
        s = cls()
        s.count = d["count"]
        s.total = d["total"]
        s.max = d["max"]
        s.min = d["min"]
        s.last = d["last"]
        s.recent.extend(d["recent"])
        return s


class TrialRecord:
    __slots__ = (
        "checkpoints",
        "config",
        "created_at",
        "decision_points",
        "dirname",
        "ended_at",
        "error",
        "exploits",
        "index",
        "last_disruption",
        "last_result",
        "latest_checkpoint",
        "name",
        "num_failures",
        "num_preemptions",
        "num_results",
        "pending_restore",
        "resources",
        "seq",
        "stats",
        "status",
        "stop_reason",
        "tag",
        "trial_id",
    )

    def __init__(
        self,
        trial_id: str,
        index: int,
        name: str,
        tag: str,
        config: dict[str, Any],
        resources: dict[str, Any],
    ) -> None:
        self.trial_id = trial_id
        self.index = index
        self.name = name
        self.tag = tag
        self.config = config
        self.resources = resources
        self.status = PENDING
        self.num_failures = 0
        self.num_preemptions = 0  # attempts the cluster ended (not counted as failures)
        self.last_disruption: str | None = None
        self.error: str | None = None
        self.stop_reason: str | None = None
        self.last_result: dict[str, Any] | None = None
        self.num_results = 0
        self.stats: MetricStats | None = None
        # checkpoints still on storage: [sort key (is-number, score), seq, name], worst first
        self.checkpoints: list[list[Any]] = []
        self.latest_checkpoint: str | None = None
        self.seq = 0
        # where the next (re)start restores from when not this trial's own latest checkpoint
        self.pending_restore: dict[str, str] | None = None
        self.decision_points: dict[str, Any] | None = None
        self.created_at: float | None = None
        self.ended_at: float | None = None
        self.dirname: str | None = None  # its directory, when not its name
        # PBT exploits of this trial, in order: {donor, checkpoint, iteration, result}
        self.exploits: list[dict[str, Any]] = []

    def to_dict(self) -> dict[str, Any]:
        out = {s: getattr(self, s) for s in self.__slots__}
        out["stats"] = self.stats.to_dict() if self.stats is not None else None
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialRecord:
        rec = cls(d["trial_id"], d["index"], d["name"], d["tag"], d["config"], d["resources"])
        for s in cls.__slots__:
            if s in d and s != "stats":
                setattr(rec, s, d[s])
        rec.stats = MetricStats.from_dict(d["stats"]) if d.get("stats") else None
        return rec
