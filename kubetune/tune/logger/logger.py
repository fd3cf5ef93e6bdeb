"""``tune.logger.LoggerCallback``: a callback shaped around the per-trial log events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubetune.tune.callback import Callback

if TYPE_CHECKING:
    from kubetune.tune.experiment.trial import Trial


class LoggerCallback(Callback):
    """Override ``log_trial_start`` / ``log_trial_result`` / ``log_trial_end`` (and
    ``log_trial_restore`` / ``log_trial_save``); the ``on_*`` hooks route to them."""

    def log_trial_start(self, trial: Trial) -> None:
        """A trial started (again)."""

    def log_trial_restore(self, trial: Trial) -> None:
        """A trial started from a checkpoint."""

    def log_trial_save(self, trial: Trial) -> None:
        """A trial's checkpoint was persisted."""

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        """A trial reported ``result``."""

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        """A trial ended; ``failed`` if it errored."""

    def on_trial_result(
        self,
        iteration: int,
        trials: list[Trial],
        trial: Trial,
        result: dict[str, Any],
        **info: Any,
    ) -> None:
        self.log_trial_result(iteration, trial, result)

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.log_trial_start(trial)

    def on_trial_restore(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.log_trial_restore(trial)

    def on_trial_save(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.log_trial_save(trial)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.log_trial_end(trial, failed=False)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.log_trial_end(trial, failed=True)


def pretty_print(result: dict[str, Any], exclude: set[str] | None = None) -> str:
    """A result as YAML, without ``config`` and ``None`` values (Ray's helper)."""
    import yaml

    from kubetune._util import flatten_dict

    shown = {k: v for k, v in result.items() if k != "config" and v is not None}
    if exclude:
        flat = flatten_dict(shown, delimiter="/")
        shown = {k: v for k, v in flat.items() if k not in exclude}
    clean = {
        k: v if isinstance(v, (str, int, float, bool, list, dict)) else str(v)
        for k, v in shown.items()
    }
    return str(yaml.safe_dump(clean, default_flow_style=False, sort_keys=True))
