"""``tune.Tuner``: runs an experiment on this machine and returns a ``ResultGrid``.

The experiment directory (``storage_path/name``) gets Ray's layout (DESIGN.md §3.3) plus a
``.kubetune/`` folder holding what a restore needs: the cloudpickled trainable, the
with_parameters objects (each stored once), and the tuner's own objects (searcher, scheduler,
stopper) as they were before the run; their progress lives in ``experiment_state.json``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from kubetune.air.config import RunConfig
from kubetune.local.common import INTERNAL_DIR
from kubetune.local.config import TuneConfig
from kubetune.local.result_grid import STATE_FILE, ResultGrid, TuneError
from kubetune.local.state_file import StateFileError


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
        if isinstance(trainable, str):  # a tune.register_trainable name
            from kubetune.tune.registry import get_trainable

            trainable = get_trainable(trainable)
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
        _resume_config: Any = None,
        **_: Any,
    ) -> Tuner:
        """Continue an interrupted experiment stored at ``path``.

        Unfinished trials resume from their latest checkpoint; errored trials stay as they
        are unless ``resume_errored`` (from their latest checkpoint) or ``restart_errored``
        (from scratch). Re-specify the trainable (required when it used with_parameters).
        """
        from kubetune.local.experiment import open_experiment_dir
        from kubetune.local.stored_state import read_state

        resume_config = _resume_config or _.get("resume_config")
        if resume_config is not None:  # tune.ResumeConfig: overrides the three flags
            flags = resume_config.restore_flags()
            resume_unfinished = flags["resume_unfinished"]
            resume_errored = flags["resume_errored"]
            restart_errored = flags["restart_errored"]

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
        saved = _load_pickle(
            os.path.join(local_dir, INTERNAL_DIR, "tuner.pkl"),
            "the Tuner's",
            "this experiment cannot be restored without it; its results stay readable"
            " (`kubetune results`), or start a new run",
        )
        if not isinstance(saved, dict) or not {"param_space", "tune_config", "run_config"} <= set(
            saved
        ):
            raise StateFileError(
                f"{os.path.join(local_dir, INTERNAL_DIR, 'tuner.pkl')}: not a saved Tuner (it"
                " needs param_space, tune_config and run_config)"
            )
        trainable = overwrite_trainable or trainable
        if trainable is None:
            trainable = _load_pickle(
                os.path.join(local_dir, INTERNAL_DIR, "trainable.pkl"),
                "the trainable's",
                "pass the trainable: Tuner.restore(path, trainable)",
            )
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
            with _sigterm_as_interrupt():
                experiment.run()
        except KeyboardInterrupt as exc:
            how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            print(
                f"\nkubetune: {how}; every trial process was stopped. Continue with"
                f" Tuner.restore({experiment.uri!r}, trainable) or"
                f" `kubetune run --resume ...`.",
                file=sys.stderr,
            )
            raise
        finally:
            experiment.close()
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


class Terminated(KeyboardInterrupt):
    """The driver got SIGTERM: handled as Ctrl-C is (trials stopped, state saved)."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the shutdown is under way
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _load_pickle(path: str, what: str, hint: str) -> Any:
    import cloudpickle

    try:
        with open(path, "rb") as f:
            return cloudpickle.load(f)
    except FileNotFoundError:
        raise StateFileError(f"{path} is missing ({what} saved objects): {hint}") from None
    except Exception as exc:  # truncated, not a pickle, or a class that no longer imports
        raise StateFileError(
            f"{path}: {what} saved objects cannot be loaded ({type(exc).__name__}: {exc}): {hint}"
        ) from None
