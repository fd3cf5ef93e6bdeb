"""Multi-worker trials in local mode: a TorchTrainer's workers are processes on this machine
with the torch.distributed rendezvous environment; they all-reduce over TCP (tests/allreduce.py),
rank 0 reports; a failing worker restarts every worker from the latest checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from kubetune import air, tune
from kubetune.air.config import ScalingConfig
from kubetune.train.torch import TorchConfig, TorchTrainer
from tests import allreduce


def _rows(result) -> list[dict]:
    lines = (Path(result.path) / "result.json").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_three_workers_all_reduce_and_rank_0_reports(tmp_path):
    grid = tune.Tuner(
        allreduce.trainer,
        param_space={"train_loop_config": {"scale": tune.grid_search([1, 10])}},
        run_config=air.RunConfig(storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert not grid.errors
    by_scale = {r.config["train_loop_config"]["scale"]: r for r in grid}
    for scale, result in by_scale.items():
        rows = _rows(result)
        # rank 0's reports alone: one row per step, each the sum over 3 workers
        assert [r["step"] for r in rows] == [1, 2, 3, 4]
        assert {r["sum"] for r in rows} == {scale * (1 + 2 + 3)}
        assert {r["reporter_rank"] for r in rows} == {0}
        assert {r["world_size"] for r in rows} == {3}
        assert {r["master"] for r in rows} == {"127.0.0.1"}


def test_a_failing_worker_restarts_all_workers_from_the_checkpoint(tmp_path):
    trainer = TorchTrainer(
        allreduce.train_loop,
        train_loop_config={"steps": 5, "fail_rank": 2, "fail_at": 2},
        torch_config=TorchConfig(init_process_group=False),
        scaling_config=ScalingConfig(num_workers=3, resources_per_worker={"CPU": 0.1}),
    )
    grid = tune.Tuner(
        trainer,
        run_config=air.RunConfig(
            storage_path=str(tmp_path),
            failure_config=air.FailureConfig(max_failures=1),
            verbose=0,
        ),
    ).fit()
    result = grid[0]
    assert result.error is None
    rows = _rows(result)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert {r["sum"] for r in rows} == {6.0}
    # steps 1-2 by the first attempt; 3-5 after every worker restored step 2's checkpoint
    assert [r["restored_from"] for r in rows] == [0, 0, 2, 2, 2]
    assert [r["restored_total"] for r in rows] == [0, 0, 6, 6, 6]  # every worker restored
    state = json.loads((Path(grid.experiment_path) / "experiment_state.json").read_text())
    assert state["trials"][0]["num_failures"] == 1


def test_a_failing_worker_without_retries_fails_the_trial_naming_the_rank(tmp_path):
    trainer = TorchTrainer(
        allreduce.train_loop,
        train_loop_config={"steps": 5, "fail_rank": 1, "fail_at": 0},
        torch_config=TorchConfig(init_process_group=False),
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.1}),
    )
    grid = tune.Tuner(trainer, run_config=air.RunConfig(storage_path=str(tmp_path), verbose=0))
    result = grid.fit()[0]
    assert result.error is not None
    assert "worker rank 1" in str(result.error) and "fails at step 0" in str(result.error)


def test_with_resources_takes_a_scaling_config_for_a_plain_function(tmp_path):
    trainable = tune.with_resources(
        allreduce.train_loop, ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.1})
    )
    grid = tune.Tuner(
        trainable,
        param_space={"steps": 2, "scale": 5},
        run_config=air.RunConfig(storage_path=str(tmp_path), verbose=0),
    ).fit()
    rows = _rows(grid[0])
    assert [r["sum"] for r in rows] == [15.0, 15.0]  # 5 * (1 + 2)
    assert {r["world_size"] for r in rows} == {2}
