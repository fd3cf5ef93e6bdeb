"""The live view of a cluster experiment, from its TuneExperiment status: a line per change
(phase, trial counts, best trial so far), as local mode's table summarises a run."""

from __future__ import annotations

import sys
import time
from typing import Any


class StatusTable:
    def __init__(self, verbose: int, name: str) -> None:
        self.verbose = verbose
        self.name = name
        self.started = time.monotonic()
        self._last = ""

    def update(self, status: dict[str, Any]) -> None:
        if not self.verbose:
            return
        trials = status.get("trials") or {}
        counts = ", ".join(
            f"{trials[k]} {k}"
            for k in ("pending", "running", "paused", "terminated", "error")
            if trials.get(k)
        )
        line = f"{status.get('phase') or 'Pending'}: {counts or 'no trials yet'}"
        best = status.get("bestTrial") or {}
        if best.get("metric") is not None:
            line += f" | best {best.get('metric')!r} config={best.get('config')}"
        if line != self._last:
            self._last = line
            elapsed = time.monotonic() - self.started
            print(f"[{elapsed:6.1f} s] {self.name} {line}", file=sys.stdout, flush=True)

    def close(self) -> None:
        pass
