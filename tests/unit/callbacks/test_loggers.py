"""Logger callbacks: TensorBoard files written by default (read back with TensorBoard's own
event reader), the file loggers' names, and a user LoggerCallback."""

from __future__ import annotations

import glob
import os

import pytest

from kubetune import air, tune
from kubetune.tune.logger import (
    CSVLoggerCallback,
    JsonLoggerCallback,
    LoggerCallback,
    TBXLoggerCallback,
    pretty_print,
)

from . import trainables as T

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard (dev dependency) reads the event files back",
)
pytest.importorskip("tensorboardX", reason="TBXLoggerCallback needs kubetune[tensorboard]")


def _read(trial_dir):
    files = glob.glob(os.path.join(trial_dir, "events.out.tfevents.*"))
    assert files, f"no event file in {trial_dir}: {os.listdir(trial_dir)}"
    acc = event_accumulator.EventAccumulator(
        trial_dir, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    return acc


def _hparams(acc):
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    out = {}
    for tag, raw in content.items():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        out[tag] = data
    return out


def test_tensorboard_files_are_written_by_default_with_scalars_and_hparams():
    grid = tune.Tuner(
        T.counts,
        param_space={"lr": tune.grid_search([0.1, 0.2]), "const": "c", "opt": {"m": 0.9}},
        run_config=air.RunConfig(verbose=0, stop={"training_iteration": 4}),
    ).fit()
    assert len(grid) == 2
    for result in grid:
        acc = _read(result.path)
        tags = acc.Tags()["scalars"]
        assert "ray/tune/score" in tags and "ray/tune/nested/value" in tags
        # Ray leaves these out of TensorBoard
        for skipped in ("training_iteration", "time_total_s", "timestamp", "pid"):
            assert f"ray/tune/{skipped}" not in tags
        score = acc.Scalars("ray/tune/score")
        assert [(e.step, e.value) for e in score] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
        assert "ray/tune/hist" in acc.Tags()["histograms"]
        hp = _hparams(acc)
        start = hp["_hparams_/session_start_info"].session_start_info
        assert dict(start.hparams)["lr"].number_value == result.config["lr"]
        # constants are not hyperparameters (Ray logs the sampled ones only)
        assert "const" not in start.hparams and "opt/m" not in start.hparams
        experiment = hp["_hparams_/experiment"].experiment
        metric_tags = {m.name.tag for m in experiment.metric_infos}
        assert "ray/tune/score" in metric_tags


def test_the_default_tensorboard_logger_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    grid = tune.Tuner(T.three_reports, run_config=air.RunConfig(verbose=0)).fit()
    assert not glob.glob(os.path.join(grid[0].path, "events.out.tfevents.*"))
    assert os.path.exists(os.path.join(grid[0].path, "progress.csv"))  # the runner's files


def test_listing_ray_s_loggers_explicitly_gives_one_set_of_files():
    grid = tune.Tuner(
        T.three_reports,
        run_config=air.RunConfig(
            verbose=0,
            callbacks=[CSVLoggerCallback(), JsonLoggerCallback(), TBXLoggerCallback()],
        ),
    ).fit()
    path = grid[0].path
    assert len(glob.glob(os.path.join(path, "events.out.tfevents.*"))) == 1
    with open(os.path.join(path, "result.json")) as f:
        assert len(f.read().splitlines()) == 3  # written once, by the runner
    with open(os.path.join(path, "progress.csv")) as f:
        assert len(f.read().splitlines()) == 4  # header and three rows


def test_a_user_logger_callback_gets_start_result_save_and_end():
    events = []

    class MyLogger(LoggerCallback):
        def log_trial_start(self, trial):
            events.append("start")

        def log_trial_result(self, iteration, trial, result):
            events.append(f"result {result['training_iteration']}")

        def log_trial_save(self, trial):
            events.append("save")

        def log_trial_end(self, trial, failed=False):
            events.append(f"end failed={failed}")

    tune.Tuner(T.three_reports, run_config=air.RunConfig(verbose=0, callbacks=[MyLogger()])).fit()
    assert events == ["start", "result 1", "result 2", "save", "result 3", "end failed=False"]
    events.clear()
    tune.Tuner(T.always_fails, run_config=air.RunConfig(verbose=0, callbacks=[MyLogger()])).fit()
    assert events == ["start", "result 1", "end failed=True"]


def test_pretty_print_leaves_out_config():
    text = pretty_print({"score": 1.5, "config": {"a": 1}, "nested": {"b": 2}})
    assert "config" not in text and "score: 1.5" in text and "b: 2" in text
