"""The local backend's base: the engine's actions carried out, trial paths, the state file.

``LocalBackend`` (``kubetune.local.backend``) sets up the state declared here and runs the loop;
``backend_launch`` starts trial processes and ``backend_follow`` follows them.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import time
from collections import deque
from typing import Any

from kubetune.engine import (
    Action,
    CheckpointRef,
    CreateTrial,
    DeleteCheckpoint,
    ExperimentEngine,
    ExperimentFinished,
    PauseTrial,
    RestartTrial,
    ResumeTrial,
    StopTrial,
)
from kubetune.local.backend_trial import LocalTrial, TrialTemplate
from kubetune.local.forkserver import ForkServer
from kubetune.local.reaper import Reaper
from kubetune.local.resources import ResourcePool
from kubetune.local.result_grid import STATE_FILE
from kubetune.local.state_file import trial_entries

STATE_SAVE_INTERVAL_S = 0.5


class BackendActions:
    """The backend's base: carries out the engine's actions and saves the state file."""

    # the backend's state, set up by LocalBackend.__init__ and shared by every part
    engine: ExperimentEngine
    template: TrialTemplate
    pool: ResourcePool
    extra_state: dict[str, Any]
    trials: dict[str, LocalTrial]
    queue: deque[str]
    running: dict[str, LocalTrial]
    selector: selectors.BaseSelector
    finished: ExperimentFinished | None
    results_seen: int
    forkserver: ForkServer | None
    reaper: Reaper | None
    _dirty: bool
    _last_save: float
    _specs_dir: str
    _saved_ids: set[str]

    # -- engine actions -------------------------------------------------------------------
    def apply(self, actions: list[Action] | Any) -> None:
        for action in actions:
            self._dirty = True
            if isinstance(action, CreateTrial):
                trial = LocalTrial(
                    trial_id=action.trial_id,
                    name=action.trial_name,
                    dir_name=self.engine.trials[action.trial_id].dirname or "",
                    tag=action.experiment_tag,
                    config=action.config,
                    base_resources=action.resources,
                    restore_from=action.restore_from,
                    decision_points=action.decision_points.to_dict(),
                )
                self.trials[trial.trial_id] = trial
                self.queue.append(trial.trial_id)
            elif isinstance(action, ResumeTrial):
                trial = self.trials[action.trial_id]
                if action.resources is not None:
                    trial.new_resources = action.resources
                trial.config = action.config
                trial.restore_from = action.restore_from
                trial.decision_points = action.decision_points.to_dict()
                trial.ended_by_engine = None
                self._queue_or_relaunch(trial)
            elif isinstance(action, RestartTrial):
                trial = self.trials[action.trial_id]
                trial.config = action.new_config
                trial.restore_from = action.restore_from
                trial.decision_points = action.decision_points.to_dict()
                if trial.proc is not None:
                    trial.ended_by_engine = "restart"
                    self._end_running(trial, "restart")
                self._queue_or_relaunch(trial)
            elif isinstance(action, StopTrial):
                self._stop(action.trial_id, "stop")
            elif isinstance(action, PauseTrial):
                self._stop(action.trial_id, "pause")
            elif isinstance(action, DeleteCheckpoint):
                owner = self.trials.get(action.trial_id)
                if owner is not None:
                    path = os.path.join(self.trial_dir(owner), action.checkpoint_dir_name)
                    shutil.rmtree(path, ignore_errors=True)
            elif isinstance(action, ExperimentFinished):
                self.finished = action

    def _queue_or_relaunch(self, trial: LocalTrial) -> None:
        if trial.proc is not None:
            trial.relaunch = True  # start again once the current process has exited
        elif trial.trial_id not in self.queue:
            self.queue.append(trial.trial_id)

    def _stop(self, trial_id: str, how: str) -> None:
        trial = self.trials.get(trial_id)
        if trial is None:
            return
        if trial.trial_id in self.queue:
            self.queue.remove(trial.trial_id)
        trial.relaunch = False
        if trial.proc is not None:
            trial.ended_by_engine = how
            if not trial.self_ending:
                self._end_running(trial, how)

    def _end_running(self, trial: LocalTrial, action: str) -> None:
        """Answer a waiting decision with ``action``; otherwise end the process now."""
        assert trial.proc is not None
        if trial.waiting:
            for request in trial.waiting:
                trial.proc.answer(request["seq"], action, "scheduler")
            trial.waiting.clear()
        else:
            trial.proc.terminate(action)

    # -- paths ------------------------------------------------------------------------------
    def trial_dir(self, trial: LocalTrial) -> str:
        return os.path.join(self.template.experiment_dir, trial.dirname)

    def checkpoint_path(self, ref: CheckpointRef) -> str:
        owner = self.trials.get(ref.trial_id)
        dirname = owner.dirname if owner is not None else ref.trial_id
        return os.path.join(self.template.experiment_dir, dirname, ref.checkpoint_dir_name)

    # -- state ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        trials = trial_entries(self.engine)
        return {
            "format": 1,
            "updated": time.time(),
            "finished": self.finished.to_dict() if self.finished else None,
            "engine": self.engine.to_state(),
            "trials": trials,
            **self.extra_state,
        }

    def save_state(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self._dirty or now - self._last_save < STATE_SAVE_INTERVAL_S):
            return
        self._last_save = now
        self._dirty = False
        path = os.path.join(self.template.experiment_dir, STATE_FILE)
        tmp = f"{path}.tmp"
        ids = set(self.engine.trial_ids())
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.state(), f)
            os.replace(tmp, path)
        except BaseException:
            self._dirty = True
            try:
                os.unlink(tmp)  # a full disk: give back what the half-written copy took
            except OSError:
                pass
            raise
        self._saved_ids = ids
