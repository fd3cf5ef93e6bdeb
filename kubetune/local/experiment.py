"""One local-mode run of a Tuner: storage, the engine, the backend, and the summary."""

from __future__ import annotations

import itertools
import os
import sys
from typing import Any

from kubetune.engine import EngineConfig, ExperimentEngine, ExperimentFinished
from kubetune.engine import trial as trial_states
from kubetune.local import earlier_runs
from kubetune.local.backend import LocalBackend
from kubetune.local.backend_trial import TrialTemplate
from kubetune.local.callbacks import as_engine, attach_callbacks, finish_callbacks
from kubetune.local.common import (
    INTERNAL_DIR,
    TunerLike,
    default_storage,
    expected_trials,
    experiment_name,
    now,
    static_resources,
    trainable_name,
)
from kubetune.local.durability import (
    Ballast,
    disk_full,
    earlier_trial_dirs,
    fall_back_to_intact_checkpoints,
    note,
)
from kubetune.local.lock import ExperimentLock
from kubetune.local.naming import trial_namer
from kubetune.local.progress import Progress
from kubetune.local.resources import ResourcePool
from kubetune.local.result_grid import STATE_FILE, ResultGrid, TuneError, read_results
from kubetune.local.state_file import StateFileError, load_state
from kubetune.local.sync import DirectoryMirror
from kubetune.storage import StorageError, open_storage
from kubetune.trial.output import RESULT_FILE
from kubetune.tune.constants import extract_constants
from kubetune.tune.helpers import store_parameters, trainable_resources
from kubetune.tune.resources import PlacementGroupFactory, resources_to_pgf
from kubetune.tune.trainable import Trainable

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
    def __init__(self, tuner: TunerLike) -> None:
        self.tuner = tuner
        tc, rc = tuner.tune_config, tuner.run_config
        self._validate_trainable()  # before anything is written
        restore = tuner._restore
        if restore is not None:
            self.local_dir, self.uri = restore["local_dir"], restore["storage_uri"]
            self.name = os.path.basename(self.local_dir.rstrip("/"))
        else:
            default = experiment_name(tuner)
            root = rc.storage_path or default_storage()
            for n in itertools.count(1):
                # a default name is per second: a second run in the same second gets _2, ...
                self.name = default if n == 1 or rc.name else f"{default}_{n}"
                self.uri = f"{root.rstrip('/')}/{self.name}" if root.startswith("s3://") else ""
                if self.uri:
                    self.local_dir, _ = open_experiment_dir(self.uri)
                else:
                    base = open_storage(root)  # creates it, or says why it cannot
                    self.local_dir = base.local_path(self.name)
                    self.uri = self.local_dir
                if rc.name or not os.path.exists(self.local_dir):
                    break
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
        # constants JSON cannot hold (a Checkpoint, a model) go to the trials as pickles
        self.param_space = extract_constants(
            tuner.param_space, os.path.join(self.internal, "params")
        )
        self.metric, self.mode = tc.metric, tc.mode
        self.trial_id_prefix: str | None = None  # a fresh one after an earlier run of this name
        # one driver per experiment, from here until close()
        self.lock = ExperimentLock(self.internal, self.uri)
        self.lock.acquire()
        try:
            self._check_fresh_directory()
        except BaseException:
            self.lock.release()
            raise

    def _check_fresh_directory(self) -> None:
        """A new run starts in a directory no other driver holds (checked under the lock).
        An earlier run's state is set aside and its trial folders kept (earlier_runs.py)."""
        if self.tuner._restore is not None:
            return
        keys = earlier_runs.earlier_state_keys(self.local_dir, self.uri)
        if keys:
            self.trial_id_prefix = earlier_runs.fresh_prefix(self.name, self.local_dir)
            kept = earlier_runs.set_aside(self.local_dir, self.uri, keys)
            print(
                f"kubetune: {self.uri} holds an earlier run named {self.name!r}: its state is"
                f" kept in {kept}/ and its trial folders stay; this run's trials go beside them"
                f" (as in Ray). Tuner.restore({self.uri!r}, trainable) continues this run.",
                file=sys.stderr,
            )
            return
        earlier = earlier_trial_dirs(self.local_dir)
        if earlier:
            raise FileExistsError(
                f"{self.uri} holds the trial directories of an earlier run ({len(earlier)}:"
                f" {earlier[0]}, ...) but no {STATE_FILE}: a new run would"
                f" append into them. Rebuild the state with `kubetune repair {self.uri}` and"
                " continue it with Tuner.restore, or choose another RunConfig.name"
            )

    def close(self) -> None:
        """Let another driver have the experiment."""
        self.lock.release()

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
            ResourcePool().check_fits(pgf, f"each trial of {trainable_name(trainable)}")

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
        _atomic_write_bytes(path, data)  # a concurrent Tuner.restore never reads half a file
        if tuner._restore is None:
            saved = {
                "param_space": tuner.param_space,
                "tune_config": tuner.tune_config,
                "run_config": tuner.run_config,
            }
            _atomic_write_bytes(os.path.join(self.internal, "tuner.pkl"), cloudpickle.dumps(saved))
        return path

    def _engine_config(self) -> EngineConfig:
        config = engine_config(self.tuner, self.name, self.param_space)
        config.trial_id_prefix = self.trial_id_prefix
        return config

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
            engine.trial_namer = trial_namer(tc, trainable_name(self.tuner.trainable))
            return engine, engine.start(now())
        state = load_state(self.local_dir, need_engine=True)
        dirnames = {t["trial_id"]: t["dirname"] for t in state.get("trials", [])}
        for line in fall_back_to_intact_checkpoints(state["engine"], self.local_dir, dirnames):
            note(line)
        try:
            engine = ExperimentEngine.from_json(
                state["engine"],
                search_alg=tc.search_alg,
                scheduler=tc.scheduler,
                stopper=rc.stop,
                config=self._engine_config(),
            )
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            path = os.path.join(self.local_dir, STATE_FILE)
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise StateFileError(
                f"{path}: engine: cannot rebuild the experiment from it ({what}); resume it"
                " with the same kinds of searcher, scheduler and stopper it was started with,"
                f" or rebuild the state with `kubetune repair {self.local_dir}`"
            ) from None
        engine.trial_namer = trial_namer(tc, trainable_name(self.tuner.trainable))
        self._state_finished = state.get("finished")
        return engine, self._resume_actions(engine, restore)

    def _nothing_to_resume(self, engine: ExperimentEngine, restore: dict[str, Any]) -> bool:
        """A finished experiment with no trial left to continue (or to revive on request)."""
        if not engine.is_finished():
            return False
        revive = restore["resume_errored"] or restore["restart_errored"]
        for trial_id in engine.trial_ids():
            status = engine.trial_status(trial_id)
            if status not in (trial_states.TERMINATED, trial_states.ERROR):
                return False
            if status == trial_states.ERROR and revive:
                return False
        return True

    def _resume_actions(self, engine: ExperimentEngine, restore: dict[str, Any]) -> list[Any]:
        """Trials that were running when the driver stopped start again from their latest
        checkpoint; errored ones only when asked."""
        actions: list[Any] = []
        for trial_id in engine.trial_ids():
            # The saved state may be older than the result logs: replay what it has not seen
            # (with their checkpoints), so no result is lost and resumption starts from the
            # newest checkpoint.
            summary = engine.trial_summary(trial_id)
            rows = read_results(os.path.join(self.local_dir, summary["trial_dirname"], RESULT_FILE))
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
        tc, rc = self.tuner.tune_config, self.tuner.run_config
        ckpt = rc.checkpoint_config
        restore = self.tuner._restore
        if restore is None:  # pickled before the engine adopts the searcher and scheduler
            trainable_pickle = self._write_pickles()
        engine, initial = self._engine()
        if restore is not None and self._nothing_to_resume(engine, restore):
            finished = engine.finished
            how = f" ({finished.status.lower()}: {finished.reason})" if finished else ""
            note(
                f"{self.uri} has finished{how}; nothing to resume, its state is left as it is"
                " (resume_errored=True / --resume-errored retries its errored trials)"
            )
            return
        if restore is not None:
            trainable_pickle = self._write_pickles()
        observer = attach_callbacks(
            self, engine, initial, expected_trials(tc, self.tuner.param_space)
        )
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
            0 if rc.progress_reporter is not None else rc.verbose,
            self.metric,
            self.mode,
            expected_trials(tc, self.tuner.param_space),
            self.name,
        )

        def on_progress(backend: LocalBackend) -> None:
            progress.update(backend)
            if self.mirror is not None:
                self._push_throttled()

        backend = LocalBackend(
            as_engine(engine, observer),
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
        ballast = Ballast(self.internal)
        try:
            ballast.create()
        except OSError as exc:
            raise StorageError(f"cannot write the experiment to {self.local_dir}: {exc}") from None
        try:
            backend.run(initial)
        except OSError as exc:
            if not disk_full(exc):
                raise
            ballast.release()
            self._stop_on_full_disk(backend, exc)
        finally:
            ballast.release()
            progress.close()
            finish_callbacks(self, observer)
            if self.mirror is not None:
                self.mirror.push()
        finished = backend.finished
        if finished is not None and finished.status == "FAILED" and not rc.failure_config.fail_fast:
            raise TuneError(f"experiment failed: {finished.reason}")

    def _stop_on_full_disk(self, backend: LocalBackend, exc: OSError) -> None:
        """The trials are stopped already; save the state (as FAILED) in the space held back."""
        where = f" writing {exc.filename}" if exc.filename else ""
        reason = f"no space left on the device{where} ({exc.strerror or exc})"
        backend.finished = ExperimentFinished("FAILED", reason, None)
        try:
            backend.save_state(force=True)
            saved = "its state is saved (as FAILED)"
        except OSError:
            saved = "its state could not be saved: the last saved one is kept"
        raise StorageError(
            f"{self.uri}: the experiment stopped: {reason}; {saved}. Free some space, then"
            f" continue it with Tuner.restore({self.uri!r}, trainable) or `kubetune run"
            " --resume`"
        ) from None

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


def engine_config(
    tuner: TunerLike, name: str, param_space: dict[str, Any] | None = None
) -> EngineConfig:
    """``param_space`` is the tuner's with non-JSON constants already extracted, if any."""
    tc = tuner.tune_config
    base = static_resources(tuner.trainable)
    return EngineConfig.from_run_config(
        tuner.run_config,
        param_space=tuner.param_space if param_space is None else param_space,
        metric=tc.metric,
        mode=tc.mode,
        num_samples=tc.num_samples,
        max_concurrent_trials=tc.max_concurrent_trials,
        time_budget_s=tc.time_budget_s,
        resources=(base or PlacementGroupFactory([{"CPU": 1}])).to_dict(),
        name=name,
        trainable_name=trainable_name(tuner.trainable),
    )


def _atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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
