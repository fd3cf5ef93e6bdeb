"""MLflow (a local file store), W&B (offline), XGBoost and LightGBM, each on its real library;
and the install error each gives when its library is missing."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from kubetune import air, tune

from . import trainables as T


def _fit(trainable, callbacks=None, **kwargs):
    run_config = air.RunConfig(verbose=0, callbacks=callbacks)
    return tune.Tuner(trainable, run_config=run_config, **kwargs).fit()


# -- MLflow -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _mlflow_file_store(monkeypatch):
    # MLflow 3.x keeps the local-directory store (no server, no database) behind this switch
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def test_mlflow_logger_callback_logs_each_trial_as_a_run(tmp_path):
    pytest.importorskip("mlflow", reason="needs kubetune[mlflow]")
    from mlflow.tracking import MlflowClient

    from kubetune.air.integrations.mlflow import MLflowLoggerCallback

    uri = f"file://{tmp_path}/mlruns"
    callback = MLflowLoggerCallback(
        tracking_uri=uri, experiment_name="kt-test", tags={"team": "a"}, save_artifact=True
    )
    grid = _fit(
        T.three_reports,
        [callback],
        param_space={"x": tune.grid_search([1, 2]), "opt": {"lr": 0.5}},
    )
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("kt-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    names = {os.path.basename(r.path) for r in grid}
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["trial_name"] in names and run.data.tags["team"] == "a"
        x = int(run.data.params["x"])
        assert run.data.params["opt/lr"] == "0.5"
        history = client.get_metric_history(run.info.run_id, "score")
        assert [(m.step, m.value) for m in history] == [(1, x * 1.0), (2, x * 2.0), (3, x * 3.0)]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "result.json" in artifacts


def test_mlflow_a_directory_as_tracking_uri_works_as_in_rays_example(tmp_path, monkeypatch):
    """Ray's mlflow_example passes a plain directory; MLflow 3 refuses it unless
    MLFLOW_ALLOW_FILE_STORE is set, so kubetune sets it (and warns) when the user has not."""
    pytest.importorskip("mlflow", reason="needs kubetune[mlflow]")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from kubetune.air.integrations.mlflow import MLflowLoggerCallback

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    uri = str(tmp_path / "mlruns")
    with pytest.warns(UserWarning, match="MLFLOW_ALLOW_FILE_STORE=true"):
        MLflowLoggerCallback(tracking_uri=uri, experiment_name="plain-dir").setup()
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"
    assert MlflowClient(tracking_uri=uri).get_experiment_by_name("plain-dir") is not None
    # the user's own word wins: set to false, MLflow refuses as it would without kubetune
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")
    with pytest.raises(MlflowException, match="MLFLOW_ALLOW_FILE_STORE"):
        MLflowLoggerCallback(tracking_uri=str(tmp_path / "other"), experiment_name="x").setup()
    # a database store needs no switch
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    MLflowLoggerCallback(
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment_name="db"
    ).setup()
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ


def test_mlflow_marks_a_failed_trial_failed(tmp_path):
    pytest.importorskip("mlflow", reason="needs kubetune[mlflow]")
    from mlflow.tracking import MlflowClient

    from kubetune.air.integrations.mlflow import MLflowLoggerCallback

    uri = f"file://{tmp_path}/mlruns"
    _fit(T.always_fails, [MLflowLoggerCallback(tracking_uri=uri, experiment_name="fails")])
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("fails").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def setup_mlflow_trainable(config):
    from kubetune.air import session
    from kubetune.air.integrations.mlflow import setup_mlflow

    mlflow = setup_mlflow(
        config,
        tracking_uri=config["uri"],
        experiment_name="from-trial",
        create_experiment_if_not_exists=True,
    )
    for step in range(1, 3):
        mlflow.log_metric("loss", 1.0 / step, step=step)
        session.report({"loss": 1.0 / step})
    mlflow.end_run()


def test_setup_mlflow_inside_a_trial(tmp_path):
    pytest.importorskip("mlflow", reason="needs kubetune[mlflow]")
    from mlflow.tracking import MlflowClient

    uri = f"file://{tmp_path}/mlruns"
    grid = _fit(setup_mlflow_trainable, param_space={"uri": uri, "a": 3})
    assert grid.num_errors == 0, grid.errors
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("from-trial").experiment_id])
    assert run.data.params["a"] == "3"
    assert run.info.run_name == "from-trial"  # Ray: run_name, else the experiment name
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [1.0, 0.5]


def test_setup_mlflow_without_an_experiment_says_what_to_pass(tmp_path):
    pytest.importorskip("mlflow", reason="needs kubetune[mlflow]")
    from kubetune.air.integrations.mlflow import setup_mlflow

    with pytest.raises(ValueError, match="experiment_name"):
        setup_mlflow({}, tracking_uri=f"file://{tmp_path}/mlruns", experiment_name="missing")


# -- Weights & Biases ---------------------------------------------------------------------------


@pytest.mark.slow
def test_wandb_logger_callback_offline_writes_one_run_per_trial(monkeypatch):
    pytest.importorskip("wandb", reason="needs kubetune[wandb]")
    from kubetune.air.integrations.wandb import WandbLoggerCallback

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    grid = _fit(
        T.three_reports,
        [WandbLoggerCallback(project="kt-test")],
        param_space={"x": tune.grid_search([1, 2])},
    )
    assert grid.num_errors == 0
    for result in grid:
        runs = glob.glob(os.path.join(result.path, "wandb", "offline-run-*"))
        assert len(runs) == 1, os.listdir(result.path)
        # the run's id is the trial's
        trial_id = result.metrics["trial_id"]
        assert runs[0].endswith(f"-{trial_id}")
        assert glob.glob(os.path.join(runs[0], "run-*.wandb"))


def test_wandb_callback_needs_a_project(monkeypatch):
    pytest.importorskip("wandb", reason="needs kubetune[wandb]")
    from kubetune.air.integrations.wandb import WandbLoggerCallback

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_PROJECT_NAME", raising=False)
    with pytest.raises(ValueError, match="project"):
        _fit(T.three_reports, [WandbLoggerCallback()])


# -- XGBoost and LightGBM -----------------------------------------------------------------------


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    return x[:300], y[:300], x[300:], y[300:]


def xgb_trainable(config):
    import xgboost as xgb

    from kubetune.tune.integration.xgboost import TuneReportCheckpointCallback

    xt, yt, xv, yv = _data()
    xgb.train(
        {
            "objective": "binary:logistic",
            "eval_metric": ["logloss", "error"],
            "max_depth": config["max_depth"],
            "nthread": 1,
        },
        xgb.DMatrix(xt, label=yt),
        num_boost_round=6,
        evals=[(xgb.DMatrix(xv, label=yv), "eval")],
        verbose_eval=False,
        callbacks=[TuneReportCheckpointCallback(metrics={"loss": "eval-logloss"}, frequency=2)],
    )


def test_xgboost_reports_each_round_and_checkpoints_the_booster():
    pytest.importorskip("xgboost", reason="needs kubetune[xgboost]")
    from kubetune.tune.integration.xgboost import TuneReportCheckpointCallback

    grid = _fit(
        xgb_trainable,
        param_space={"max_depth": tune.grid_search([1, 3])},
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
    )
    assert grid.num_errors == 0, grid.errors
    for result in grid:
        history = result.history()
        assert [r["training_iteration"] for r in history] == [1, 2, 3, 4, 5, 6]
        losses = [r["loss"] for r in history]
        assert losses[-1] < losses[0]  # it learned
        assert [r.get("checkpoint_dir_name") is not None for r in history] == [
            False,
            True,
            False,
            True,
            False,
            True,
        ]  # every 2 rounds; the end coincides, so no extra checkpoint
        booster = TuneReportCheckpointCallback.get_model(result.checkpoint)
        assert booster.num_boosted_rounds() == 6


def lgb_trainable(config):
    import lightgbm as lgb

    from kubetune.tune.integration.lightgbm import TuneReportCheckpointCallback

    xt, yt, xv, yv = _data()
    train = lgb.Dataset(xt, label=yt)
    lgb.train(
        {
            "objective": "binary",
            "metric": "binary_logloss",
            "verbose": -1,
            "num_leaves": config["num_leaves"],
            "num_threads": 1,
        },
        train,
        num_boost_round=5,
        valid_sets=[lgb.Dataset(xv, label=yv, reference=train)],
        valid_names=["valid"],
        callbacks=[TuneReportCheckpointCallback({"loss": "valid-binary_logloss"})],
    )


def test_lightgbm_reports_each_round_and_checkpoints_at_the_end():
    pytest.importorskip("lightgbm", reason="needs kubetune[lightgbm]")
    from kubetune.tune.integration.lightgbm import TuneReportCheckpointCallback

    grid = _fit(lgb_trainable, param_space={"num_leaves": 4})
    assert grid.num_errors == 0, grid.errors
    history = grid[0].history()
    assert [r["training_iteration"] for r in history] == [1, 2, 3, 4, 5]
    assert history[-1]["loss"] < history[0]["loss"]
    assert [bool(r.get("checkpoint_dir_name")) for r in history] == [False] * 4 + [True]
    booster = TuneReportCheckpointCallback.get_model(grid[0].checkpoint)
    assert booster.current_iteration() == 5


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_the_deprecated_tune_report_callback_reports_metrics_only(library):
    pytest.importorskip(library, reason=f"needs kubetune[{library}]")
    import importlib

    module = importlib.import_module(f"kubetune.tune.integration.{library}")
    with pytest.warns(DeprecationWarning, match="TuneReportCheckpointCallback"):
        callback = module.TuneReportCallback({"loss": "eval-logloss"})
    assert isinstance(callback, module.TuneReportCheckpointCallback)
    assert (callback._frequency, callback._checkpoint_at_end) == (0, False)
    assert callback._filename == module.TuneReportCheckpointCallback.CHECKPOINT_NAME
    assert callback._select({"eval-logloss": 0.5, "eval-error": 0.1}) == {"loss": 0.5}
    with pytest.raises(ValueError, match="frequency"):
        module.TuneReportCheckpointCallback(frequency=-1)


def test_a_missing_library_names_the_extra_to_install():
    # a fresh interpreter where the libraries cannot be imported
    code = (
        "import sys\n"
        "for name in ('mlflow', 'wandb', 'xgboost', 'lightgbm', 'tensorboardX'):\n"
        "    sys.modules[name] = None\n"
        "msgs = []\n"
        "from kubetune.air.integrations.mlflow import MLflowLoggerCallback\n"
        "from kubetune.air.integrations.wandb import WandbLoggerCallback\n"
        "from kubetune.tune.logger import TBXLoggerCallback\n"
        "for make in (MLflowLoggerCallback, WandbLoggerCallback, TBXLoggerCallback):\n"
        "    try:\n"
        "        make()\n"
        "    except ImportError as e:\n"
        "        msgs.append(str(e))\n"
        "for mod in ('xgboost', 'lightgbm'):\n"
        "    try:\n"
        "        __import__('kubetune.tune.integration.' + mod)\n"
        "    except ImportError as e:\n"
        "        msgs.append(str(e))\n"
        "print('\\n'.join(msgs))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    for extra in ("mlflow", "wandb", "tensorboard", "xgboost", "lightgbm"):
        assert f"pip install 'kubetune[{extra}]'" in out, out
