"""The JSON the page asks for: experiment list, one experiment (incremental), one trial,
hyperparameter importance and PBT lineage. Pure functions over :mod:`kubetune.dashboard.source`
views, except :func:`trial_detail`, which reads the trial's files again."""

from __future__ import annotations

import json
import math
from typing import Any

from kubetune._util import flatten_dict
from kubetune.dashboard.source import ExperimentView, TrialView, is_number
from kubetune.storage.base import join_key

X_KEY = "training_iteration"
SCHEDULER_REASONS = ("scheduler",)


def _finite(value: Any) -> float | None:
    if is_number(value) and math.isfinite(value):
        return float(value)
    return None


def metric_summary(trial: TrialView, metric: str | None, mode: str | None) -> tuple[Any, Any]:
    """(last, best) finite value of ``metric`` over the trial's rows."""
    if not metric or metric not in trial.columns:
        return None, None
    values = [v for v in trial.columns[metric] if math.isfinite(v)]
    if not values:
        return None, None
    best = min(values) if mode == "min" else max(values)
    return values[-1], best


def stopped_by_scheduler(trial: TrialView) -> bool:
    return trial.status == "TERMINATED" and (trial.stop_reason or "") in SCHEDULER_REASONS


def best_trial(view: ExperimentView, metric: str | None, mode: str | None) -> str | None:
    """Like ``ResultGrid.get_best_result()``: the best last value of the metric."""
    best: tuple[float, str] | None = None
    for trial_id in view.order:
        last, _ = metric_summary(view.trials[trial_id], metric, mode)
        if last is None:
            continue
        if best is None or (last < best[0] if mode == "min" else last > best[0]):
            best = (last, trial_id)
    return best[1] if best else None


def _first_line(text: str | None) -> str:
    if not text:
        return ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def trial_row(trial: TrialView, metric: str | None, mode: str | None) -> dict[str, Any]:
    last, best = metric_summary(trial, metric, mode)
    iteration = trial.last.get(X_KEY)
    return {
        "id": trial.trial_id,
        "index": trial.index,
        "name": trial.name,
        "status": trial.status,
        "config": {k: _plain(v) for k, v in flatten_dict(trial.config).items()},
        "last": last,
        "best": best,
        "iterations": iteration if is_number(iteration) else trial.n,
        "rows": trial.n,
        "error": _first_line(trial.error),
        "stop_reason": trial.stop_reason or "",
        "stopped_by_scheduler": stopped_by_scheduler(trial),
        "failures": trial.num_failures,
    }


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, default=str)


def experiment_summary(view: ExperimentView, name: str) -> dict[str, Any]:
    metric, mode = view.metric, view.mode
    best_id = best_trial(view, metric, mode)
    best_value = None
    if best_id is not None:
        best_value, _ = metric_summary(view.trials[best_id], metric, mode)
    return {
        "name": name,
        "uri": view.uri,
        "state": view.state_name(),
        "trials": len(view.order),
        "counts": view.counts(),
        "metric": metric,
        "mode": mode,
        "best_trial": view.trials[best_id].name if best_id else None,
        "best": best_value,
        "updated": view.updated,
    }


def experiment_payload(
    view: ExperimentView, name: str, since: int, metric: str | None
) -> dict[str, Any]:
    """What changed after sequence ``since`` (everything for 0): table rows of the changed
    trials and, per trial, the new points of ``metric`` against training_iteration."""
    metric = metric or view.metric
    mode = view.mode or "max"
    trials = []
    curves: dict[str, dict[str, Any]] = {}
    metrics: set[str] = set()
    for trial_id in view.order:
        trial = view.trials[trial_id]
        metrics.update(trial.columns)
        if trial.changed <= since:
            continue
        trials.append(trial_row(trial, metric, mode))
        start = trial.rows_at(since) if since else 0
        if start > trial.n:
            start = 0
        if metric and trial.n > start:
            curves[trial_id] = {
                "start": start,
                "x": trial.values(X_KEY, start),
                "y": trial.values(metric, start),
            }
    out = experiment_summary(view, name)
    out.update(
        {
            "seq": view.seq,
            "since": since,
            "metric": metric,
            "mode": mode,
            "scheduler": view.scheduler,
            "metrics": sorted(metrics),
            "best_id": best_trial(view, metric, mode),
            "changed": trials,
            "curves": curves,
        }
    )
    return out


def trial_detail(view: ExperimentView, trial_id: str) -> dict[str, Any]:
    """The trial's page: every result row, config, checkpoints with URIs, error.txt."""
    trial = view.trials.get(trial_id)
    if trial is None:
        raise KeyError(trial_id)
    storage = view.storage

    def read(name: str) -> str | None:
        try:
            return storage.get_bytes(join_key(view.key, trial.dirname, name)).decode(
                "utf-8", "replace"
            )
        except FileNotFoundError:
            return None

    rows = []
    for line in (read("result.json") or "").splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except ValueError:
                break
    by_checkpoint = {r["checkpoint_dir_name"]: r for r in rows if r.get("checkpoint_dir_name")}
    checkpoints = []
    for name in trial.checkpoints:
        row = by_checkpoint.get(name, {})
        checkpoints.append(
            {
                "name": name,
                "uri": storage.uri(join_key(view.key, trial.dirname, name)),
                "iteration": row.get(X_KEY),
                "metric": row.get(view.metric) if view.metric else None,
                "latest": name == trial.latest_checkpoint,
            }
        )
    columns: list[str] = []
    flat_rows = []
    for row in rows:
        flat = flatten_dict({k: v for k, v in row.items() if k != "config"})
        for key in flat:
            if key not in columns:
                columns.append(key)
        flat_rows.append({k: _plain(v) for k, v in flat.items()})
    return {
        **trial_row(trial, view.metric, view.mode),
        "dirname": trial.dirname,
        "uri": storage.uri(join_key(view.key, trial.dirname)),
        "full_config": trial.config,
        "columns": columns,
        "results": flat_rows,
        "checkpoints": checkpoints,
        "error_txt": read("error.txt") or trial.error or "",
        "metric": view.metric,
    }


def lineage(view: ExperimentView) -> dict[str, Any]:
    """PBT exploits: which trial exploited whom, at which iteration, and the config change.

    The donor comes from the engine's record of each exploit (``exploits`` in the trial's
    state, local mode and operator alike); the config change from the trial's result rows,
    where the config differs from the row before (the first row trained from the donor's
    checkpoint). An exploit that recorded how many results the trial had goes with the change
    at or after that row and before the next exploit's (an explored config equal to the old
    one, e.g. clipped at a bound, shows no change); changes no exploit claims (an experiment
    written before exploits were recorded) show without a donor."""
    events = []
    for trial_id in view.order:
        trial = view.trials[trial_id]
        changes = list(trial.config_changes)
        paired: list[tuple[dict[str, Any], Any]] = []
        for k, recorded in enumerate(trial.exploits):
            start: Any = recorded.get("result")
            if not is_number(start):
                paired.append((recorded, changes.pop(0) if changes else None))
                continue
            nxt: Any = trial.exploits[k + 1].get("result") if k + 1 < len(trial.exploits) else None
            end = float(nxt) if is_number(nxt) else math.inf
            lo = float(start)
            match = next((c for c in changes if c[0] is not None and lo <= c[0] < end), None)
            if match is not None:
                changes.remove(match)
            paired.append((recorded, match))
        paired.extend(({}, c) for c in changes)
        for recorded, change_row in paired:
            events.append(_lineage_event(view, trial, recorded, change_row))
    events.sort(key=lambda e: (e["row"] if e["row"] is not None else math.inf, e["trial"]))
    return {"scheduler": view.scheduler, "events": events}


def _lineage_event(
    view: ExperimentView, trial: TrialView, recorded: dict[str, Any], change_row: Any
) -> dict[str, Any]:
    row_index, iteration, change = None, recorded.get("iteration"), {}
    if change_row is not None:
        row_index, iteration, old, new = change_row
        old_flat, new_flat = flatten_dict(old), flatten_dict(new)
        change = {
            key: [_plain(old_flat.get(key)), _plain(new_flat.get(key))]
            for key in sorted(set(old_flat) | set(new_flat))
            if old_flat.get(key) != new_flat.get(key)
        }
    donor = recorded.get("donor")
    donor = str(donor) if donor is not None else None
    return {
        "trial": trial.trial_id,
        "trial_name": trial.name,
        "row": row_index,
        "iteration": iteration,
        "exploited_at": recorded.get("iteration"),
        "donor": donor,
        "donor_name": view.trials[donor].name if donor in view.trials else donor,
        "donor_checkpoint": recorded.get("checkpoint"),
        "change": change,
    }
