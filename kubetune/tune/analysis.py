"""``tune.ExperimentAnalysis``: an experiment read back from its directory (what ``tune.run``
returns), with Ray's best-trial helpers. Everything is read from storage, so a running, a
finished and a restored experiment (or an ``s3://`` one, staged locally) read the same."""

from __future__ import annotations

import json
import os
from typing import Any

from kubetune.air.checkpoint import Checkpoint
from kubetune.local.result_grid import STATE_FILE, Result, ResultGrid, check_metric_mode
from kubetune.tune.execution.callbacks import evaluated_params
from kubetune.tune.experiment.trial import Trial


class ExperimentAnalysis:
    def __init__(
        self,
        experiment_checkpoint_path: str | os.PathLike[str],
        *,
        storage_filesystem: Any = None,
        trials: list[Trial] | None = None,
        default_metric: str | None = None,
        default_mode: str | None = None,
    ) -> None:
        from kubetune.local.experiment import open_experiment_dir

        path = os.fspath(experiment_checkpoint_path)
        if os.path.basename(path) == STATE_FILE or path.endswith(".json"):
            path = os.path.dirname(path)
        self._local, self.experiment_path = open_experiment_dir(path, must_exist=True)
        with open(os.path.join(self._local, STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
        self._grid = ResultGrid.from_directory(self._local, experiment_path=self.experiment_path)
        self.default_metric = default_metric or state.get("metric")
        self.default_mode = default_mode or state.get("mode")
        if self.default_mode is not None and self.default_mode not in ("min", "max"):
            raise ValueError(f"default_mode must be 'min' or 'max', got {self.default_mode!r}")
        self._results: dict[str, Result] = {}
        self.trials: list[Trial] = trials or []
        engine_trials = {
            t.get("trial_id"): t for t in (state.get("engine") or {}).get("trials") or []
        }
        build = not self.trials
        for entry, result in zip(state.get("trials", []), self._grid):
            trial_id = entry["trial_id"]
            self._results[trial_id] = result
            if not build:
                continue
            config = (result.metrics or {}).get("config")
            if config is None:
                config = (engine_trials.get(trial_id) or {}).get("config") or {}
            trial = Trial(
                trial_name=entry.get("trial_name") or entry.get("dirname"),
                config=config,
                trial_id=trial_id,
                experiment_path=self._local,
                experiment_tag=entry.get("experiment_tag", ""),
                status=entry.get("status", Trial.PENDING),
            )
            trial.last_result = result.metrics
            trial.num_failures = entry.get("num_failures", 0)
            trial.error_msg = entry.get("error")
            trial.checkpoint = result.checkpoint
            self.trials.append(trial)
        param_space = self._param_space()
        for trial in self.trials:
            if not trial.evaluated_params:
                trial.evaluated_params = evaluated_params(param_space, trial.config)

    def _param_space(self) -> dict[str, Any]:
        path = os.path.join(self._local, ".kubetune", "tuner.pkl")
        try:
            import cloudpickle

            with open(path, "rb") as f:
                return dict(cloudpickle.load(f).get("param_space") or {})
        except Exception:  # a manifest experiment, or a trainable that no longer imports
            return {}

    # -- per trial ------------------------------------------------------------------------
    def _result(self, trial: Trial) -> Result:
        return self._results[trial.trial_id]

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        """The last result of each trial, by trial id."""
        return {t.trial_id: dict(t.last_result) for t in self.trials}

    @property
    def trial_dataframes(self) -> dict[str, Any]:
        """Each trial's results as a DataFrame, by trial directory."""
        return {t.local_path or str(t): self._result(t).metrics_dataframe for t in self.trials}

    def fetch_trial_dataframes(self) -> dict[str, Any]:
        return self.trial_dataframes

    def get_all_configs(self, prefix: bool = False) -> dict[str, dict[str, Any]]:
        if prefix:
            return {t.local_path or str(t): {"config": t.config} for t in self.trials}
        return {t.local_path or str(t): t.config for t in self.trials}

    def dataframe(self, metric: str | None = None, mode: str | None = None) -> Any:
        """One row per trial (its last result, or its best by ``metric``/``mode``)."""
        if metric is not None and mode is None:
            raise ValueError("dataframe: pass mode ('min' or 'max') with metric")
        return self._grid.get_dataframe(filter_metric=metric, filter_mode=mode)

    @property
    def results_df(self) -> Any:
        return self._grid.get_dataframe()

    # -- the best ---------------------------------------------------------------------------
    def _metric_mode(self, metric: str | None, mode: str | None, where: str) -> tuple[str, str]:
        return check_metric_mode(metric or self.default_metric, mode or self.default_mode, where)

    def get_best_trial(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> Trial | None:
        metric, mode = self._metric_mode(metric, mode, "get_best_trial")
        try:
            best = self._grid.get_best_result(metric, mode, scope, filter_nan_and_inf)
        except RuntimeError:
            return None  # no trial reported the metric (Ray returns None too)
        for trial in self.trials:
            if self._results.get(trial.trial_id) is best:
                return trial
        return None

    def get_best_config(
        self, metric: str | None = None, mode: str | None = None, scope: str = "last"
    ) -> dict[str, Any] | None:
        trial = self.get_best_trial(metric, mode, scope)
        return trial.config if trial else None

    def get_best_checkpoint(
        self, trial: Trial, metric: str | None = None, mode: str | None = None
    ) -> Checkpoint | None:
        """The trial's checkpoint whose result had the best ``metric``."""
        metric, mode = self._metric_mode(metric, mode, "get_best_checkpoint")
        scored = [
            (ckpt, float(row[metric]))
            for ckpt, row in self._result(trial).best_checkpoints
            if isinstance(row.get(metric), (int, float))
        ]
        if not scored:
            return self._result(trial).checkpoint
        pick = max if mode == "max" else min
        return pick(scored, key=lambda c: c[1])[0]

    def get_last_checkpoint(
        self,
        trial: Trial | None = None,
        metric: str = "training_iteration",
        mode: str = "max",
    ) -> Checkpoint | None:
        trial = trial or self.get_best_trial(metric, mode)
        if trial is None:
            return None
        return self.get_best_checkpoint(trial, metric, mode)

    def _default_best(self) -> Trial:
        if not self.default_metric or not self.default_mode:
            raise ValueError(
                "to use best_trial, best_config, ... pass metric and mode to tune.run() (or"
                " default_metric/default_mode to ExperimentAnalysis), or call get_best_trial("
                "metric, mode)"
            )
        trial = self.get_best_trial(self.default_metric, self.default_mode)
        if trial is None:
            raise RuntimeError(f"no trial reported the metric {self.default_metric!r}")
        return trial

    @property
    def best_trial(self) -> Trial:
        return self._default_best()

    @property
    def best_config(self) -> dict[str, Any]:
        return self._default_best().config

    @property
    def best_checkpoint(self) -> Checkpoint | None:
        return self.get_best_checkpoint(self._default_best())

    @property
    def best_logdir(self) -> str | None:
        return self._default_best().local_path

    @property
    def best_path(self) -> str | None:
        return self.best_logdir

    @property
    def best_result(self) -> dict[str, Any]:
        return dict(self._default_best().last_result)

    @property
    def best_dataframe(self) -> Any:
        return self._result(self._default_best()).metrics_dataframe

    @property
    def best_result_df(self) -> Any:
        from kubetune._util import flatten_dict

        pd = __import__("pandas")
        return pd.DataFrame([flatten_dict(self.best_result)])

    def stats(self) -> dict[str, Any]:
        return {"num_trials": len(self.trials), "path": self.experiment_path}

    def __repr__(self) -> str:
        return f"ExperimentAnalysis<{len(self.trials)} trials, {self.experiment_path}>"
