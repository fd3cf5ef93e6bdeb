"""Ray's names at Ray's places, each doing what Ray's does."""

from __future__ import annotations

import os

import pytest

import kubetune
from kubetune import air, train, tune

from . import trainables as T


def test_names_exist_where_ray_exports_them():
    for name in (
        "run",
        "run_experiments",
        "Experiment",
        "register_trainable",
        "register_env",
        "get_context",
        "TuneContext",
        "ExperimentAnalysis",
        "Result",
        "ResumeConfig",
        "CLIReporter",
        "JupyterNotebookReporter",
        "ProgressReporter",
        "TuneError",
        "create_searcher",
        "create_scheduler",
        "Callback",
        "ScalingConfig",
    ):
        assert hasattr(tune, name), name
    for name in (
        "Checkpoint",
        "RunConfig",
        "FailureConfig",
        "CheckpointConfig",
        "ScalingConfig",
        "get_context",
        "report",
        "Result",
    ):
        assert hasattr(train, name), name
    assert air.Result is tune.Result is train.Result
    assert hasattr(kubetune.tune, "experiment")
    from kubetune.tune.execution.placement_groups import PlacementGroupFactory
    from kubetune.tune.experiment import Trial
    from kubetune.tune.utils.mock_trainable import MyTrainableClass

    assert PlacementGroupFactory is tune.PlacementGroupFactory
    assert Trial("t", trial_id="abc").trial_name == "t_abc"
    assert issubclass(MyTrainableClass, tune.Trainable)
    from kubetune.search import create_searcher

    assert tune.create_searcher is create_searcher
    assert isinstance(tune.create_scheduler("asha"), tune.schedulers.ASHAScheduler)


def test_importing_kubetune_tune_stays_light():
    import subprocess
    import sys

    code = (
        "import sys; from kubetune import tune; tune.Callback; tune.experiment; tune.run;"
        "bad = [m for m in ('tensorboardX', 'mlflow', 'wandb', 'xgboost', 'numpy', 'pandas')"
        " if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_tune_run_returns_an_experiment_analysis():
    analysis = tune.run(
        T.three_reports,
        config={"x": tune.grid_search([1, 3])},
        metric="score",
        mode="max",
        verbose=0,
    )
    assert isinstance(analysis, tune.ExperimentAnalysis)
    assert len(analysis.trials) == 2
    assert analysis.best_config["x"] == 3
    assert analysis.best_result["score"] == 9.0
    assert analysis.best_trial.status == "TERMINATED"
    assert analysis.best_checkpoint is not None and os.path.isdir(analysis.best_checkpoint.path)
    assert os.path.isdir(analysis.best_logdir)
    assert set(analysis.results) == {t.trial_id for t in analysis.trials}
    assert analysis.get_best_config("score", "min")["x"] == 1
    configs = analysis.get_all_configs()
    assert sorted(c["x"] for c in configs.values()) == [1, 3]
    # a fresh analysis from the path reads the same
    again = tune.ExperimentAnalysis(
        analysis.experiment_path, default_metric="score", default_mode="max"
    )
    assert again.best_config == analysis.best_config
    assert again.best_trial.evaluated_params == {"x": 3}


def test_tune_run_raises_when_a_trial_failed_unless_told_not_to():
    with pytest.raises(tune.TuneError, match="Trials did not complete"):
        tune.run(T.always_fails, verbose=0)
    analysis = tune.run(T.always_fails, name="no_raise", verbose=0, raise_on_failed_trial=False)
    assert [t.status for t in analysis.trials] == ["ERROR"]
    assert analysis.trials[0].error_file.endswith("error.txt")


def test_tune_run_with_stop_resources_and_checkpoint_args():
    analysis = tune.run(
        T.counts,
        stop={"training_iteration": 2},
        resources_per_trial={"cpu": 1},
        keep_checkpoints_num=1,
        checkpoint_score_attr="min-score",
        verbose=0,
    )
    assert analysis.trials[0].last_result["training_iteration"] == 2


def test_tune_run_resume_continues_the_named_experiment(tmp_path):
    path = str(tmp_path / "store")
    tune.run(T.three_reports, name="again", storage_path=path, verbose=0)
    # without resume, a new run under the same name (as in Ray), the first one set aside
    tune.run(T.three_reports, name="again", storage_path=path, verbose=0)
    analysis = tune.run(T.three_reports, name="again", storage_path=path, verbose=0, resume=True)
    assert len(analysis.trials) == 1  # the finished trial was kept, not run again


def test_run_experiments_with_experiment_objects_and_dicts():
    trials = tune.run_experiments(
        tune.Experiment("exp_a", T.three_reports, config={"x": 2}, num_samples=2), verbose=0
    )
    assert len(trials) == 2 and all(t.status == "TERMINATED" for t in trials)
    trials = tune.run_experiments(
        {"exp_b": {"run": T.three_reports, "config": {"x": 1}, "stop": {"training_iteration": 1}}},
        verbose=0,
    )
    assert [t.last_result["training_iteration"] for t in trials] == [1]
    with pytest.raises(ValueError, match="unknown spec keys"):
        tune.run_experiments({"bad": {"run": T.three_reports, "confg": {}}})


def test_register_trainable_lets_tuner_and_run_take_a_name():
    tune.register_trainable("three_reports", T.three_reports)
    grid = tune.Tuner("three_reports", run_config=air.RunConfig(verbose=0)).fit()
    assert grid[0].metrics["score"] == 3.0
    analysis = tune.run("three_reports", name="by_name", verbose=0)
    assert analysis.trials[0].last_result["score"] == 3.0
    with pytest.raises(ValueError, match="not registered"):
        tune.Tuner("nope")
    with pytest.raises(TypeError, match="trainable must be"):
        tune.register_trainable("bad", 42)


def test_mock_trainable_runs_as_in_ray():
    from kubetune.tune.utils.mock_trainable import MOCK_TRAINABLE_NAME, register_mock_trainable

    register_mock_trainable()
    analysis = tune.run(
        MOCK_TRAINABLE_NAME,
        config={"width": 2, "height": 3},
        stop={"training_iteration": 3},
        verbose=0,
    )
    import math

    assert analysis.trials[0].last_result["episode_reward_mean"] == pytest.approx(
        3 * math.tanh(3 / 2)
    )


def test_get_context_inside_a_trial():
    grid = tune.Tuner(T.context_names, run_config=air.RunConfig(name="ctx_exp", verbose=0)).fit()
    metrics = grid[0].metrics
    assert metrics["ctx_trial_name"] == os.path.basename(grid[0].path)
    assert metrics["ctx_trial_id"] == metrics["trial_id"]
    assert metrics["ctx_experiment"] == "ctx_exp"
    assert metrics["ctx_world_size"] == 1
    assert train.get_context is tune.get_context


def test_resume_config_maps_to_restore_flags():
    R = tune.ResumeConfig.ResumeType
    assert tune.ResumeConfig().restore_flags() == {
        "resume_unfinished": True,
        "resume_errored": False,
        "restart_errored": False,
    }
    flags = tune.ResumeConfig(errored=R.RESTART, unfinished="skip").restore_flags()
    assert flags == {"resume_unfinished": False, "resume_errored": False, "restart_errored": True}
    with pytest.raises(ValueError, match=r"ResumeConfig\.errored"):
        tune.ResumeConfig(errored="again")
    with pytest.raises(ValueError, match=r"ResumeConfig\.finished"):
        tune.ResumeConfig(finished=R.RESTART).restore_flags()


def test_tuner_restore_takes_a_resume_config(tmp_path):
    grid = tune.Tuner(
        T.always_fails, run_config=air.RunConfig(storage_path=str(tmp_path), name="rc", verbose=0)
    ).fit()
    assert grid.num_errors == 1
    restored = tune.Tuner.restore(
        grid.experiment_path,
        T.three_reports,
        _resume_config=tune.ResumeConfig(errored=tune.ResumeConfig.ResumeType.RESTART),
    )
    grid = restored.fit()
    assert grid.num_errors == 0 and grid[0].metrics["score"] == 3.0


def test_cli_reporter_prints_the_chosen_columns(capsys):
    reporter = tune.CLIReporter(metric_columns=["score"], parameter_columns=["x"])
    tune.Tuner(
        T.three_reports,
        param_space={"x": tune.grid_search([5, 6])},
        run_config=air.RunConfig(verbose=1, progress_reporter=reporter),
    ).fit()
    out = capsys.readouterr().out
    assert "Trial name" in out and "score" in out and "Number of trials: 2" in out
    assert "TERMINATED" in out and "18" in out  # x=6: last score 18
    with pytest.raises(TypeError, match=r"RunConfig\.progress_reporter"):
        tune.Tuner(
            T.three_reports,
            run_config=air.RunConfig(name="bad_reporter", verbose=0, progress_reporter=object()),
        ).fit()


def test_jupyter_reporter_falls_back_to_text(capsys):
    reporter = tune.JupyterNotebookReporter(overwrite=False)
    reporter.add_metric_column("score")
    tune.Tuner(
        T.three_reports, run_config=air.RunConfig(verbose=1, progress_reporter=reporter)
    ).fit()
    assert "score" in capsys.readouterr().out
