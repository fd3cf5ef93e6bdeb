"""``kubetune repair PATH``: make a damaged local experiment readable and resumable again.

- each trial's result.json: a torn last line is cut off (kept in ``result.json.torn``), lines
  that are not JSON results move to ``result.json.corrupt``; progress.csv loses a torn row;
- experiment_state.json, when it is readable: checkpoints that are gone are forgotten, and a
  trial whose latest checkpoint was deleted resumes from the newest one still there;
- experiment_state.json, when it is missing or unreadable: rebuilt from the trial directories
  (params.json, result.json, error.txt, checkpoints) and the saved Tuner (.kubetune/tuner.pkl).
  A trial whose last result says done is TERMINATED, one with error.txt ERROR, any other one
  unfinished: ``--resume`` / ``Tuner.restore`` continues it from its newest checkpoint. The
  searcher's progress is not in the trial directories, so a rebuilt experiment samples no new
  trials. Without a readable tuner.pkl the state is rebuilt for reading only.

The experiment's lock is held throughout: a live driver's experiment is refused.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from typing import Any

from kubetune.local.common import INTERNAL_DIR
from kubetune.local.durability import (
    earlier_trial_dirs,
    fall_back_to_intact_checkpoints,
    intact_checkpoints,
)
from kubetune.local.lock import ExperimentLock
from kubetune.local.result_grid import STATE_FILE, read_results
from kubetune.local.state_file import StateFileError, load_state, trial_entries
from kubetune.trial.lines import trim_torn_tail
from kubetune.trial.output import ERROR_FILE, PARAMS_FILE, PROGRESS_FILE, RESULT_FILE

CORRUPT_SUFFIX = ".corrupt"


def repair(path: str) -> list[str]:
    """Repair the experiment at ``path``; returns what was done, one line each."""
    if path.startswith("s3://"):
        raise ValueError(
            f"{path}: repair works on a local directory; copy the experiment here first"
        )
    local = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(local):
        raise FileNotFoundError(f"{path} is not a directory")
    internal = os.path.join(local, INTERNAL_DIR)
    os.makedirs(internal, exist_ok=True)
    lock = ExperimentLock(internal, local)
    lock.acquire()
    try:
        notes: list[str] = []
        dirs = earlier_trial_dirs(local)
        for name in dirs:
            notes.extend(_repair_trial_files(os.path.join(local, name), name))
        try:
            state: dict[str, Any] | None = load_state(local, need_engine=True)
        except (FileNotFoundError, StateFileError) as exc:
            notes.append(f"{STATE_FILE}: {exc}; rebuilding it from {len(dirs)} trial directories")
            state = None
        if state is not None:
            notes.extend(_fix_checkpoints(state, local))
        else:
            state = _rebuild(local, dirs, notes)
        _write_json(os.path.join(local, STATE_FILE), state)
        if not notes:
            notes.append("nothing to repair")
        return notes
    finally:
        lock.release()


def _repair_trial_files(trial_dir: str, name: str) -> list[str]:
    notes = []
    for filename in (RESULT_FILE, PROGRESS_FILE):
        cut = trim_torn_tail(os.path.join(trial_dir, filename))
        if cut:
            notes.append(f"{name}/{filename}: cut a torn last line ({cut} bytes)")
    path = os.path.join(trial_dir, RESULT_FILE)
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines(keepends=True)
    except FileNotFoundError:
        return notes
    good: list[bytes] = []
    bad: list[bytes] = []
    for line in lines:
        try:
            row = json.loads(line) if line.strip() else {}
        except ValueError:
            row = None
        (good if isinstance(row, dict) else bad).append(line)
    if bad:
        with open(path + CORRUPT_SUFFIX, "ab") as f:
            f.writelines(bad)
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            f.writelines(good)
        os.replace(tmp, path)
        notes.append(
            f"{name}/{RESULT_FILE}: moved {len(bad)} line(s) that are not JSON results to"
            f" {RESULT_FILE}{CORRUPT_SUFFIX}"
        )
    return notes


def _fix_checkpoints(state: dict[str, Any], local: str) -> list[str]:
    dirnames = {t["trial_id"]: t["dirname"] for t in state.get("trials", [])}
    notes = fall_back_to_intact_checkpoints(state["engine"], local, dirnames)
    for trial in state.get("trials", []):
        intact = intact_checkpoints(os.path.join(local, trial["dirname"]))
        trial["checkpoints"] = [c for c in trial.get("checkpoints", []) if c in intact]
        for key in ("latest_checkpoint", "best_checkpoint"):
            if trial.get(key) and trial[key] not in intact:
                trial[key] = intact[-1] if key == "latest_checkpoint" and intact else None
    return notes


def _rebuild(local: str, dirs: list[str], notes: list[str]) -> dict[str, Any]:
    tuner, why = _saved_tuner(local)
    metric = tuner.tune_config.metric if tuner is not None else None
    records = [_record(local, name, i, metric) for i, name in enumerate(dirs)]
    name = os.path.basename(local.rstrip("/"))
    state: dict[str, Any] = {
        "format": 1,
        "updated": time.time(),
        "name": name,
        "uri": local,
        "metric": None,
        "mode": None,
        "repaired": True,
    }
    if tuner is None:
        notes.append(f"rebuilt for reading only (no resume): {why}")
        state["finished"] = {"status": "FAILED", "reason": "rebuilt by kubetune repair"}
        state["trials"] = [
            {
                "trial_id": r["trial_id"],
                "trial_name": r["name"],
                "dirname": r["name"],
                "experiment_tag": r["tag"],
                "status": r["status"],
                "error": r["error"],
                "num_failures": 0,
                "latest_checkpoint": r["latest_checkpoint"],
                "best_checkpoint": None,
                "checkpoints": [c[2] for c in r["checkpoints"]],
            }
            for r in records
        ]
        return state
    from kubetune.engine import ExperimentEngine
    from kubetune.local.experiment import engine_config

    tc, rc = tuner.tune_config, tuner.run_config
    config = engine_config(tuner, name)
    fresh = ExperimentEngine(
        config, search_alg=tc.search_alg, scheduler=tc.scheduler, stopper=rc.stop, seed=tc.seed
    )
    engine_state = fresh.to_state()
    for r in records:
        r["resources"] = config.resources
    active = sum(1 for r in records if r["status"] == "RUNNING")
    engine_state.update(
        trials=records,
        num_active=active,
        num_paused=0,
        created=len(records),
        searcher_done=True,
        started=True,
        finished=None
        if active
        else {"status": "SUCCEEDED", "reason": "rebuilt by kubetune repair", "best_trial_id": None},
    )
    engine = ExperimentEngine.from_json(
        engine_state,
        search_alg=tc.search_alg,
        scheduler=tc.scheduler,
        stopper=rc.stop,
        config=config,
    )
    state.update(
        metric=tc.metric,
        mode=tc.mode,
        finished=engine_state["finished"],
        engine=engine.to_state(),
        trials=trial_entries(engine),
    )
    notes.append(
        f"rebuilt {STATE_FILE}: {len(records)} trials, {active} unfinished (resume continues"
        " them; no new trials are sampled)"
    )
    return state


def _saved_tuner(local: str) -> tuple[Any, str]:
    import types

    import cloudpickle

    path = os.path.join(local, INTERNAL_DIR, "tuner.pkl")
    try:
        with open(path, "rb") as f:
            saved = cloudpickle.load(f)
        trainable: Any = None
        try:
            with open(os.path.join(local, INTERNAL_DIR, "trainable.pkl"), "rb") as f:
                trainable = cloudpickle.load(f)
        except Exception:
            trainable = None
        tuner = types.SimpleNamespace(
            trainable=trainable or _unnamed,
            param_space=saved["param_space"],
            tune_config=saved["tune_config"],
            run_config=saved["run_config"],
            _restore=None,
        )
        return tuner, ""
    except Exception as exc:
        return None, f"{path}: {type(exc).__name__}: {exc}"


def _unnamed(config: dict[str, Any]) -> None:
    """Stands for a trainable that cannot be loaded (its name and resources are unknown)."""


def _record(local: str, name: str, index: int, metric: str | None) -> dict[str, Any]:
    from kubetune.engine.checkpoints import register_checkpoint
    from kubetune.engine.trial import MetricStats

    trial_dir = os.path.join(local, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = read_results(os.path.join(trial_dir, RESULT_FILE))
    try:
        with open(os.path.join(trial_dir, PARAMS_FILE), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        config = rows[-1].get("config", {}) if rows else {}
    if not isinstance(config, dict):
        config = {}
    last = rows[-1] if rows else None
    trial_id = str((last or {}).get("trial_id") or name)
    error = None
    try:
        with open(os.path.join(trial_dir, ERROR_FILE), encoding="utf-8") as f:
            error = f.read() or "error.txt is empty"
    except OSError:
        pass
    status = "RUNNING"
    if last is not None and last.get("done"):
        status = "TERMINATED"
    elif error is not None:
        status = "ERROR"
    by_name = {r["checkpoint_dir_name"]: r for r in rows if r.get("checkpoint_dir_name")}
    checkpoints: list[list[Any]] = []
    intact = intact_checkpoints(trial_dir)
    for seq, ckpt in enumerate(intact, 1):
        checkpoints, _ = register_checkpoint(
            checkpoints, ckpt, by_name.get(ckpt, {}), seq, num_to_keep=None, score_attribute=None
        )
    stats = MetricStats()
    for row in rows:
        value = row.get(metric) if metric else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            stats.add(float(value))
    return {
        "trial_id": trial_id,
        "index": index,
        "name": name,
        "tag": str((last or {}).get("experiment_tag") or ""),
        "config": config,
        "resources": {},
        "status": status,
        "num_failures": 1 if status == "ERROR" else 0,
        "error": error,
        "stop_reason": None,
        "last_result": last,
        "num_results": len(rows),
        "stats": stats.to_dict() if stats.count else None,
        "checkpoints": checkpoints,
        "latest_checkpoint": intact[-1] if intact else None,
        "seq": len(intact),
        "pending_restore": None,
        "decision_points": None,
        "created_at": None,
        "ended_at": None,
    }


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)
