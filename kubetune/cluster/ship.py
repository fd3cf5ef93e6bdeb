"""What ``Tuner.fit()`` in cluster mode stores under the experiment's prefix before it creates
the TuneExperiment (all with the submitting user's storage credentials, none in the pod's
trial container; the trial pods' sidecars fetch it):

    .kubetune/code/trainable.pkl      the trainable, cloudpickled; by value for __main__, a
                                      notebook and the working directory's modules
    .kubetune/code/workdir/...        the working directory (also on the trial's sys.path)
    .kubetune/code/requirements.txt   installed in each trial pod before the trainable loads
    .kubetune/code/stopper.pkl        a run_config.stop function, called inside each trial
    .kubetune/params/NAME.pkl         each with_parameters object, stored once for all trials
    .kubetune/tuner.pkl               param_space, tune_config, run_config (Tuner.restore)
    .kubetune/experiment.json         the TuneExperiment as submitted (reattach, restore)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

from kubetune.storage.base import Storage

CODE = ".kubetune/code"
PARAMS = ".kubetune/params"
TUNER = ".kubetune/tuner.pkl"
EXPERIMENT = ".kubetune/experiment.json"
STOPPER = "stopper.pkl"  # in CODE; kubetune.cluster.bootstrap hands it to the trial runner
_SKIP_DIRS = {
    ".git",
    "__pycache__",
    ".venv",
    "venv",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "node_modules",
    ".ipynb_checkpoints",
}
MAX_WORKDIR_BYTES = 100 * 1024 * 1024


def working_dir_files(root: str) -> list[tuple[str, str]]:
    """(local path, relative key) of the working directory's files, skipping caches and VCS."""
    out: list[tuple[str, str]] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            full = os.path.join(dirpath, name)
            if not os.path.isfile(full):
                continue
            total += os.path.getsize(full)
            if total > MAX_WORKDIR_BYTES:
                raise ValueError(
                    f"the working directory {root} holds more than"
                    f" {MAX_WORKDIR_BYTES // 2**20} MiB; ship a smaller one (--working-dir) or"
                    " pass large data with tune.with_parameters"
                )
            out.append((full, os.path.relpath(full, root).replace(os.sep, "/")))
    return out


def _register_by_value(working_dir: str | None) -> list[Any]:
    """Modules of the working directory travel inside the pickle (a notebook's helper module
    need not exist in the image); __main__ always does."""
    import cloudpickle

    registered: list[Any] = []
    if not working_dir:
        return registered
    root = os.path.abspath(working_dir) + os.sep
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path or name == "__main__" or "." in name:
            continue
        if os.path.abspath(path).startswith(root):
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:
                continue
            registered.append(module)
    return registered


def pickle_by_value(obj: Any, working_dir: str | None, what: str) -> bytes:
    import cloudpickle

    registered = _register_by_value(working_dir)
    try:
        return bytes(cloudpickle.dumps(obj))
    except Exception as exc:
        raise TypeError(
            f"{what} cannot be serialised for the trial pods ({exc}); find the culprit"
            " with kubetune.tune.utils.diagnose_serialization(...)"
        ) from exc
    finally:
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)


def pickle_trainable(trainable: Any, params_dir: str, working_dir: str | None) -> bytes:
    from kubetune.tune.helpers import store_parameters

    light = store_parameters(trainable, params_dir)
    return pickle_by_value(light, working_dir, "the trainable")


def ship(
    tuner: Any,
    storage: Storage,
    working_dir: str | None,
    requirements: str | None,
) -> dict[str, bool]:
    """Store the code, parameters and tuner; returns which parts exist."""
    import cloudpickle

    if requirements and not os.path.isfile(requirements):
        raise FileNotFoundError(f"the requirements file {requirements} does not exist")
    from kubetune.cluster.translate import stops_in_trial

    stop = tuner.run_config.stop
    with tempfile.TemporaryDirectory(prefix="kubetune-ship-") as tmp:
        params_dir = os.path.join(tmp, "params")
        blob = pickle_trainable(tuner.trainable, params_dir, working_dir)
        stopper = (
            pickle_by_value(stop, working_dir, "the run_config.stop function")
            if stops_in_trial(stop)
            else None
        )  # both serialised before anything is stored
        storage.put_bytes(f"{CODE}/trainable.pkl", blob)
        if stopper is not None:
            storage.put_bytes(f"{CODE}/{STOPPER}", stopper)
        if working_dir:
            for full, rel in working_dir_files(working_dir):
                storage.put_file(full, f"{CODE}/workdir/{rel}")
        if requirements:
            storage.put_file(requirements, f"{CODE}/requirements.txt")
        has_params = os.path.isdir(params_dir) and bool(os.listdir(params_dir))
        if has_params:
            for name in sorted(os.listdir(params_dir)):
                storage.put_file(os.path.join(params_dir, name), f"{PARAMS}/{name}")
    saved = {
        "param_space": tuner.param_space,
        "tune_config": tuner.tune_config,
        "run_config": tuner.run_config,
    }
    storage.put_bytes(TUNER, cloudpickle.dumps(saved))
    return {"params": has_params}


def save_experiment(storage: Storage, body: dict[str, Any], namespace: str) -> None:
    storage.put_bytes(
        EXPERIMENT, json.dumps({"namespace": namespace, "experiment": body}, indent=1).encode()
    )


def load_experiment(storage: Storage) -> dict[str, Any] | None:
    try:
        return dict(json.loads(storage.get_bytes(EXPERIMENT)))
    except FileNotFoundError:
        return None
