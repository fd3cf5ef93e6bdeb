"""``tune.Tuner``: runs an experiment on this machine and returns a ``ResultGrid``.

The experiment directory (``storage_path/name``) gets Ray's layout (DESIGN.md §3.3) plus a
``.kubetune/`` folder holding what a restore needs: the cloudpickled trainable, the
with_parameters objects (each stored once), and the tuner's own objects (searcher, scheduler,
stopper) as they were before the run; their progress lives in ``experiment_state.json``.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from typing import Any

from kubetune.air.config import RunConfig
from kubetune.local.config import TuneConfig
from kubetune.local.result_grid import STATE_FILE, ResultGrid, TuneError
from kubetune.tune.resources import PlacementGroupFactory, resources_to_pgf

DEFAULT_STORAGE = "~/kubetune_results"
INTERNAL_DIR = ".kubetune"


def _trainable_name(trainable: Any) -> str:
    name = getattr(trainable, "__name__", None) or type(trainable).__name__
    return str(name).replace("<", "").replace(">", "") or "trainable"


def _default_storage() -> str:
    return os.environ.get("KUBETUNE_RESULTS_DIR", DEFAULT_STORAGE)


class Tuner:
    """Ray Tune's Tuner: ``Tuner(trainable, param_space=..., tune_config=..., run_config=...)``."""

    def __init__(
        self,
        trainable: Any = None,
        *,
        param_space: dict[str, Any] | None = None,
        tune_config: TuneConfig | None = None,
        run_config: RunConfig | None = None,
        _tuner_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if trainable is None:
            raise TypeError("Tuner needs a trainable: a function or a tune.Trainable subclass")
        if not callable(trainable):
            raise TypeError(
                f"Tuner: trainable must be a function or a tune.Trainable subclass, got"
                f" {type(trainable).__name__}"
            )
        if param_space is not None and not isinstance(param_space, dict):
            raise TypeError(f"Tuner: param_space must be a dict, got {type(param_space).__name__}")
        self.trainable = trainable
        self.param_space = dict(param_space or {})
        self.tune_config = tune_config or TuneConfig()
        self.run_config = run_config or RunConfig()
        self._restore: dict[str, Any] | None = None
        self._result_grid: ResultGrid | None = None

    # -- restore ----------------------------------------------------------------------------
    @classmethod
    def can_restore(cls, path: str, storage_filesystem: Any = None) -> bool:
        """True if ``path`` holds an experiment kubetune can continue."""
        if path.startswith("s3://"):
            from kubetune.storage import open_storage

            return open_storage(path).exists(STATE_FILE)
        root = os.path.expanduser(path)
        return os.path.exists(os.path.join(root, STATE_FILE)) and os.path.exists(
            os.path.join(root, INTERNAL_DIR, "tuner.pkl")
        )

    @classmethod
    def restore(
        cls,
        path: str,
        trainable: Any = None,
        resume_unfinished: bool = True,
        resume_errored: bool = False,
        restart_errored: bool = False,
        param_space: dict[str, Any] | None = None,
        overwrite_trainable: Any = None,
        **_: Any,
    ) -> Tuner:
        """Continue an interrupted experiment stored at ``path``.

        Unfinished trials resume from their latest checkpoint; errored trials stay as they
        are unless ``resume_errored`` (from their latest checkpoint) or ``restart_errored``
        (from scratch). Re-specify the trainable (required when it used with_parameters).
        """
        import cloudpickle

        from kubetune.local.experiment import open_experiment_dir
        from kubetune.local.stored_state import read_state

        options = {
            "resume_unfinished": resume_unfinished,
            "resume_errored": resume_errored,
            "restart_errored": restart_errored,
        }
        local_dir, storage_uri = open_experiment_dir(path, must_exist=True)
        if read_state(local_dir).get("writer") == "operator":
            from kubetune.cluster.restore import restore_operator_experiment

            return restore_operator_experiment(
                cls, local_dir, storage_uri, overwrite_trainable or trainable, options
            )
        local_dir, storage_uri = open_experiment_dir(path, must_exist=True, full=True)
        with open(os.path.join(local_dir, INTERNAL_DIR, "tuner.pkl"), "rb") as f:
            saved = cloudpickle.load(f)
        trainable = overwrite_trainable or trainable
        if trainable is None:
            with open(os.path.join(local_dir, INTERNAL_DIR, "trainable.pkl"), "rb") as f:
                trainable = cloudpickle.load(f)
        tuner = cls(
            trainable,
            param_space=param_space if param_space is not None else saved["param_space"],
            tune_config=saved["tune_config"],
            run_config=saved["run_config"],
        )
        tuner._restore = {"local_dir": local_dir, "storage_uri": storage_uri, **options}
        return tuner

    # -- running ----------------------------------------------------------------------------
    def fit(self) -> ResultGrid:
        from kubetune.cluster.mode import cluster_fit

        grid = cluster_fit(self)  # None unless the cluster mode is on (or this is its restore)
        if grid is not None:
            self._result_grid = grid
            return grid
        from kubetune.local.experiment import LocalExperiment

        experiment = LocalExperiment(self)
        try:
            experiment.run()
        except KeyboardInterrupt:
            print(
                f"\nkubetune: interrupted; every trial process was stopped. Continue with"
                f" Tuner.restore({experiment.uri!r}, trainable) or"
                f" `kubetune run --resume ...`.",
                file=sys.stderr,
            )
            raise
        grid = experiment.result_grid()
        self._result_grid = grid
        experiment.print_summary(grid)
        if self.run_config.failure_config.fail_fast == "raise" and grid.errors:
            raise TuneError(f"a trial failed and fail_fast='raise': {grid.errors[0]}")
        return grid

    def get_results(self) -> ResultGrid:
        """The results of fit(), or of the restored experiment as stored (Ray's
        ``Tuner.restore(path, trainable).get_results()``)."""
        if self._result_grid is None:
            if self._restore is None:
                raise RuntimeError("get_results(): call fit() first")
            self._result_grid = ResultGrid.from_path(self._restore["storage_uri"])
        return self._result_grid


def experiment_name(tuner: Tuner) -> str:
    if tuner.run_config.name:
        return tuner.run_config.name
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return f"{_trainable_name(tuner.trainable)}_{stamp}"


def static_resources(trainable: Any) -> PlacementGroupFactory | None:
    """The trainable's resources when they do not depend on the config."""
    resources = getattr(trainable, "_kubetune_resources", None)
    if resources is not None and not callable(resources):
        return resources_to_pgf(resources)
    return None


def now() -> float:
    return time.time()
