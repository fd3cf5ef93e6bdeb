"""What the user sees while an experiment runs: a live table (rich) or plain status lines.

:class:`Progress` shows a *snapshot* (counts, best trial, the newest trials' rows). Local mode
takes it from its engine (:func:`snapshot`); cluster mode from the experiment's state in
storage (:func:`snapshot_of_summaries`), so both show the same table."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubetune.local.backend import LocalBackend

STATES = ("PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR")


def snapshot(backend: LocalBackend, metric: str | None, mode: str | None) -> dict[str, Any]:
    engine = backend.engine
    best = None
    if metric and mode:
        try:
            best_id = engine.best_trial(metric, mode)
        except ValueError:
            best_id = None
        if best_id is not None:
            summary = engine.trial_summary(best_id)
            value = (summary.get("last_result") or {}).get(metric)
            best = {"trial": summary["trial_name"], "value": value, "config": summary["config"]}
    rows = []
    for trial_id in engine.trial_ids()[-12:]:
        summary = engine.trial_summary(trial_id)
        last = summary.get("last_result") or {}
        rows.append(
            {
                "trial": summary["trial_name"],
                "status": summary["status"],
                "iter": last.get("training_iteration", ""),
                "metric": last.get(metric) if metric else "",
                "config": summary["config"],
            }
        )
    return {"counts": engine.counts(), "best": best, "rows": rows, "results": backend.results_seen}


def snapshot_of_summaries(
    summaries: list[dict[str, Any]], metric: str | None, mode: str | None
) -> dict[str, Any]:
    """The snapshot of trial summaries as stored (``trial_name``, ``status``, ``config``,
    ``last_result``, ``num_results``): the best trial by its last ``metric``, as the engine's
    ``best_trial(scope="last")`` picks it."""
    import math

    counts = {s: 0 for s in STATES}
    best: dict[str, Any] | None = None
    sign = 1.0 if mode == "max" else -1.0
    for summary in summaries:
        status = summary.get("status") or "PENDING"
        counts[status] = counts.get(status, 0) + 1
        value = (summary.get("last_result") or {}).get(metric) if metric and mode else None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if math.isfinite(value) and (best is None or sign * value > sign * best["value"]):
            best = {
                "trial": summary["trial_name"],
                "value": value,
                "config": summary.get("config") or {},
            }
    rows = []
    for summary in summaries[-12:]:
        last = summary.get("last_result") or {}
        rows.append(
            {
                "trial": summary["trial_name"],
                "status": summary.get("status") or "PENDING",
                "iter": last.get("training_iteration", ""),
                "metric": last.get(metric) if metric else "",
                "config": summary.get("config") or {},
            }
        )
    results = sum(int(s.get("num_results") or 0) for s in summaries)
    return {"counts": counts, "best": best, "rows": rows, "results": results}


class Progress:
    """Shows progress at most a few times a second; ``verbose=0`` shows nothing."""

    def __init__(
        self,
        verbose: int,
        metric: str | None,
        mode: str | None,
        expected: int | None,
        name: str,
    ) -> None:
        self.verbose = verbose
        self.metric = metric
        self.mode = mode
        self.expected = expected
        self.name = name
        self.started = time.monotonic()
        self._last_plain = 0.0
        self._live: Any = None
        self._last: dict[str, Any] | None = None
        if verbose and sys.stdout.isatty():
            try:
                from rich.live import Live
            except ImportError:
                pass
            else:
                self._live = Live(refresh_per_second=4, transient=False)
                self._live.start()

    def update(self, backend: LocalBackend) -> None:
        if self.verbose:
            self.show(snapshot(backend, self.metric, self.mode))

    def show(self, snap: dict[str, Any]) -> None:
        if not self.verbose:
            return
        self._last = snap
        if self._live is not None:
            self._live.update(self._render(snap))
            return
        now = time.monotonic()
        if now - self._last_plain >= 5.0:
            self._last_plain = now
            print(self._line(snap), flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        elif self.verbose and self._last is not None:
            try:
                from rich.console import Console
            except ImportError:
                print(self._line(self._last), flush=True)
            else:
                Console().print(self._render(self._last))

    def _line(self, snap: dict[str, Any]) -> str:
        counts = " ".join(f"{k.lower()}={v}" for k, v in snap["counts"].items() if v)
        elapsed = time.monotonic() - self.started
        best = snap["best"]
        best_text = f" best {self.metric}={best['value']:.4g} ({best['trial']})" if best else ""
        return f"[{self.name} {elapsed:.0f}s] trials: {counts}{best_text}"

    def _render(self, snap: dict[str, Any]) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        counts = snap["counts"]
        done = counts["TERMINATED"] + counts["ERROR"]
        total = self.expected or max(1, sum(counts.values()))
        keys: list[str] = []
        for row in snap["rows"]:
            for key in row["config"]:
                if key not in keys and len(keys) < 4:
                    keys.append(key)
        table = Table(title=f"{self.name}: {done}/{total} trials done", expand=False)
        table.add_column("trial")
        table.add_column("status")
        for key in keys:
            table.add_column(key, justify="right")
        table.add_column("iter", justify="right")
        if self.metric:
            table.add_column(self.metric, justify="right")
        for row in snap["rows"]:
            values = [_fmt(row["config"].get(k)) for k in keys]
            cells = [row["trial"], row["status"], *values, str(row["iter"])]
            if self.metric:
                cells.append(_fmt(row["metric"]))
            table.add_row(*cells)
        summary = " ".join(f"{k}: {v}" for k, v in counts.items())
        best = snap["best"]
        best_text = (
            f"best {self.metric} = {_fmt(best['value'])} ({best['trial']}, config {best['config']})"
            if best
            else "best: none yet"
        )
        bar = ProgressBar(total=total, completed=done, width=40)
        return Group(table, Text(summary), Text(best_text), bar, Text(""))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
