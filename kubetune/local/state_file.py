"""Reading ``experiment_state.json`` back: a damaged or foreign file gets an error naming the
file and the field, never a traceback from deep inside."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from kubetune.local.result_grid import STATE_FILE

if TYPE_CHECKING:
    from kubetune.engine import ExperimentEngine


class StateFileError(ValueError):
    """An experiment's state file (or a file next to it) is unreadable or has the wrong shape."""


def _repair_hint(directory: str) -> str:
    return f"`kubetune repair {directory}` rebuilds it from the trial directories"


def load_state(directory: str, need_engine: bool = False) -> dict[str, Any]:
    """The state of the experiment in ``directory``, checked for the fields readers use."""
    path = os.path.join(directory, STATE_FILE)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{directory} holds no kubetune experiment ({STATE_FILE} is missing)"
        ) from None
    try:
        state = json.loads(data)
    except ValueError as exc:
        raise StateFileError(f"{path}: not valid JSON ({exc}); {_repair_hint(directory)}") from None
    check_state(state, path, need_engine)
    return state


def check_state(state: Any, path: str, need_engine: bool = False) -> None:
    def bad(field: str, what: str) -> StateFileError:
        return StateFileError(
            f"{path}: {field}: {what}; {_repair_hint(os.path.dirname(path) or '.')}"
        )

    if not isinstance(state, dict):
        raise bad("(top level)", f"must be a JSON object, got {type(state).__name__}")
    trials = state.get("trials", [])
    if not isinstance(trials, list):
        raise bad("trials", f"must be a list, got {type(trials).__name__}")
    for i, trial in enumerate(trials):
        if not isinstance(trial, dict):
            raise bad(f"trials[{i}]", f"must be an object, got {type(trial).__name__}")
        for key in ("trial_id", "dirname"):
            value = trial.get(key)
            if not isinstance(value, str) or not value:
                raise bad(f"trials[{i}].{key}", f"must be a non-empty string, got {value!r}")
            if key == "dirname" and (os.sep in value or value in (".", "..")):
                raise bad(f"trials[{i}].{key}", f"must be a directory name, got {value!r}")
        for key in ("checkpoints",):
            value = trial.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad(f"trials[{i}].{key}", "must be a list of checkpoint names")
        for key in ("latest_checkpoint", "error", "status"):
            value = trial.get(key)
            if value is not None and not isinstance(value, str):
                raise bad(f"trials[{i}].{key}", f"must be a string, got {type(value).__name__}")
    for key in ("metric", "mode"):
        value = state.get(key)
        if value is not None and not isinstance(value, str):
            raise bad(key, f"must be a string, got {type(value).__name__}")
    finished = state.get("finished")
    if finished is not None and not isinstance(finished, dict):
        raise bad("finished", f"must be an object or null, got {type(finished).__name__}")
    if need_engine:
        engine = state.get("engine")
        if not isinstance(engine, dict):
            raise bad("engine", f"must be an object, got {type(engine).__name__}")
        records = engine.get("trials")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise bad("engine.trials", "must be a list of objects")


def trial_entries(engine: ExperimentEngine) -> list[dict[str, Any]]:
    """The state file's ``trials``: what readers (ResultGrid, ``kubetune results``) use."""
    trials = []
    for trial_id in engine.trial_ids():
        summary = engine.trial_summary(trial_id)
        latest = summary.get("latest_checkpoint")
        best = summary.get("best_checkpoint")
        trials.append(
            {
                "trial_id": trial_id,
                "trial_name": summary["trial_name"],
                "dirname": summary.get("trial_dirname") or summary["trial_name"],
                "experiment_tag": summary["experiment_tag"],
                "status": summary["status"],
                "config": summary["config"],
                "error": summary["error"],
                "num_failures": summary["num_failures"],
                "latest_checkpoint": latest["checkpoint_dir_name"] if latest else None,
                "best_checkpoint": best["checkpoint_dir_name"] if best else None,
                "checkpoints": summary["checkpoints"],
            }
        )
    return trials
