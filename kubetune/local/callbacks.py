"""Local mode's side of ``RunConfig(callbacks=...)``: the engine handed to the backend is an
:class:`~kubetune.tune.execution.callbacks.EngineObserver`, so callbacks run in this process at
Ray's hook points; their state is saved with the experiment for ``Tuner.restore``."""

from __future__ import annotations

import os
import pickle
from typing import TYPE_CHECKING, Any, cast

from kubetune.engine import ExperimentEngine

if TYPE_CHECKING:
    from kubetune.local.experiment import LocalExperiment
    from kubetune.tune.execution.callbacks import EngineObserver

STATE_FILE = "callbacks.pkl"


def attach_callbacks(
    experiment: LocalExperiment, engine: ExperimentEngine, initial: list[Any], expected: int | None
) -> EngineObserver | None:
    """The observer wrapping ``engine`` (None when the run has no callback at all)."""
    from kubetune.tune.execution.defaults import experiment_callbacks

    tuner = experiment.tuner
    rc, tc = tuner.run_config, tuner.tune_config
    callbacks = experiment_callbacks(rc.callbacks, rc.progress_reporter, tc.metric, tc.mode)
    if not callbacks:
        return None
    from kubetune.local.common import trainable_name
    from kubetune.tune.execution.callbacks import CallbackDispatcher, EngineObserver

    dispatcher = CallbackDispatcher(
        callbacks,
        experiment.local_dir,
        trainable_name=trainable_name(tuner.trainable),
        param_space=tuner.param_space,
    )
    state_path = os.path.join(experiment.internal, STATE_FILE)
    if tuner._restore is not None and os.path.exists(state_path):
        with open(state_path, "rb") as f:
            dispatcher.set_state(pickle.load(f))
    dispatcher.setup(
        stop=tuner.run_config.stop,
        num_samples=tc.num_samples,
        total_num_samples=expected,
        time_budget_s=tc.time_budget_s,
    )
    observer = EngineObserver(engine, dispatcher)
    dispatcher.step()  # the first step of the driver loop
    observer.observe(initial)
    return observer


def as_engine(engine: ExperimentEngine, observer: EngineObserver | None) -> ExperimentEngine:
    return engine if observer is None else cast(ExperimentEngine, observer)


def finish_callbacks(experiment: LocalExperiment, observer: EngineObserver | None) -> None:
    if observer is None:
        return
    try:
        observer.finish()
    finally:
        state = observer._dispatcher.get_state()
        if state is not None:
            path = os.path.join(experiment.internal, STATE_FILE)
            with open(f"{path}.tmp", "wb") as f:
                pickle.dump(state, f)
            os.replace(f"{path}.tmp", path)
