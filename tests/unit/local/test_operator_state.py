"""Results of an experiment the operator wrote (its segmented snapshot, kubetune.engine.snapshot)
read as those of a local one: ResultGrid, Tuner.restore().get_results(), kubetune results/plot.

The operator's snapshot is made here from a local run's engine with the operator's own writer
(SnapshotWriter, the head wrapped as {"engine", "experiment"}), so both trees hold the same
trials and results and the readers must agree on everything.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from kubetune import air, tune
from kubetune.cli import main
from kubetune.engine import ExperimentEngine
from kubetune.engine.snapshot import SnapshotWriter
from kubetune.local.result_grid import ResultGrid
from kubetune.local.stored_state import operator_trial_dirname, read_state
from tests.unit.local import trainables as T


def as_operator_tree(local_dir: str, target: str, segment_trials: int) -> int:
    """Copy a local experiment to ``target`` with the operator's snapshot; returns segments."""
    shutil.copytree(local_dir, target)
    os.remove(os.path.join(target, "experiment_state.json"))
    shutil.rmtree(os.path.join(target, ".kubetune"))
    with open(os.path.join(local_dir, "experiment_state.json"), encoding="utf-8") as f:
        state = json.load(f)
    for trial in state["trials"]:  # the operator's folders are its TuneTrials' names
        os.rename(
            os.path.join(target, trial["dirname"]),
            os.path.join(target, operator_trial_dirname("opexp", trial["trial_id"])),
        )
    engine = ExperimentEngine.from_json(state["engine"])
    writer = SnapshotWriter(segment_trials, wrap=lambda st: {"engine": st, "experiment": "opexp"})
    for key, blob in writer.render(engine):
        path = os.path.join(target, *key.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(blob)
    return len(writer.segments)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("opstate")
    grid = tune.Tuner(
        T.train_func,
        param_space={"epochs": 3, "k": tune.grid_search([1, 2, 3, 4, 5])},
        tune_config=tune.TuneConfig(metric="step", mode="max"),
        run_config=air.RunConfig(storage_path=str(root), name="local", verbose=0),
    ).fit()
    segments = as_operator_tree(grid.experiment_path, str(root / "operator"), segment_trials=2)
    return grid, str(root / "operator"), segments


def test_the_snapshot_has_segments_and_reads_whole(trees):
    _, operator_dir, segments = trees
    assert segments == 2  # 5 finished trials: two sealed segments of 2, one trial in the head
    with open(os.path.join(operator_dir, "experiment_state.json"), encoding="utf-8") as f:
        head = json.load(f)
    assert len(head["engine"]["trials"]) == 1
    state = read_state(operator_dir)
    assert state["writer"] == "operator" and state["name"] == "opexp"
    assert [t["status"] for t in state["trials"]] == ["TERMINATED"] * 5
    assert state["metric"] == "step" and state["mode"] == "max"


def test_result_grid_of_the_operator_tree_equals_the_local_one(trees):
    local, operator_dir, _ = trees
    grid = ResultGrid.from_path(operator_dir)
    assert len(grid) == len(local) == 5
    assert grid.num_terminated == 5 and grid.num_errors == 0
    for mine, theirs in zip(grid, local, strict=True):
        assert mine.config == theirs.config
        assert mine.metrics == theirs.metrics
        assert mine.metrics_dataframe.equals(theirs.metrics_dataframe)
        assert mine.checkpoint is not None
        assert mine.checkpoint.to_dict() == theirs.checkpoint.to_dict() == {"step": 2}
        assert [m for _, m in mine.best_checkpoints] == [m for _, m in theirs.best_checkpoints]
    assert grid.get_best_result().config == local.get_best_result().config


def test_restore_then_get_results_reads_the_operator_tree(trees):
    _, operator_dir, _ = trees
    tuner = tune.Tuner.restore(operator_dir, T.train_func)
    results = tuner.get_results()
    assert len(results) == 5
    assert sorted(r.config["k"] for r in results) == [1, 2, 3, 4, 5]


def test_fit_of_a_restored_operator_experiment_says_where_it_runs(trees, monkeypatch):
    _, operator_dir, _ = trees
    monkeypatch.delenv("KUBETUNE_MODE", raising=False)
    monkeypatch.setenv("KUBETUNE_CONFIG", "")
    tuner = tune.Tuner.restore(operator_dir, T.train_func)
    with pytest.raises(RuntimeError, match=r"spec\.restoreFrom"):
        tuner.fit()


def test_cli_results_and_plot_read_the_operator_tree(trees, capsys, tmp_path):
    _, operator_dir, _ = trees
    assert main(["results", operator_dir]) == 0
    out = capsys.readouterr().out
    rows = [line.split("\t") for line in out.splitlines()[1:-1]]
    assert len(rows) == 5 and {r[1] for r in rows} == {"TERMINATED"}
    assert out.splitlines()[-1] == "finished"
    png = tmp_path / "curves.png"
    pytest.importorskip("matplotlib", reason="kubetune plot needs the plot extra")
    assert main(["plot", operator_dir, "--metric", "step", "-o", str(png)]) == 0
    assert png.stat().st_size > 0
