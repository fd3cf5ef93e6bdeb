"""``ResultGrid`` and ``Result``: what ``Tuner.fit()`` returns, read back from storage.

Everything here is rebuilt from the experiment directory (``experiment_state.json`` plus each
trial's ``result.json`` and checkpoints), so a finished, running or restored experiment reads
the same, and ``kubetune results PATH`` uses the same code.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kubetune._util import flatten_dict, unflattened_lookup
from kubetune.air.checkpoint import Checkpoint

SCOPES = ("last", "all", "avg", "last-5-avg", "last-10-avg")
STATE_FILE = "experiment_state.json"


class TuneError(RuntimeError):
    """An experiment-level failure (Ray's ``TuneError``)."""


class TrialError(RuntimeError):
    """A trial failed; the message holds the trial's error.txt."""


class CorruptResultWarning(UserWarning):
    """A line of a trial's result.json is not valid JSON; it was skipped."""


def scope_value(values: list[float], mode: str, scope: str) -> float | None:
    """One number per trial for ranking: the last, best ("all"), or an average of values."""
    if not values:
        return None
    if scope == "last":
        return values[-1]
    if scope == "all":
        return max(values) if mode == "max" else min(values)
    if scope == "avg":
        return sum(values) / len(values)
    if scope == "last-5-avg":
        tail = values[-5:]
        return sum(tail) / len(tail)
    if scope == "last-10-avg":
        tail = values[-10:]
        return sum(tail) / len(tail)
    raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")


def check_metric_mode(metric: str | None, mode: str | None, where: str) -> tuple[str, str]:
    if not metric or not mode:
        raise ValueError(
            f"{where}: no metric/mode given here or in TuneConfig: pass metric='...' and"
            " mode='min' or 'max'"
        )
    if mode not in ("min", "max"):
        raise ValueError(f"{where}: mode must be 'min' or 'max', got {mode!r}")
    return metric, mode


def read_results(path: str) -> list[dict[str, Any]]:
    """Every complete line of a result.json (a half-written last line is ignored).

    A line that is not a JSON object (a file damaged by hand or by an old torn write) is
    skipped with a :class:`CorruptResultWarning` naming the file, the line and the trial; the
    rest of the file, and of the experiment, stays readable.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        warnings.warn(
            f"{path}: cannot read the results of trial {_trial_of(path)} ({exc}); skipped",
            CorruptResultWarning,
            stacklevel=2,
        )
        return []
    out = []
    bad: list[int] = []
    for number, raw in enumerate(data.splitlines(keepends=True), 1):
        if not raw.endswith(b"\n"):
            break
        raw = raw.strip()
        if not raw:
            continue
        try:
            row = json.loads(raw)
        except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
            row = None
        if isinstance(row, dict):
            out.append(row)
        else:
            bad.append(number)
    if bad:
        shown = ", ".join(str(n) for n in bad[:5]) + (" ..." if len(bad) > 5 else "")
        warnings.warn(
            f"{path}: {len(bad)} line(s) of trial {_trial_of(path)} are not valid JSON results"
            f" (line {shown}); skipped them (`kubetune repair` moves them aside)",
            CorruptResultWarning,
            stacklevel=2,
        )
    return out


def _trial_of(path: str) -> str:
    return os.path.basename(os.path.dirname(os.path.abspath(path)))


@dataclass
class Result:
    """One trial's outcome: last metrics, config, latest checkpoint, error."""

    metrics: dict[str, Any]
    checkpoint: Checkpoint | None
    error: Exception | None
    path: str
    local_path: str = ""
    best_checkpoints: list[tuple[Checkpoint, dict[str, Any]]] = field(default_factory=list)
    _history: list[dict[str, Any]] | None = field(default=None, repr=False)
    # the trial's status in the experiment (TERMINATED, ERROR, ...): counts agree with the table
    _status: str | None = field(default=None, repr=False)
    _config: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def config(self) -> dict[str, Any] | None:
        # a trial that reported nothing (Ray: metrics == {}) still had a config
        return self.metrics.get("config", self._config) if self.metrics else self._config

    @property
    def log_dir(self) -> str:
        return self.local_path or self.path

    def history(self) -> list[dict[str, Any]]:
        if self._history is None:
            self._history = read_results(os.path.join(self.log_dir, "result.json"))
        return self._history

    @property
    def metrics_dataframe(self) -> Any:
        pd = _pandas()
        rows = [flatten_dict({k: v for k, v in r.items() if k != "config"}) for r in self.history()]
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.metrics.items() if k not in ("config", "date")}
        return f"Result(metrics={shown}, path={self.path!r}, error={self.error!r})"


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("this needs pandas: pip install 'kubetune[pandas]'") from None
    return pd


class ResultGrid:
    """The results of every trial of an experiment, in trial order."""

    def __init__(
        self,
        experiment_path: str,
        results: list[Result],
        metric: str | None = None,
        mode: str | None = None,
        local_path: str | None = None,
    ) -> None:
        self.experiment_path = experiment_path
        self._local_path = local_path or experiment_path
        self._results = results
        self._metric = metric
        self._mode = mode

    @classmethod
    def from_path(cls, path: str) -> ResultGrid:
        """Read an experiment from its path or ``s3://`` URI, whoever wrote it (local mode,
        ``kubetune submit`` or the operator); checkpoints in S3 download when used."""
        from kubetune.local.experiment import open_experiment_dir

        local, uri = open_experiment_dir(path, must_exist=True)
        return cls.from_directory(local, experiment_path=uri)

    @classmethod
    def from_directory(cls, local_path: str, experiment_path: str | None = None) -> ResultGrid:
        """Read a (finished or running) experiment from its local directory."""
        from kubetune.local.stored_state import read_state

        state = read_state(local_path)
        uri = experiment_path or local_path
        remote = uri.startswith("s3://")
        results = []
        for trial in state.get("trials", []):
            trial_local = os.path.join(local_path, trial["dirname"])
            trial_uri = f"{uri.rstrip('/')}/{trial['dirname']}"

            def checkpoint_at(name: str) -> Checkpoint | None:
                where = os.path.join(trial_local, name)  # noqa: B023 - used at once
                if remote:
                    from kubetune.local.stored_checkpoint import StoredCheckpoint

                    return StoredCheckpoint(f"{trial_uri}/{name}", where)  # noqa: B023
                return Checkpoint.from_directory(where) if os.path.isdir(where) else None

            history = read_results(os.path.join(trial_local, "result.json"))
            metrics: dict[str, Any] = dict(history[-1]) if history else {}
            if metrics and trial.get("status") == "TERMINATED":
                metrics["done"] = True
            by_name = {r["checkpoint_dir_name"]: r for r in history if r.get("checkpoint_dir_name")}
            checkpoints = []
            for name in trial.get("checkpoints", []):
                ckpt = checkpoint_at(name)
                if ckpt is not None:
                    checkpoints.append((ckpt, by_name.get(name, {})))
            latest = trial.get("latest_checkpoint")
            checkpoint = checkpoint_at(latest) if latest else None
            error = None
            if trial.get("status") == "ERROR":
                text = trial.get("error")
                if state.get("writer") == "operator":  # the pod's reason; the trial's own text
                    try:
                        with open(os.path.join(trial_local, "error.txt"), encoding="utf-8") as f:
                            text = f.read() or text
                    except FileNotFoundError:
                        pass
                error = TrialError(text or f"trial {trial['trial_id']} failed")
            results.append(
                Result(
                    metrics=metrics,
                    checkpoint=checkpoint,
                    error=error,
                    path=trial_uri,
                    local_path=trial_local,
                    best_checkpoints=checkpoints,
                    _history=history,
                    _status=trial.get("status"),
                    _config=trial.get("config"),
                )
            )
        return cls(uri, results, state.get("metric"), state.get("mode"), local_path)

    def __len__(self) -> int:
        return len(self._results)

    def __getitem__(self, i: int) -> Result:
        return self._results[i]

    def __iter__(self) -> Iterator[Result]:
        return iter(self._results)

    @property
    def errors(self) -> list[Exception]:
        return [r.error for r in self._results if r.error is not None]

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    @property
    def num_terminated(self) -> int:
        return sum(
            1
            for r in self._results
            if r.error is None
            and (r._status == "TERMINATED" if r._status else bool(r.metrics.get("done")))
        )

    def get_best_result(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> Result:
        metric, mode = check_metric_mode(
            metric or self._metric, mode or self._mode, "get_best_result"
        )
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        best: tuple[float, Result] | None = None
        for result in self._results:
            values = []
            for row in result.history():
                try:
                    value = unflattened_lookup(metric, row)
                except KeyError:
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    if filter_nan_and_inf and not math.isfinite(value):
                        continue
                    values.append(float(value))
            score = scope_value(values, mode, scope)
            if score is None:
                continue
            if best is None or (score > best[0] if mode == "max" else score < best[0]):
                best = (score, result)
        if best is None:
            raise RuntimeError(
                f"no trial reported the metric {metric!r}"
                + (" with a finite value" if filter_nan_and_inf else "")
            )
        return best[1]

    def get_dataframe(
        self, filter_metric: str | None = None, filter_mode: str | None = None
    ) -> Any:
        """One row per trial: its last result (or its best, with filter_metric/mode)."""
        pd = _pandas()
        rows = []
        for result in self._results:
            row: dict[str, Any] | None = result.metrics or None
            if filter_metric is not None:
                _, mode = check_metric_mode(filter_metric, filter_mode, "get_dataframe")
                scored = [
                    r for r in result.history() if isinstance(r.get(filter_metric), (int, float))
                ]
                if scored:
                    pick = max if mode == "max" else min
                    row = pick(scored, key=lambda r: r[filter_metric])
            if row is None:
                continue
            flat = flatten_dict({k: v for k, v in row.items() if k != "config"})
            flat.update(
                {f"config/{k}": v for k, v in flatten_dict(row.get("config") or {}).items()}
            )
            flat["logdir"] = result.path
            rows.append(flat)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return f"ResultGrid<{len(self)} results, {self.num_errors} errors>"
