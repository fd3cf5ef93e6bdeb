"""MLflow: ``MLflowLoggerCallback`` (the driver logs every trial as a run) and
``setup_mlflow`` (a trainable logs by itself). Needs ``pip install 'kubetune[mlflow]'``.

Any tracking URI MLflow accepts works: a server (``http://...``), ``sqlite:///...``, or a local
directory (``/path/mlruns``, ``file:///path/mlruns``: MLflow 3 wants MLFLOW_ALLOW_FILE_STORE for
those, which kubetune then sets, with a warning, unless it is set already). The callback runs in
the process that called fit().
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kubetune.air.integrations._util import flat_params, numeric_metrics, require
from kubetune.tune.logger.logger import LoggerCallback

if TYPE_CHECKING:
    from kubetune.tune.experiment.trial import Trial


def _mlflow(what: str) -> Any:
    return require("mlflow", "mlflow", what)


def _experiment_id(
    mlflow: Any,
    experiment_id: str | None,
    experiment_name: str | None,
    artifact_location: str | None,
    create: bool,
) -> str:
    """The id of the experiment to log to: by id, else by name (created when asked)."""
    from mlflow.exceptions import MlflowException

    experiment_id = experiment_id or os.environ.get("MLFLOW_EXPERIMENT_ID")
    if experiment_id is not None:
        try:
            if mlflow.get_experiment(experiment_id) is not None:
                return str(experiment_id)
        except MlflowException:
            pass
    experiment_name = experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if experiment_name:
        found = mlflow.get_experiment_by_name(experiment_name)
        if found is not None:
            return str(found.experiment_id)
        if create:
            return str(
                mlflow.create_experiment(experiment_name, artifact_location=artifact_location)
            )
    raise ValueError(
        "MLflow: no experiment to log to: pass experiment_id of an existing experiment, or"
        " experiment_name (with create_experiment_if_not_exists=True to create it), or set"
        " MLFLOW_EXPERIMENT_ID / MLFLOW_EXPERIMENT_NAME"
    )


def _is_file_store(uri: str) -> bool:
    scheme = urlsplit(uri).scheme
    return scheme == "file" or scheme == "" or (len(scheme) == 1 and os.name == "nt")


def _allow_file_store(tracking_uri: str) -> None:
    """MLflow 3 refuses a directory as its tracking store unless MLFLOW_ALLOW_FILE_STORE is
    set; a tracking_uri that names a directory asks for one (Ray's examples pass
    ``/tmp/mlruns``), so allow it for this process and its trials, and say so once."""
    if not _is_file_store(tracking_uri) or "MLFLOW_ALLOW_FILE_STORE" in os.environ:
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    warnings.warn(
        f"MLflow: tracking_uri {tracking_uri!r} is a directory, which MLflow 3 only accepts"
        " with MLFLOW_ALLOW_FILE_STORE=true; kubetune set it for this run. Use a database"
        " (tracking_uri='sqlite:///mlflow.db') or a tracking server to avoid MLflow's"
        " deprecated file store, or set MLFLOW_ALLOW_FILE_STORE=false to be refused",
        UserWarning,
        stacklevel=3,
    )


def _connect(tracking_uri: str | None, registry_uri: str | None, token: str | None) -> Any:
    mlflow = _mlflow("MLflow logging")
    if token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    if tracking_uri:
        _allow_file_store(str(tracking_uri))
        mlflow.set_tracking_uri(tracking_uri)
    if registry_uri:
        mlflow.set_registry_uri(registry_uri)
    return mlflow


class MLflowLoggerCallback(LoggerCallback):
    """One MLflow run per trial: its config as params (nested keys ``a/b``), each result's
    numbers as metrics at step ``training_iteration``, status FINISHED or FAILED at the end,
    and with ``save_artifact`` the trial directory as the run's artifacts."""

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        registry_uri: str | None = None,
        experiment_name: str | None = None,
        tags: dict[str, Any] | None = None,
        tracking_token: str | None = None,
        save_artifact: bool = False,
        log_params_on_trial_end: bool = False,
    ) -> None:
        _mlflow("MLflowLoggerCallback")  # fail at construction, not mid-experiment
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri
        self.experiment_name = experiment_name
        self.tags = dict(tags or {})
        self.tracking_token = tracking_token
        self.should_save_artifact = save_artifact
        self.log_params_on_trial_end = log_params_on_trial_end
        self._client: Any = None
        self._experiment_id: str | None = None
        self._runs: dict[Trial, str] = {}
        self._params_logged: set[Trial] = set()

    def setup(self, *args: Any, **kwargs: Any) -> None:
        mlflow = _connect(self.tracking_uri, self.registry_uri, self.tracking_token)
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(
            tracking_uri=mlflow.get_tracking_uri(), registry_uri=self.registry_uri
        )
        name = self.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
        self._experiment_id = _experiment_id(mlflow, None, name, None, create=True)

    def _log_params(self, trial: Trial, run_id: str) -> None:
        if trial in self._params_logged:
            return  # MLflow params are write-once; a PBT exploit's new config stays in results
        self._params_logged.add(trial)
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in flat_params(trial.config).items()]
        for i in range(0, len(params), 100):  # MLflow's batch limit
            self._client.log_batch(run_id, params=params[i : i + 100])

    def log_trial_start(self, trial: Trial) -> None:
        if self._client is None:
            self.setup()
        if trial not in self._runs:
            run = self._client.create_run(
                self._experiment_id,
                tags={**{k: str(v) for k, v in self.tags.items()}, "trial_name": str(trial)},
                run_name=str(trial),
            )
            self._runs[trial] = run.info.run_id
        if not self.log_params_on_trial_end:
            self._log_params(trial, self._runs[trial])

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        if trial not in self._runs:
            self.log_trial_start(trial)
        import time

        from mlflow.entities import Metric

        step = int(result.get("timesteps_total") or result.get("training_iteration") or 0)
        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, step) for k, v in numeric_metrics(result).items()]
        for i in range(0, len(metrics), 1000):
            self._client.log_batch(self._runs[trial], metrics=metrics[i : i + 1000])

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        run_id = self._runs.pop(trial, None)
        if run_id is None:
            return
        if self.should_save_artifact and trial.local_path and os.path.isdir(trial.local_path):
            self._client.log_artifacts(run_id, trial.local_path)
        if self.log_params_on_trial_end:
            self._log_params(trial, run_id)
        self._client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")


def setup_mlflow(
    config: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    experiment_id: str | None = None,
    experiment_name: str | None = None,
    tracking_token: str | None = None,
    artifact_location: str | None = None,
    run_name: str | None = None,
    create_experiment_if_not_exists: bool = False,
    tags: dict[str, Any] | None = None,
    rank_zero_only: bool = True,
) -> Any:
    """Inside a trainable: connect MLflow, start the active run (named after the trial) with
    ``config`` as its params, and return the ``mlflow`` module to log with."""
    mlflow = _connect(tracking_uri, registry_uri, tracking_token)
    trial_name = trial_id = None
    try:
        from kubetune.air import session

        trial_name, trial_id = session.get_trial_name(), session.get_trial_id()
    except RuntimeError:
        pass  # outside a trial: the caller names the experiment
    exp_id = _experiment_id(
        mlflow,
        experiment_id or trial_id,
        experiment_name or trial_name,
        artifact_location,
        create_experiment_if_not_exists,
    )
    mlflow.set_experiment(experiment_id=exp_id)
    mlflow.start_run(run_name=run_name or experiment_name or trial_name, tags=tags)
    if config:
        mlflow.log_params(flat_params(config))
    return mlflow
