"""Weights & Biases: ``WandbLoggerCallback`` (the driver logs every trial as a W&B run) and
``setup_wandb`` (a trainable logs by itself). Needs ``pip install 'kubetune[wandb]'``.

As in Ray: the run's id and name are the trial's, its group the experiment's, its config the
trial's config (the auto-filled host fields go to the config, not the charts). Set
``WANDB_MODE=offline`` (or pass ``mode="offline"``) to write runs under the trial's
``wandb/`` folder without any network; ``wandb sync`` uploads them later. In Ray each trial's
run lives in its own actor; here all runs live in the driver process (wandb's multi-run mode).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from kubetune.air.integrations._util import require
from kubetune.tune.logger.logger import LoggerCallback

if TYPE_CHECKING:
    from kubetune.tune.experiment.trial import Trial

WANDB_ENV_VAR = "WANDB_API_KEY"
WANDB_PROJECT_ENV_VAR = "WANDB_PROJECT_NAME"
WANDB_GROUP_ENV_VAR = "WANDB_GROUP_NAME"
WANDB_MODE_ENV_VAR = "WANDB_MODE"
# auto-filled fields that go to the run's config instead of its charts (Ray's list)
AUTO_CONFIG_KEYS = ("trial_id", "experiment_tag", "node_ip", "hostname", "pid", "date")


def _wandb(what: str) -> Any:
    return require("wandb", "wandb", what)


def _set_api_key(api_key_file: str | None, api_key: str | None, mode: str | None) -> None:
    if (mode or os.environ.get(WANDB_MODE_ENV_VAR)) in ("offline", "disabled"):
        return
    if api_key_file:
        with open(os.path.expanduser(api_key_file)) as f:
            api_key = f.readline().strip()
    if api_key:
        os.environ[WANDB_ENV_VAR] = api_key
    # otherwise wandb uses WANDB_API_KEY or `wandb login`, and says so itself when neither


def _loggable(value: Any) -> bool:
    if isinstance(value, (int, float, str, bool)) or value is None:
        return True
    return type(value).__module__.startswith(("numpy", "wandb"))


def _clean(result: dict[str, Any], exclude: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what to log as metrics, what to put into the run's config)."""
    log: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for key, value in result.items():
        if key in exclude:
            continue
        if key in AUTO_CONFIG_KEYS:
            config[key] = value
        elif isinstance(value, dict):
            nested = _clean(value, set())[0]
            if nested:
                log[key] = nested
        elif _loggable(value):
            log[key] = value
    return log, config


class WandbLoggerCallback(LoggerCallback):
    """Logs each trial to a W&B run (see the module docstring)."""

    def __init__(
        self,
        project: str | None = None,
        group: str | None = None,
        api_key_file: str | None = None,
        api_key: str | None = None,
        excludes: list[str] | None = None,
        log_config: bool = False,
        upload_checkpoints: bool = False,
        save_checkpoints: bool = False,
        upload_timeout: int = 1800,
        video_kwargs: dict[str, Any] | None = None,
        image_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        _wandb("WandbLoggerCallback")  # fail at construction, not mid-experiment
        self.project = project
        self.group = group
        self.api_key_file = api_key_file
        self.api_key = api_key
        self.excludes = list(excludes or [])
        self.log_config = log_config
        self.upload_checkpoints = upload_checkpoints or save_checkpoints
        self.kwargs = kwargs
        self._runs: dict[Trial, Any] = {}

    def setup(self, *args: Any, **kwargs: Any) -> None:
        _set_api_key(self.api_key_file, self.api_key, self.kwargs.get("mode"))
        self.project = self.project or os.environ.get(WANDB_PROJECT_ENV_VAR)
        if not self.project:
            raise ValueError(
                "WandbLoggerCallback: pass project=... or set the"
                f" {WANDB_PROJECT_ENV_VAR} environment variable"
            )
        self.group = self.group or os.environ.get(WANDB_GROUP_ENV_VAR)

    def log_trial_start(self, trial: Trial) -> None:
        if trial in self._runs:
            return  # a restarted trial goes on logging to its run
        if not self.project:
            self.setup()
        wandb = _wandb("WandbLoggerCallback")
        config = {k: v for k, v in trial.config.items() if k not in self.excludes and _loggable(v)}
        init = {
            "id": trial.trial_id,
            "name": str(trial),
            "group": self.group or trial.experiment_dir_name,
            "project": self.project,
            "config": config,
            "dir": trial.local_path,
            "reinit": "create_new",
            "allow_val_change": True,
            **self.kwargs,
        }
        trial.init_local_path()
        self._runs[trial] = wandb.init(**init)

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        if trial not in self._runs:
            self.log_trial_start(trial)
        exclude = set(self.excludes)
        if not self.log_config:
            exclude.add("config")
        log, config = _clean(result, exclude)
        run = self._runs[trial]
        if config:
            run.config.update(config, allow_val_change=True)
        run.log(log, step=result.get("training_iteration"))

    def log_trial_save(self, trial: Trial) -> None:
        run = self._runs.get(trial)
        path = trial.checkpoint.path if trial.checkpoint is not None else None
        if run is None or not self.upload_checkpoints or not path or not os.path.isdir(path):
            return
        wandb = _wandb("WandbLoggerCallback")
        artifact = wandb.Artifact(f"checkpoint_{trial.trial_id}", type="model")
        artifact.add_dir(path)
        run.log_artifact(artifact)

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        run = self._runs.pop(trial, None)
        if run is not None:
            run.finish(exit_code=1 if failed else 0)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for trial in list(self._runs):
            self.log_trial_end(trial, failed=trial.status == "ERROR")


def setup_wandb(
    config: dict[str, Any] | None = None,
    api_key: str | None = None,
    api_key_file: str | None = None,
    rank_zero_only: bool = True,
    **kwargs: Any,
) -> Any:
    """Inside a trainable: start a W&B run named after the trial (id, name, group from the
    trial; ``config`` as its config) and return it; ``kwargs`` go to ``wandb.init``."""
    wandb = _wandb("setup_wandb")
    defaults: dict[str, Any] = {}
    try:
        from kubetune.air import session

        defaults = {
            "id": session.get_trial_id(),
            "name": session.get_trial_name(),
            "group": session.get_experiment_name(),
            "dir": session.get_trial_dir(),
        }
    except RuntimeError:
        pass  # outside a trial
    _set_api_key(api_key_file, api_key, kwargs.get("mode"))
    project = kwargs.pop("project", None) or os.environ.get(WANDB_PROJECT_ENV_VAR)
    group = kwargs.pop("group", None) or os.environ.get(WANDB_GROUP_ENV_VAR)
    init = {**defaults, "config": dict(config or {}), "reinit": "create_new"}
    if project:
        init["project"] = project
    if group:
        init["group"] = group
    init.update(kwargs)
    return wandb.init(**init)
