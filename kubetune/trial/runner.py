"""Runs one trial: loads the trainable, feeds it its config, writes its output directory.

The runner is the same in local mode (a subprocess of the driver) and in a pod (the trial
container). It evaluates the stop criteria itself, and at the scheduler's decision points it
waits for a verdict through the gate (see ``kubetune.trial.gate``), so a trial never runs past a
milestone while the scheduler decides.

Its parts: ``loading`` (the trainable), ``decisions`` (stop criteria, the gate's verdicts),
``ending`` (``TrialExit``, signals, error.txt and the done marker).
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import os
import signal
import traceback
from typing import Any

from kubetune.air import session as _session
from kubetune.air.checkpoint import Checkpoint
from kubetune.train._context import current_place, load_rendezvous
from kubetune.trial import exit_codes
from kubetune.trial.decisions import RunnerDecisions
from kubetune.trial.ending import RunnerEnding, TrialExit, _die_with_parent
from kubetune.trial.gate import DecisionTracker, Gate, open_gate
from kubetune.trial.loading import TrainableLoadError, load_trainable
from kubetune.trial.output import OutputWriter, encode_result, json_safe
from kubetune.trial.spec import TrialSpec
from kubetune.trial.stopping import STOP_NOW_SIGNAL, StopWindow, stop_window_s
from kubetune.tune._autofill import AutoFiller
from kubetune.tune.constants import has_markers, resolve_constants
from kubetune.tune.helpers import PARAMS_ENV
from kubetune.tune.resources import DEFAULT_RESOURCES, PlacementGroupFactory
from kubetune.tune.result import CHECKPOINT_DIR_NAME, DONE, EXPERIMENT_TAG, SHOULD_CHECKPOINT
from kubetune.tune.trainable import TRIAL_META_FILE, Trainable, TrialInfo


class _FunctionSession:
    """The session a Function-API trainable reports through."""

    def __init__(self, runner: TrialRunner, restore: Checkpoint | None) -> None:
        self._runner = runner
        self._restore = restore
        spec = runner.spec
        self.trial_name = spec.trial_name or spec.trial_id
        self.trial_id = spec.trial_id
        self.experiment_name = spec.experiment_name
        self.trial_dir = spec.trial_dir or spec.out_dir

    def report(self, metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None:
        self._runner.record(metrics, checkpoint)

    def get_checkpoint(self) -> Checkpoint | None:
        return self._restore

    def get_trial_resources(self) -> PlacementGroupFactory:
        return self._runner.resources

    def is_stopping(self) -> bool:
        return self._runner.stopping


class TrialRunner(RunnerDecisions, RunnerEnding):
    def __init__(
        self, spec: TrialSpec, gate: Gate | None = None, reused: Trainable | None = None
    ) -> None:
        if has_markers(spec.config):  # constants JSON cannot hold, stored by the driver
            spec = dataclasses.replace(spec, config=resolve_constants(spec.config, spec.params_dir))
        self.spec = spec
        self.instance: Trainable | None = reused  # a Class-API trainable kept for reuse
        self.writer = OutputWriter(spec.out_dir, spec.checkpoint_index_start)
        self.resources = PlacementGroupFactory.from_dict(spec.resources or DEFAULT_RESOURCES)
        self.config_json = json_safe(spec.config)
        self.filler = AutoFiller(spec.trial_id, self.config_json)
        self.points = DecisionTracker(spec.decision_points)
        self.gate: Gate | None = gate
        self.stopper: Any = None
        self.seq = 0
        self.last_checkpoint: str | None = None
        self.stop_reason = ""
        self._in_write = False
        self._term_pending = False
        self.stopping = False  # SIGTERM came: reach a checkpoint and exit (see stopping.py)
        self._stop_now = False  # local mode's own stop: no checkpoint, at once
        self._at_gate = False
        self._window: StopWindow | None = None
        self._window_s = stop_window_s(spec.termination_grace_s)
        self._tag = spec.experiment_tag or spec.trial_id
        # a worker of a multi-worker trial other than rank 0: its reports are dropped (rank
        # 0's are the trial's, as in Ray) and it asks no decisions; it ends when rank 0 does
        self.follower = current_place().world_rank > 0

    # -- entry point ------------------------------------------------------------------------
    def run(self) -> int:
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        previous_now = signal.signal(STOP_NOW_SIGNAL, self._on_stop_now)
        code = exit_codes.ERRORED
        try:
            code = self._run()
        except TrialExit as stop:
            code = stop.code
            self.stop_reason = stop.reason
        except BaseException as exc:  # user code failed: record it, keep everything written
            self._record_error(_format_error(self.spec.trial_id, exc))
            self.stop_reason = f"{type(exc).__name__}: {exc}"
            code = exit_codes.ERRORED
            if isinstance(exc, KeyboardInterrupt):
                code = exit_codes.TERMINATED
            elif _disk_full(exc):
                code = exit_codes.DISK_FULL
        finally:
            if self._window is not None:
                self._window.close()
            signal.signal(signal.SIGTERM, previous)
            signal.signal(STOP_NOW_SIGNAL, previous_now)
            _session._set_session(None)
            self._finish(code)
        return code

    def _run(self) -> int:
        spec = self.spec
        _die_with_parent()
        if spec.params_dir:
            os.environ[PARAMS_ENV] = spec.params_dir
        load_rendezvous()  # a worker pod learns rank 0's address from its sidecar
        if self.gate is None and not self.follower:
            self.gate = open_gate(spec.gate)
        if spec.stopper_pickle:
            import cloudpickle

            with open(spec.stopper_pickle, "rb") as f:
                self.stopper = cloudpickle.load(f)
        trainable = load_trainable(spec)
        self.writer.write_params(self.config_json)
        if spec.chdir_to_trial_dir and spec.trial_dir:
            os.environ.setdefault("TUNE_ORIG_WORKING_DIR", os.getcwd())
            os.makedirs(spec.trial_dir, exist_ok=True)
            os.chdir(spec.trial_dir)
        if spec.restore_from is not None and not os.path.isdir(spec.restore_from):
            raise FileNotFoundError(
                f"restore_from: checkpoint directory does not exist: {spec.restore_from!r}"
            )
        if isinstance(trainable, type) and issubclass(trainable, Trainable):
            return self._run_class(trainable)
        if callable(trainable):
            return self._run_function(trainable)
        raise TrainableLoadError(
            f"the trainable {spec.trainable or spec.trainable_pickle!r} is neither a function"
            f" nor a tune.Trainable subclass (got {type(trainable).__name__})"
        )

    # -- Function API -----------------------------------------------------------------------
    def _run_function(self, fn: Any) -> int:
        restore = None
        if self.spec.restore_from is not None:
            restore = Checkpoint.from_directory(self.spec.restore_from)
            meta = _read_trial_meta(self.spec.restore_from)
            self.filler.restore_counters(
                int(meta.get("training_iteration", 0)), float(meta.get("time_total_s", 0.0))
            )
        _session._set_session(_FunctionSession(self, restore))
        self.filler.mark_start()
        returned = fn(copy.deepcopy(self.spec.config))
        if returned is not None:
            if not isinstance(returned, dict):
                raise TypeError(
                    "the trainable function returned a"
                    f" {type(returned).__name__}; return a dict of final metrics or nothing"
                )
            self.record(returned, None, final=True)
        return exit_codes.FINISHED

    def record(
        self, metrics: dict[str, Any], checkpoint: Checkpoint | None, *, final: bool = False
    ) -> None:
        """One ``session.report``: checkpoint first, then the result line, then decisions."""
        if self.follower:
            return
        if checkpoint is not None:
            if not isinstance(checkpoint, Checkpoint):
                raise TypeError(
                    f"report(checkpoint=...) expects a Checkpoint, got {type(checkpoint).__name__}"
                )
            if checkpoint.path is not None and not os.path.isdir(checkpoint.path):
                raise FileNotFoundError(
                    f"report(): checkpoint directory does not exist: {checkpoint.path!r}"
                )
        result = self.filler.fill(metrics, commit=False)
        if final:
            result[DONE] = True
        tmp = name = None
        if checkpoint is not None:
            tmp, name = self.writer.reserve_checkpoint()
        result[CHECKPOINT_DIR_NAME] = name
        result[EXPERIMENT_TAG] = self._tag
        stop_reason = self._should_stop(result)
        if stop_reason:
            result[DONE] = True  # as Ray marks the result that met a stop criterion
        line = encode_result(result)  # a bad value raises here, before anything is written
        self._in_write = True
        try:
            if checkpoint is not None and tmp is not None and name is not None:
                checkpoint._move_to(tmp)
                _write_trial_meta(tmp, result)
                self.writer.commit_checkpoint(tmp, name)
                self.last_checkpoint = name
            self.writer.append(line, result)
            self.filler.commit(result)
        finally:
            self._in_write = False
        self._after_write(result, stop_reason, final)

    def _after_write(self, result: dict[str, Any], stop_reason: str | None, final: bool) -> None:
        if self._term_pending:
            raise TrialExit(exit_codes.TERMINATED, "SIGTERM")
        if final:
            return
        if stop_reason:
            raise TrialExit(exit_codes.STOPPED, stop_reason)
        if result.get(DONE):
            raise TrialExit(exit_codes.FINISHED, "done")
        self._maybe_ask(result)

    # -- Class API --------------------------------------------------------------------------
    def _run_class(self, cls: type[Trainable]) -> int:
        spec = self.spec
        info = TrialInfo(
            trial_id=spec.trial_id,
            trial_name=spec.trial_name or spec.trial_id,
            experiment_name=spec.experiment_name,
            logdir=spec.trial_dir or spec.out_dir,
            resources=self.resources,
        )
        _session._set_session(_FunctionSession(self, None))
        trainable = self.instance
        if trainable is not None:
            trainable._set_trial_info(info)
            if not trainable.reset(copy.deepcopy(spec.config)):
                # Ray's rule: a trainable that cannot reset gets a new process
                self.instance = None
                trainable.stop()
                return exit_codes.RESET_REFUSED
        else:
            trainable = cls(config=copy.deepcopy(spec.config), trial_info=info)
        trainable._filler.config = self.config_json
        keep = False
        try:
            if spec.restore_from is not None:
                trainable.restore(spec.restore_from)
            code = self._class_loop(trainable)
            keep = spec.reuse and code in (exit_codes.FINISHED, exit_codes.STOPPED)
            return code
        except TrialExit as exit_:
            keep = spec.reuse and exit_.code == exit_codes.STOPPED
            raise
        finally:
            if keep:
                self.instance = trainable
            else:
                self.instance = None
                trainable.stop()

    def _class_loop(self, trainable: Trainable) -> int:
        spec = self.spec
        freq = spec.checkpoint_frequency
        while True:
            result = trainable.train()
            result[EXPERIMENT_TAG] = self._tag
            stop_reason = self._should_stop(result)
            if stop_reason:
                result[DONE] = True  # as Ray marks the result that met a stop criterion
            ends = bool(stop_reason) or bool(result.get(DONE))
            at_decision = not ends and self.points.due(result)
            wants_checkpoint = (
                bool(result.get(SHOULD_CHECKPOINT))
                or (freq > 0 and result["training_iteration"] % freq == 0)
                or (ends and spec.checkpoint_at_end)
                # PBT exploits copy a top trial's state at perturbation points: have it saved
                # then, as Ray saves the top quantile's trials before exploiting
                or (at_decision and self.points.wants_checkpoints)
                # SIGTERM during this step: its result goes with a checkpoint to resume from
                or (self._saves_on_stop() and _checkpointable(trainable))
            )
            tmp = name = None
            if wants_checkpoint:
                tmp, name = self.writer.reserve_checkpoint()
            result[CHECKPOINT_DIR_NAME] = name
            line = encode_result(result)
            self._in_write = True
            try:
                if tmp is not None and name is not None:
                    trainable.save(tmp)
                    self.writer.commit_checkpoint(tmp, name)
                    self.last_checkpoint = name
                self.writer.append(line, result)
                self.filler.commit(result)
            finally:
                self._in_write = False
            if stop_reason:
                raise TrialExit(exit_codes.STOPPED, stop_reason)
            if result.get(DONE):
                return exit_codes.FINISHED
            try:
                if self._term_pending:
                    raise TrialExit(exit_codes.TERMINATED, "SIGTERM")
                self._maybe_ask(result, at_decision)
            except TrialExit as exit_:
                needs_state = (
                    exit_.code in (exit_codes.PAUSED, exit_codes.RESTART)
                    or (exit_.code == exit_codes.STOPPED and spec.checkpoint_at_end)
                    or (
                        exit_.code == exit_codes.TERMINATED
                        and self._saves_on_stop()
                        and _checkpointable(trainable)
                    )
                )
                if needs_state and name is None:
                    self._save_class_checkpoint(trainable)
                raise

    def _save_class_checkpoint(self, trainable: Trainable) -> None:
        tmp, name = self.writer.reserve_checkpoint()
        self._in_write = True
        try:
            trainable.save(tmp)
            self.writer.commit_checkpoint(tmp, name)
            self.last_checkpoint = name
        finally:
            self._in_write = False


def _checkpointable(trainable: Trainable) -> bool:
    """Whether the trainable implements save_checkpoint (the base class only raises)."""
    return type(trainable).save_checkpoint is not Trainable.save_checkpoint


def _read_trial_meta(directory: str) -> dict[str, Any]:
    try:
        with open(os.path.join(directory, TRIAL_META_FILE)) as f:
            data = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_trial_meta(directory: str, result: dict[str, Any]) -> None:
    with open(os.path.join(directory, TRIAL_META_FILE), "w") as f:
        json.dump(
            {
                "training_iteration": result["training_iteration"],
                "time_total_s": result["time_total_s"],
                "saved_as": "directory",
            },
            f,
        )


def _disk_full(exc: BaseException | None) -> bool:
    """Whether a full disk or quota caused ``exc`` (directly, or as its cause or context)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _format_error(trial_id: str, exc: BaseException) -> str:
    body = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"Trial {trial_id} failed: {type(exc).__name__}: {exc}\n\n{body}"


def run_spec(spec: TrialSpec) -> int:
    """Run the trial; with ``reuse``, then run the trials the driver hands over next."""
    runner = TrialRunner(spec)
    code = runner.run()
    try:
        while runner.instance is not None and runner.gate is not None:
            runner.seq += 1
            reply = runner.gate.ask(
                {
                    "seq": runner.seq,
                    "event": "next",
                    "trial_id": runner.spec.trial_id,
                    "exit_code": code,
                }
            )
            if reply["action"] != "next":
                break
            next_spec = TrialSpec.from_dict(reply["spec"])
            next_spec.reuse = True
            runner = TrialRunner(next_spec, gate=runner.gate, reused=runner.instance)
            code = runner.run()
    finally:
        if runner.instance is not None:
            runner.instance.stop()
        if runner.gate is not None:
            runner.gate.close()
    return code
