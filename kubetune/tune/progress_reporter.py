"""``CLIReporter`` / ``JupyterNotebookReporter``: Ray's text progress tables.

Given as ``RunConfig(progress_reporter=...)`` (or ``tune.run(progress_reporter=...)``), a
reporter replaces kubetune's live table: every ``max_report_frequency`` seconds, and once at
the end, it prints the trials with the chosen parameter and metric columns (all reported
metrics, up to ``infer_limit``, when none are chosen). It runs in the driver process, driven by
the same steps as callbacks.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

from kubetune._util import flatten_dict, unflattened_lookup
from kubetune.tune.callback import Callback

AUTO_SKIP = {
    "config",
    "date",
    "done",
    "experiment_tag",
    "hostname",
    "node_ip",
    "pid",
    "timestamp",
    "trial_id",
    "time_this_iter_s",
    "time_since_restore",
    "iterations_since_restore",
    "checkpoint_dir_name",
    "should_checkpoint",
}
DEFAULT_COLUMNS = ("training_iteration", "time_total_s")


def _columns(value: list[str] | Mapping[str, str] | None) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    return {str(k): str(k) for k in value}


def _lookup(data: Mapping[str, Any], key: str) -> Any:
    if key in data:
        return data[key]
    try:
        return unflattened_lookup(key, data)
    except (KeyError, TypeError):
        return None


class ProgressReporter:
    """The interface: ``should_report`` and ``report``."""

    def setup(
        self,
        start_time: float | None = None,
        total_samples: int | None = None,
        metric: str | None = None,
        mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        pass

    def should_report(self, trials: list[Any], done: bool = False) -> bool:
        return True

    def report(self, trials: list[Any], done: bool, *sys_info: str) -> None:
        raise NotImplementedError


class TuneReporterBase(ProgressReporter):
    def __init__(
        self,
        *,
        metric_columns: list[str] | Mapping[str, str] | None = None,
        parameter_columns: list[str] | Mapping[str, str] | None = None,
        total_samples: int | None = None,
        max_progress_rows: int = 20,
        max_error_rows: int = 20,
        max_column_length: int = 20,
        max_report_frequency: int = 5,
        infer_limit: int = 3,
        print_intermediate_tables: bool | None = None,
        metric: str | None = None,
        mode: str | None = None,
        sort_by_metric: bool = False,
    ) -> None:
        self._metric_columns = _columns(metric_columns)
        self._parameter_columns = _columns(parameter_columns)
        self._inferred_metrics = metric_columns is None
        self._total_samples = total_samples
        self._max_progress_rows = max_progress_rows
        self._max_error_rows = max_error_rows
        self._max_column_length = max_column_length
        self._max_report_frequency = max_report_frequency
        self._infer_limit = infer_limit
        self._print_intermediate_tables = print_intermediate_tables
        self._metric = metric
        self._mode = mode
        self._sort_by_metric = sort_by_metric
        self._last_report = 0.0
        self._start_time = time.time()

    def setup(
        self,
        start_time: float | None = None,
        total_samples: int | None = None,
        metric: str | None = None,
        mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._start_time = start_time or time.time()
        if total_samples is not None and self._total_samples is None:
            self._total_samples = total_samples
        self.set_search_properties(metric, mode)

    def set_search_properties(self, metric: str | None, mode: str | None) -> bool:
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def set_total_samples(self, total_samples: int) -> None:
        self._total_samples = total_samples

    def add_metric_column(self, metric: str, representation: str | None = None) -> None:
        if metric in self._metric_columns:
            raise ValueError(f"column {metric!r} is already there")
        self._inferred_metrics = False
        self._metric_columns[metric] = representation or metric

    def add_parameter_column(self, parameter: str, representation: str | None = None) -> None:
        if parameter in self._parameter_columns:
            raise ValueError(f"column {parameter!r} is already there")
        self._parameter_columns[parameter] = representation or parameter

    def should_report(self, trials: list[Any], done: bool = False) -> bool:
        now = time.time()
        if done or now - self._last_report >= self._max_report_frequency:
            self._last_report = now
            return True
        return False

    # -- the text ---------------------------------------------------------------------------
    def _metrics(self, trials: list[Any]) -> dict[str, str]:
        if not self._inferred_metrics:
            return self._metric_columns
        found: dict[str, str] = {}
        for trial in trials:
            for key, value in flatten_dict(trial.last_result or {}).items():
                if key.startswith("config/") or key in AUTO_SKIP or key in found:
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    found[key] = key
        user = [k for k in found if k not in DEFAULT_COLUMNS][: self._infer_limit]
        return {k: k for k in [*user, *[c for c in DEFAULT_COLUMNS if c in found]]}

    def _parameters(self, trials: list[Any]) -> dict[str, str]:
        if self._parameter_columns:
            return self._parameter_columns
        keys: dict[str, str] = {}
        for trial in trials:
            for key in getattr(trial, "evaluated_params", {}) or {}:
                keys.setdefault(key, key)
        return keys

    def _cell(self, value: Any) -> str:
        if value is None:
            return ""
        text = f"{value:.5g}" if isinstance(value, float) else str(value)
        limit = self._max_column_length
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def _progress_str(self, trials: list[Any], done: bool, *sys_info: str) -> str:
        by_status: dict[str, int] = {}
        for trial in trials:
            by_status[trial.status] = by_status.get(trial.status, 0) + 1
        elapsed = time.time() - self._start_time
        total = f"/{self._total_samples}" if self._total_samples else ""
        counts = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
        lines = [
            f"== Status == ({'done' if done else 'running'}, {elapsed:.1f} s)",
            f"Number of trials: {len(trials)}{total} ({counts})",
            *sys_info,
        ]
        params, metrics = self._parameters(trials), self._metrics(trials)
        shown = list(trials)
        if self._sort_by_metric and self._metric and self._mode:
            sign = -1.0 if self._mode == "max" else 1.0

            def key(t: Any) -> float:
                v = _lookup(t.last_result or {}, self._metric or "")
                return sign * v if isinstance(v, (int, float)) else float("inf")

            shown.sort(key=key)
        header = ["Trial name", "status", *params.values(), *metrics.values()]
        rows = [
            [
                str(t),
                t.status,
                *(self._cell(_lookup(t.config, p)) for p in params),
                *(self._cell(_lookup(t.last_result or {}, m)) for m in metrics),
            ]
            for t in shown[: self._max_progress_rows]
        ]
        widths = [
            max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(header)
        ]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
        if len(shown) > self._max_progress_rows:
            lines.append(f"... {len(shown) - self._max_progress_rows} more trials not shown")
        errored = [t for t in trials if t.status == "ERROR"][: self._max_error_rows]
        if errored:
            lines.append(f"Number of errored trials: {len(errored)}")
            lines.extend(f"  {t}: {t.error_file}" for t in errored)
        return "\n".join(lines)


class CLIReporter(TuneReporterBase):
    """Prints the progress table to the terminal."""

    def report(self, trials: list[Any], done: bool, *sys_info: str) -> None:
        print(self._progress_str(trials, done, *sys_info), file=sys.stdout, flush=True)


class JupyterNotebookReporter(TuneReporterBase):
    """Shows the table in a notebook cell (replacing the previous one when ``overwrite``)."""

    def __init__(self, overwrite: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._overwrite = overwrite

    def report(self, trials: list[Any], done: bool, *sys_info: str) -> None:
        text = self._progress_str(trials, done, *sys_info)
        try:
            from IPython.display import clear_output, display
        except ImportError:
            print(text, flush=True)
            return
        if self._overwrite:
            clear_output(wait=True)
        display({"text/plain": text}, raw=True)


class ReporterCallback(Callback):
    """Drives a ProgressReporter from the callback hooks."""

    def __init__(self, reporter: ProgressReporter, metric: str | None, mode: str | None) -> None:
        self.reporter = reporter
        self._metric, self._mode = metric, mode

    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        self.reporter.setup(
            start_time=time.time(),
            total_samples=total_num_samples,
            metric=self._metric,
            mode=self._mode,
        )

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self.reporter.should_report(trials, done=False):
            self.reporter.report(trials, False)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.reporter.report(trials, True)
