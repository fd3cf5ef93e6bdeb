"""The callback driver: Ray's hooks fired from engine events, in the process that runs fit().

Two parts, so any backend can feed it:

* :class:`CallbackDispatcher` knows nothing of processes or pods. It is told what happened —
  ``trial_added``, ``trial_started``, ``trial_result``, ``trial_checkpoint``, ``trial_ended``
  (with the engine's status), ``step``, ``experiment_end`` — keeps one
  :class:`~kubetune.tune.experiment.Trial` per trial, and calls the callbacks in Ray's order.
  Anything that can replay those events can drive it: local mode does it live, and a
  process that follows a cluster experiment can feed it the TuneTrials' status and the
  ``result.json`` lines it reads from storage.
* :class:`EngineObserver` wraps an :class:`~kubetune.engine.ExperimentEngine` with the same
  methods, and after each event tells the dispatcher what that event did (from the actions
  it returned and the statuses of the trials they name). A backend that drives the engine
  needs no other change: local mode hands the backend the observer instead of the engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubetune.air.checkpoint import Checkpoint
from kubetune.engine import (
    CreateTrial,
    ExperimentEngine,
    PauseTrial,
    RestartTrial,
    ResumeTrial,
    StopTrial,
)
from kubetune.tune.callback import Callback, CallbackList
from kubetune.tune.experiment.trial import Trial

ENDED = (Trial.TERMINATED, Trial.ERROR)


def evaluated_params(param_space: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The sampled part of ``config``: one ``a/b`` key per search-space entry (Ray's
    ``Trial.evaluated_params``), constants left out."""
    from kubetune.search.sample import Domain, is_grid_marker

    out: dict[str, Any] = {}

    def walk(space: Any, conf: Any, prefix: str) -> None:
        if not isinstance(space, Mapping) or not isinstance(conf, Mapping):
            return
        for key, value in space.items():
            if key not in conf:
                continue
            path = f"{prefix}{key}"
            if isinstance(value, Domain) or is_grid_marker(value):
                out[path] = conf[key]
            elif isinstance(value, Mapping):
                walk(value, conf[key], f"{path}/")

    walk(param_space, config, "")
    return out


class CallbackDispatcher:
    """Calls ``callbacks`` at Ray's hook points from the events it is told about."""

    def __init__(
        self,
        callbacks: Iterable[Callback],
        experiment_path: str,
        trainable_name: str = "trainable",
        param_space: Mapping[str, Any] | None = None,
        checkpoint_for: Callable[[str, str], Checkpoint] | None = None,
    ) -> None:
        """``checkpoint_for(trial_id, checkpoint_dir_name)`` makes the ``Checkpoint`` hooks
        receive (default: the folder under the trial's directory on this machine)."""
        self.checkpoint_for = checkpoint_for
        self.callbacks = (
            callbacks if isinstance(callbacks, CallbackList) else CallbackList(list(callbacks))
        )
        self.experiment_path = experiment_path
        self.trainable_name = trainable_name
        self.param_space = dict(param_space or {})
        self.trials: list[Trial] = []  # the list every hook receives, updated in place
        self.iteration = 0
        self._by_id: dict[str, Trial] = {}
        self._ended: set[str] = set()  # trials whose end hook has run
        self._checkpoints: dict[str, str] = {}  # trial id -> newest checkpoint reported
        self._in_step = False
        self._finished = False

    # -- experiment ---------------------------------------------------------------------------
    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        time_budget_s: float | None = None,
    ) -> None:
        info: dict[str, Any] = {
            "stop": stop,
            "num_samples": num_samples,
            "total_num_samples": total_num_samples,
        }
        if time_budget_s is not None:
            info["time_budget_s"] = time_budget_s
        self.callbacks.setup(**info)

    def step(self) -> None:
        """One step of the driver loop ends and the next begins."""
        self._end_step()
        self._in_step = True
        self.callbacks.on_step_begin(iteration=self.iteration, trials=self.trials)

    def _end_step(self) -> None:
        if self._in_step:
            self._in_step = False
            self.iteration += 1
            self.callbacks.on_step_end(iteration=self.iteration, trials=self.trials)

    def experiment_end(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._end_step()
        self.callbacks.on_experiment_end(trials=self.trials)

    # -- trials -------------------------------------------------------------------------------
    def trial(self, trial_id: str) -> Trial | None:
        return self._by_id.get(trial_id)

    def trial_added(
        self,
        trial_id: str,
        name: str,
        experiment_tag: str = "",
        config: dict[str, Any] | None = None,
        status: str = Trial.PENDING,
        last_result: dict[str, Any] | None = None,
    ) -> Trial:
        """A new trial (or, when following an existing experiment, one it already had: give
        its status; one already ended fires no hook)."""
        existing = self._by_id.get(trial_id)
        if existing is not None:
            return existing
        config = dict(config or {})
        trial = Trial(
            self.trainable_name,
            config=config,
            trial_id=trial_id,
            experiment_path=self.experiment_path,
            evaluated_params=evaluated_params(self.param_space, config),
            experiment_tag=experiment_tag,
            trial_name=name,
            status=status,
        )
        trial.last_result = last_result
        self._by_id[trial_id] = trial
        self.trials.append(trial)
        if status in ENDED:
            self._ended.add(trial_id)
        return trial

    def _info(self, trial: Trial) -> dict[str, Any]:
        return {"iteration": self.iteration, "trials": self.trials, "trial": trial}

    def trial_started(self, trial_id: str, restored: bool = False) -> None:
        trial = self._by_id[trial_id]
        self._ended.discard(trial_id)
        self.callbacks.on_trial_start(**self._info(trial))
        trial.status = Trial.RUNNING
        if restored:
            self.callbacks.on_trial_restore(**self._info(trial))

    def trial_result(self, trial_id: str, result: dict[str, Any], checkpoint: bool = True) -> None:
        """``on_trial_result``, then (unless ``checkpoint=False``: the caller reports it) the
        hooks of the checkpoint the result names."""
        trial = self._by_id[trial_id]
        self.callbacks.on_trial_result(**self._info(trial), result=result)
        trial.update_last_result(result)
        name = result.get("checkpoint_dir_name")
        if name and checkpoint:
            self.trial_checkpoint(trial_id, str(name))

    def trial_checkpoint(
        self,
        trial_id: str,
        checkpoint_dir_name: str,
        silent: bool = False,
        save_hook: bool = True,
    ) -> None:
        """A new checkpoint: ``on_checkpoint`` and ``on_trial_save`` (the latter separately,
        with :meth:`trial_saved`, when ``save_hook=False``); no hook when ``silent`` (a
        follower picking up a trial whose checkpoint was reported before)."""
        if self._checkpoints.get(trial_id) == checkpoint_dir_name:
            return
        self._checkpoints[trial_id] = checkpoint_dir_name
        trial = self._by_id[trial_id]
        if self.checkpoint_for is not None:
            checkpoint = self.checkpoint_for(trial_id, checkpoint_dir_name)
        else:
            path = os.path.join(trial.local_path or self.experiment_path, checkpoint_dir_name)
            checkpoint = Checkpoint(local_path=path)
        trial.checkpoint = checkpoint
        if silent:
            return
        self.callbacks.on_checkpoint(**self._info(trial), checkpoint=checkpoint)
        if save_hook:
            self.trial_saved(trial_id)

    def trial_saved(self, trial_id: str) -> None:
        self.callbacks.on_trial_save(**self._info(self._by_id[trial_id]))

    def trial_failed(self, trial_id: str, error: str | None, will_retry: bool) -> None:
        """A failed attempt: retried (``on_trial_recover``) or the trial's end."""
        trial = self._by_id[trial_id]
        trial.num_failures += 1
        trial.error_msg = error
        if will_retry:
            trial.status = Trial.PENDING
            self.callbacks.on_trial_recover(**self._info(trial))
        else:
            self.trial_ended(trial_id, Trial.ERROR, error)

    def trial_ended(self, trial_id: str, status: str, error: str | None = None) -> None:
        """The trial reached ``status``: TERMINATED or ERROR fire their hook once; any other
        status is recorded (a revived trial may end again)."""
        trial = self._by_id[trial_id]
        trial.status = status
        if status not in ENDED:
            self._ended.discard(trial_id)
            return
        if trial_id in self._ended:
            return
        self._ended.add(trial_id)
        if status == Trial.ERROR:
            if error is not None:
                trial.error_msg = error
            self.callbacks.on_trial_error(**self._info(trial))
        else:
            self.callbacks.on_trial_complete(**self._info(trial))

    def set_config(self, trial_id: str, config: dict[str, Any]) -> None:
        trial = self._by_id.get(trial_id)
        if trial is not None and config is not None:
            trial.config = dict(config)
            trial.evaluated_params = evaluated_params(self.param_space, trial.config)

    # -- state ----------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any] | None:
        return self.callbacks.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.callbacks.set_state(state)


class EngineObserver:
    """An ExperimentEngine whose events also drive a :class:`CallbackDispatcher`.

    Every attribute not overridden here is the engine's own.
    """

    def __init__(self, engine: ExperimentEngine, dispatcher: CallbackDispatcher) -> None:
        self._engine = engine
        self._dispatcher = dispatcher
        self._restores: set[str] = set()  # trials whose next start restores a checkpoint
        for trial_id in engine.trial_ids():  # a restored experiment's trials
            rec = engine.trials[trial_id]
            dispatcher.trial_added(
                trial_id, rec.name, rec.tag, rec.config, rec.status, rec.last_result
            )
            if rec.latest_checkpoint:
                dispatcher._checkpoints[trial_id] = rec.latest_checkpoint
            if rec.status in ENDED:
                dispatcher.trial(trial_id).error_msg = rec.error  # type: ignore[union-attr]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    # -- what an event did --------------------------------------------------------------------
    def observe(self, actions: Iterable[Any], *subjects: str) -> None:
        """Tell the dispatcher about ``actions`` (also those the caller got from the engine
        before wrapping it) and about the statuses of the trials they and ``subjects`` name."""
        d = self._dispatcher
        touched = list(subjects)
        for action in actions:
            if isinstance(action, CreateTrial):
                d.trial_added(
                    action.trial_id, action.trial_name, action.experiment_tag, action.config
                )
                if action.restore_from is not None:
                    self._restores.add(action.trial_id)
            elif isinstance(action, (ResumeTrial, RestartTrial)):
                config = action.config if isinstance(action, ResumeTrial) else action.new_config
                d.set_config(action.trial_id, config)
                if action.restore_from is not None:
                    self._restores.add(action.trial_id)
                else:
                    self._restores.discard(action.trial_id)
            elif isinstance(action, (StopTrial, PauseTrial)):
                touched.append(action.trial_id)
        for trial_id in touched:
            rec = self._engine.trials.get(trial_id)
            if rec is not None and d.trial(trial_id) is not None:
                d.trial_ended(trial_id, rec.status, rec.error)

    # -- the engine's events --------------------------------------------------------------------
    def start(self, now: float) -> list[Any]:
        out = self._engine.start(now)
        self.observe(out)
        return out

    def on_trial_started(self, trial_id: str, now: float) -> list[Any]:
        if self._dispatcher.trial(trial_id) is None:
            rec = self._engine.trials[trial_id]
            self._dispatcher.trial_added(trial_id, rec.name, rec.tag, rec.config)
        self._dispatcher.trial_started(trial_id, restored=trial_id in self._restores)
        self._restores.discard(trial_id)
        out = self._engine.on_trial_started(trial_id, now)
        self.observe(out)
        return out

    def on_result(self, trial_id: str, result: dict[str, Any], now: float) -> Any:
        rec = self._engine.trials.get(trial_id)
        before = rec.num_results if rec is not None else 0
        response = self._engine.on_result(trial_id, result, now)
        if rec is not None and rec.num_results > before:  # the engine took it
            self._dispatcher.trial_result(trial_id, result)
        self.observe(response.actions, trial_id)
        return response

    def on_checkpoint(
        self,
        trial_id: str,
        checkpoint_dir_name: str,
        result: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> list[Any]:
        out = self._engine.on_checkpoint(trial_id, checkpoint_dir_name, result, now)
        rec = self._engine.trials.get(trial_id)
        if rec is not None and rec.latest_checkpoint == checkpoint_dir_name:
            self._dispatcher.trial_checkpoint(trial_id, checkpoint_dir_name)
        self.observe(out)
        return out

    def on_trial_complete(
        self, trial_id: str, now: float, result: dict[str, Any] | None = None
    ) -> list[Any]:
        out = self._engine.on_trial_complete(trial_id, now, result)
        self.observe(out, trial_id)
        return out

    def on_trial_error(self, trial_id: str, error_message: str, now: float) -> list[Any]:
        rec = self._engine.trials.get(trial_id)
        failures = rec.num_failures if rec is not None else 0
        out = self._engine.on_trial_error(trial_id, error_message, now)
        if rec is not None and rec.num_failures > failures:  # counted as a failure
            retried = any(isinstance(a, ResumeTrial) and a.trial_id == trial_id for a in out)
            self._dispatcher.trial_failed(trial_id, error_message, will_retry=retried)
        self.observe(out, trial_id)
        return out

    def on_trial_lost(self, trial_id: str, now: float) -> list[Any]:
        return self.on_trial_error(trial_id, "trial lost: its pod or process disappeared", now)

    def on_tick(self, now: float) -> list[Any]:
        self._dispatcher.step()
        out = self._engine.on_tick(now)
        self.observe(out)
        return out

    def resume_trial(self, trial_id: str, now: float, from_checkpoint: bool = True) -> list[Any]:
        out = self._engine.resume_trial(trial_id, now, from_checkpoint)
        self.observe(out, trial_id)
        return out

    def stop_trial(self, trial_id: str, now: float, reason: str) -> list[Any]:
        out = self._engine.stop_trial(trial_id, now, reason)
        self.observe(out, trial_id)
        return out

    def stop_experiment(self, now: float, reason: str = "stopped by request") -> list[Any]:
        out = self._engine.stop_experiment(now, reason)
        self.observe(out)
        return out

    def finish(self) -> None:
        """The driver is done: end hooks for trials that ended unseen, then the experiment's."""
        for trial_id in self._engine.trial_ids():
            rec = self._engine.trials[trial_id]
            if self._dispatcher.trial(trial_id) is not None:
                self._dispatcher.trial_ended(trial_id, rec.status, rec.error)
        self._dispatcher.experiment_end()
