"""``tune.Callback``: hooks the driver calls while an experiment runs (Ray Tune's interface).

A callback runs in the process that called ``Tuner.fit()`` (or that reads an experiment from
storage), never inside a trial. Every hook receives ``iteration`` (the driver loop's step
counter), ``trials`` (every :class:`~kubetune.tune.experiment.Trial` so far, in creation order)
and, where it concerns one trial, ``trial``; extra keyword arguments may be added later, so
hooks take ``**info``.

Order, as in Ray: ``setup`` once; then per driver step ``on_step_begin`` ... ``on_step_end``;
per trial ``on_trial_start`` (again after every pause, retry or exploit; ``on_trial_restore``
follows it when the new run starts from a checkpoint), ``on_trial_result`` for each result
(searcher and scheduler have seen it first), ``on_checkpoint`` and then ``on_trial_save`` for
each persisted checkpoint, and one of ``on_trial_complete`` / ``on_trial_error`` when the trial
ends (``on_trial_recover`` for a failure that is retried); ``on_experiment_end`` last.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubetune.air.checkpoint import Checkpoint
    from kubetune.tune.experiment.trial import Trial

HOOKS = (
    "setup",
    "on_step_begin",
    "on_step_end",
    "on_trial_start",
    "on_trial_restore",
    "on_trial_save",
    "on_trial_result",
    "on_trial_complete",
    "on_trial_recover",
    "on_trial_error",
    "on_checkpoint",
    "on_experiment_end",
)


class Callback:
    """Base class: override the hooks you need; the others do nothing."""

    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        """Called once before the first trial starts (``info`` has ``time_budget_s``)."""

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        """Called at the start of each step of the driver loop."""

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        """Called at the end of each step; ``iteration`` was already increased."""

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Called after a trial's process (or pod) was started."""

    def on_trial_restore(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Called after a trial was started from a checkpoint."""

    def on_trial_save(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        """Called after a trial's checkpoint was persisted (after ``on_checkpoint``)."""

    def on_trial_result(
        self,
        iteration: int,
        trials: list[Trial],
        trial: Trial,
        result: dict[str, Any],
        **info: Any,
    ) -> None:
        """Called for each result, after the searcher and the scheduler have seen it."""

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Called when a trial ended without error (finished or stopped)."""

    def on_trial_recover(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Called when a trial failed and will be retried (``FailureConfig.max_failures``)."""

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Called when a trial failed for good."""

    def on_checkpoint(
        self,
        iteration: int,
        trials: list[Trial],
        trial: Trial,
        checkpoint: Checkpoint,
        **info: Any,
    ) -> None:
        """Called after a trial's checkpoint was persisted."""

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Called once after every trial has ended."""

    def get_state(self) -> dict[str, Any] | None:
        """State to save with the experiment (restored by ``Tuner.restore``); None: nothing."""
        return None

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned."""


class CallbackList(Callback):
    """Calls each of several callbacks in order."""

    def __init__(self, callbacks: list[Callback] | None = None) -> None:
        self._callbacks: list[Callback] = list(callbacks or [])
        for cb in self._callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"RunConfig.callbacks: each entry must be a tune.Callback, got"
                    f" {type(cb).__name__}"
                )

    def __iter__(self) -> Any:
        return iter(self._callbacks)

    def __len__(self) -> int:
        return len(self._callbacks)

    def setup(self, **info: Any) -> None:  # type: ignore[override]
        for cb in self._callbacks:
            try:
                cb.setup(**info)
            except TypeError as exc:
                if "argument" not in str(exc):
                    raise
                # an old-style ``setup(self)`` without keyword arguments, as Ray tolerates
                warnings.warn(
                    f"{type(cb).__name__}.setup should accept the keyword arguments of"
                    " tune.Callback.setup (stop, num_samples, total_num_samples, **info)",
                    FutureWarning,
                    stacklevel=2,
                )
                cb.setup()

    def _call(self, hook: str, info: dict[str, Any]) -> None:
        for cb in self._callbacks:
            getattr(cb, hook)(**info)

    def on_step_begin(self, **info: Any) -> None:  # type: ignore[override]
        self._call("on_step_begin", info)

    def on_step_end(self, **info: Any) -> None:  # type: ignore[override]
        self._call("on_step_end", info)

    def on_trial_start(self, **info: Any) -> None:  # type: ignore[override]
        self._call("on_trial_start", info)

    def on_trial_restore(self, **info: Any) -> None:  # type: ignore[override]
        self._call("on_trial_restore", info)

    def on_trial_save(self, **info: Any) -> None:  # type: ignore[override]
        self._call("on_trial_save", info)

    def on_trial_result(self, **info: Any) -> None:  # type: ignore[override]
        self._call("on_trial_result", info)

    def on_trial_complete(self, **info: Any) -> None:  # type: ignore[override]
        self._call("on_trial_complete", info)

    def on_trial_recover(self, **info: Any) -> None:  # type: ignore[override]
        self._call("on_trial_recover", info)

    def on_trial_error(self, **info: Any) -> None:  # type: ignore[override]
        self._call("on_trial_error", info)

    def on_checkpoint(self, **info: Any) -> None:  # type: ignore[override]
        self._call("on_checkpoint", info)

    def on_experiment_end(self, **info: Any) -> None:  # type: ignore[override]
        self._call("on_experiment_end", info)

    def get_state(self) -> dict[str, Any] | None:
        states = {}
        for i, cb in enumerate(self._callbacks):
            state = cb.get_state()
            if state is not None:
                states[f"{i}:{type(cb).__name__}"] = state
        return states or None

    def set_state(self, state: dict[str, Any]) -> None:
        for i, cb in enumerate(self._callbacks):
            key = f"{i}:{type(cb).__name__}"
            if key in state:
                cb.set_state(state[key])
