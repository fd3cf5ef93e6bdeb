"""One local-mode run of a Tuner: storage, the engine, the backend, and the summary."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from kubetune.engine import EngineConfig, ExperimentEngine
from kubetune.engine import trial as trial_states
from kubetune.local.backend import LocalBackend, TrialTemplate
from kubetune.local.progress import Progress
from kubetune.local.resources import ResourcePool
from kubetune.local.result_grid import STATE_FILE, ResultGrid, TuneError, read_results
from kubetune.local.sync import DirectoryMirror
from kubetune.local.tuner import (
    INTERNAL_DIR,
    _default_storage,
    _trainable_name,
    experiment_name,
    now,
    static_resources,
)
from kubetune.storage import StorageError, open_storage
from kubetune.trial.output import RESULT_FILE
from kubetune.tune.helpers import store_parameters, trainable_resources
from kubetune.tune.resources import PlacementGroupFactory, resources_to_pgf
from kubetune.tune.trainable import Trainable

if TYPE_CHECKING:
    from kubetune.local.tuner import Tuner

STAGING = "~/kubetune_results/.staging"


def open_experiment_dir(path: str, must_exist: bool = False, full: bool = False) -> tuple[str, str]:
    """(local directory, URI) of an experiment; an s3:// experiment is staged locally: all of
    it with ``full`` (to continue it here), else without its checkpoints (to read results)."""
    if path.startswith("s3://"):
        bucket_and_key = path[len("s3://") :].rstrip("/")
        local = os.path.join(os.path.expanduser(STAGING), bucket_and_key)
        if must_exist:
            from kubetune.local.stored_state import stage_experiment

            stage_experiment(path, local)
            if full:
                DirectoryMirror(local, open_storage(path), "").pull()
        return local, path.rstrip("/")
    local = os.path.abspath(os.path.expanduser(path))
    if must_exist and not os.path.exists(os.path.join(local, STATE_FILE)):
        raise FileNotFoundError(f"{path} holds no kubetune experiment ({STATE_FILE} is missing)")
    return local, local


class LocalExperiment:
    def __init__(self, tuner: Tuner) -> None:
        self.tuner = tuner
        tc, rc = tuner.tune_config, tuner.run_config
        self._validate_trainable()  # before anything is written
        restore = tuner._restore
        if restore is not None:
            self.local_dir, self.uri = restore["local_dir"], restore["storage_uri"]
            self.name = os.path.basename(self.local_dir.rstrip("/"))
        else:
            self.name = experiment_name(tuner)
            root = rc.storage_path or _default_storage()
            self.uri = f"{root.rstrip('/')}/{self.name}" if root.startswith("s3://") else ""
            if self.uri:
                self.local_dir, _ = open_experiment_dir(self.uri)
            else:
                base = open_storage(root)  # creates it, or says why it cannot
                self.local_dir = base.local_path(self.name)
                self.uri = self.local_dir
        if restore is None and os.path.exists(os.path.join(self.local_dir, STATE_FILE)):
            raise FileExistsError(
                f"{self.uri} already holds an experiment: continue it with"
                f" Tuner.restore({self.uri!r}, trainable), or choose another RunConfig.name"
            )
        self.mirror: DirectoryMirror | None = None
        if self.uri.startswith("s3://"):
            self.mirror = DirectoryMirror(self.local_dir, open_storage(self.uri), "")
        self.internal = os.path.join(self.local_dir, INTERNAL_DIR)
        try:
            os.makedirs(self.internal, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot write the experiment to {self.local_dir}: {exc}") from exc
        if not os.access(self.local_dir, os.W_OK):
            raise StorageError(f"the experiment directory {self.local_dir} is not writable")
        self.metric, self.mode = tc.metric, tc.mode

    # -- preparation ------------------------------------------------------------------------
    def _validate_trainable(self) -> None:
        trainable = self.tuner.trainable
        ckpt = self.tuner.run_config.checkpoint_config
        is_class = isinstance(trainable, type) and issubclass(trainable, Trainable)
        if not is_class and (ckpt.checkpoint_frequency or ckpt.checkpoint_at_end):
            raise ValueError(
                "CheckpointConfig.checkpoint_frequency and checkpoint_at_end only work with the"
                " Class API (tune.Trainable); a function trainable saves checkpoints with"
                " session.report(..., checkpoint=...)"
            )
        pgf = static_resources(trainable)
        if pgf is None and is_class:
            try:
                pgf = trainable_resources(trainable, {})
            except Exception:
                pgf = None  # depends on the config: checked per trial
        if pgf is not None:
            ResourcePool().check_fits(pgf, f"each trial of {_trainable_name(trainable)}")

    def _write_pickles(self) -> str:
        import cloudpickle

        tuner = self.tuner
        params_dir = os.path.join(self.internal, "params")
        light = store_parameters(tuner.trainable, params_dir)
        path = os.path.join(self.internal, "trainable.pkl")
        try:
            data = cloudpickle.dumps(light)
        except Exception as exc:
            raise TypeError(
                f"the trainable cannot be serialised for the trial processes ({exc}); find the"
                " culprit with kubetune.tune.utils.diagnose_serialization(trainable)"
            ) from exc
        with open(path, "wb") as f:
            f.write(data)
        if tuner._restore is None:
            saved = {
                "param_space": tuner.param_space,
                "tune_config": tuner.tune_config,
                "run_config": tuner.run_config,
            }
            with open(os.path.join(self.internal, "tuner.pkl"), "wb") as f:
                f.write(cloudpickle.dumps(saved))
        return path

    def _engine_config(self) -> EngineConfig:
        tc = self.tuner.tune_config
        base = static_resources(self.tuner.trainable)
        return EngineConfig.from_run_config(
            self.tuner.run_config,
            param_space=self.tuner.param_space,
            metric=tc.metric,
            mode=tc.mode,
            num_samples=tc.num_samples,
            max_concurrent_trials=tc.max_concurrent_trials,
            time_budget_s=tc.time_budget_s,
            resources=(base or PlacementGroupFactory([{"CPU": 1}])).to_dict(),
            name=self.name,
            trainable_name=_trainable_name(self.tuner.trainable),
        )

    def _engine(self) -> tuple[ExperimentEngine, list[Any]]:
        tc, rc = self.tuner.tune_config, self.tuner.run_config
        restore = self.tuner._restore
        if restore is None:
            engine = ExperimentEngine(
                self._engine_config(),
                search_alg=tc.search_alg,
                scheduler=tc.scheduler,
                stopper=rc.stop,
                seed=tc.seed,
            )
            return engine, engine.start(now())
        with open(os.path.join(self.local_dir, STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
        engine = ExperimentEngine.from_json(
            state["engine"],
            search_alg=tc.search_alg,
            scheduler=tc.scheduler,
            stopper=rc.stop,
            config=self._engine_config(),
        )
        return engine, self._resume_actions(engine, restore)

    def _resume_actions(self, engine: ExperimentEngine, restore: dict[str, Any]) -> list[Any]:
        """Trials that were running when the driver stopped start again from their latest
        checkpoint; errored ones only when asked."""
        actions: list[Any] = []
        for trial_id in engine.trial_ids():
            # The saved state may be older than the result logs: replay what it has not seen
            # (with their checkpoints), so no result is lost and resumption starts from the
            # newest checkpoint.
            summary = engine.trial_summary(trial_id)
            rows = read_results(os.path.join(self.local_dir, summary["trial_name"], RESULT_FILE))
            for row in rows[summary["num_results"] :]:
                actions.extend(engine.on_result(trial_id, row, now()))
        for trial_id in engine.trial_ids():
            status = engine.trial_status(trial_id)
            if status in (trial_states.RUNNING, trial_states.PENDING):
                if restore["resume_unfinished"]:
                    actions.extend(engine.resume_trial(trial_id, now(), from_checkpoint=True))
                else:
                    actions.extend(engine.stop_trial(trial_id, now(), "not resumed"))
            elif status == trial_states.ERROR and (
                restore["resume_errored"] or restore["restart_errored"]
            ):
                actions.extend(
                    engine.resume_trial(
                        trial_id, now(), from_checkpoint=not restore["restart_errored"]
                    )
                )
        actions.extend(engine.on_tick(now()))
        return actions

    # -- running ----------------------------------------------------------------------------
    def run(self) -> None:
        trainable_pickle = self._write_pickles()
        tc, rc = self.tuner.tune_config, self.tuner.run_config
        ckpt = rc.checkpoint_config
        engine, initial = self._engine()
        stop = rc.stop if isinstance(rc.stop, dict) else None
        trainable = self.tuner.trainable

        def resources_for(config: dict[str, Any], base: dict[str, Any]) -> PlacementGroupFactory:
            return trainable_resources(trainable, config) or resources_to_pgf(
                PlacementGroupFactory.from_dict(base) if "bundles" in base else base
            )

        template = TrialTemplate(
            experiment_name=self.name,
            experiment_dir=self.local_dir,
            trainable_pickle=trainable_pickle,
            params_dir=os.path.join(self.internal, "params"),
            stop=stop,
            checkpoint_frequency=ckpt.checkpoint_frequency,
            checkpoint_at_end=bool(ckpt.checkpoint_at_end),
            chdir_to_trial_dir=tc.chdir_to_trial_dir,
            python_path=_python_path(),
            reuse_actors=bool(tc.reuse_actors)
            and isinstance(trainable, type)
            and issubclass(trainable, Trainable),
            resources_for=resources_for,
        )
        progress = Progress(
            rc.verbose, self.metric, self.mode, _expected(tc, self.tuner.param_space), self.name
        )

        def on_progress(backend: LocalBackend) -> None:
            progress.update(backend)
            if self.mirror is not None:
                self._push_throttled()

        backend = LocalBackend(
            engine,
            template,
            ResourcePool(),
            on_progress=on_progress,
            extra_state={
                "name": self.name,
                "uri": self.uri,
                "metric": self.metric,
                "mode": self.mode,
            },
        )
        self._last_push = 0.0
        try:
            backend.run(initial)
        finally:
            progress.close()
            if self.mirror is not None:
                self.mirror.push()
        finished = backend.finished
        if finished is not None and finished.status == "FAILED" and not rc.failure_config.fail_fast:
            raise TuneError(f"experiment failed: {finished.reason}")

    def _push_throttled(self) -> None:
        import time

        if self.mirror is not None and time.monotonic() - self._last_push > 2.0:
            self._last_push = time.monotonic()
            self.mirror.push()

    # -- results ----------------------------------------------------------------------------
    def result_grid(self) -> ResultGrid:
        return ResultGrid.from_directory(self.local_dir, experiment_path=self.uri)

    def print_summary(self, grid: ResultGrid) -> None:
        if not self.tuner.run_config.verbose:
            return
        errors = grid.num_errors
        lines = [
            f"kubetune: {len(grid)} trials, {grid.num_terminated} terminated, {errors} errored"
            f" ({self.uri})"
        ]
        if errors:
            first = next(r for r in grid if r.error is not None)
            first_line = str(first.error).strip().splitlines()[0]
            lines.append(f"  first error: {first_line}")
            lines.append(f"  traceback: {os.path.join(first.log_dir, 'error.txt')}")
            if errors == len(grid):
                lines.append("  every trial failed: fix the trainable and run again")
        if self.metric and self.mode and errors < len(grid):
            try:
                best = grid.get_best_result()
                value = (best.metrics or {}).get(self.metric)
                lines.append(f"  best {self.metric}={value} config={best.config}")
            except (RuntimeError, ValueError):
                pass
        print("\n".join(lines), file=sys.stderr if errors == len(grid) else sys.stdout)


def _expected(tc: Any, param_space: dict[str, Any]) -> int | None:
    """How many trials the experiment will have, when that is known up front."""
    if not tc.num_samples or tc.num_samples < 0:
        return None
    if tc.search_alg is not None:
        return int(tc.num_samples)
    from kubetune.search.variant_generator import count_grid

    return int(tc.num_samples) * max(1, count_grid(param_space))


def _python_path() -> list[str]:
    paths = [os.getcwd()]
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file:
        paths.append(os.path.dirname(os.path.abspath(main_file)))
    for entry in sys.path:
        if entry and os.path.isdir(entry) and entry not in paths:
            paths.append(entry)
    return paths
