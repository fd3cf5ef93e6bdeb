"""Local mode through Tuner.fit(): the reference page's examples end to end, schedulers,
failures and bad input."""

from __future__ import annotations

import itertools
import math
import os

import pytest

from kubetune import air, tune
from kubetune.tune.schedulers import ASHAScheduler

from . import trainables as T

FINAL = T.objective(19, 2, 4)


def fit(trainable, **kwargs):
    kwargs.setdefault("run_config", air.RunConfig(verbose=0))
    return tune.Tuner(trainable, **kwargs).fit()


def test_function_api_reference_example():
    results = fit(T.every_step, param_space={"a": 2, "b": 4})
    assert len(results) == 1 and results.num_errors == 0
    metrics = results[0].metrics
    assert math.isclose(metrics["score"], FINAL)
    assert metrics["training_iteration"] == 20
    assert metrics["done"] is True
    assert results[0].config == {"a": 2, "b": 4}


def test_function_api_returned_final_metrics():
    results = fit(T.returns_final, param_space={"a": 2, "b": 4})
    assert math.isclose(results[0].metrics["score"], FINAL)


def test_function_api_checkpointing_example():
    results = fit(T.train_func)
    result = results[0]
    assert result.metrics["training_iteration"] == 2
    assert result.checkpoint is not None
    assert result.checkpoint.to_dict() == {"step": 1}
    assert os.path.basename(result.checkpoint.path) == "checkpoint_000001"


def test_class_api_reference_example():
    class Trainable(tune.Trainable):
        def setup(self, config: dict):
            self.x = 0
            self.a = config["a"]
            self.b = config["b"]

        def step(self):
            score = T.objective(self.x, self.a, self.b)
            self.x += 1
            return {"score": score}

    results = fit(
        Trainable,
        run_config=air.RunConfig(stop={"training_iteration": 20}, verbose=0),
        param_space={"a": 2, "b": 4},
    )
    assert math.isclose(results[0].metrics["score"], FINAL)
    assert results[0].metrics["training_iteration"] == 20


def test_class_api_checkpoint_at_end_and_frequency():
    results = fit(
        T.Counter,
        param_space={"a": 1},
        run_config=air.RunConfig(
            stop={"training_iteration": 25},
            checkpoint_config=air.CheckpointConfig(checkpoint_frequency=10, checkpoint_at_end=True),
            verbose=0,
        ),
    )
    result = results[0]
    names = sorted(os.path.basename(c.path) for c, _ in result.best_checkpoints)
    assert names == ["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"]
    assert result.checkpoint.to_dict() == {"n": 25}


def test_grid_and_random_search_with_best_result():
    results = fit(
        T.every_step,
        param_space={"a": tune.grid_search([1, 2, 3]), "b": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=2, seed=3),
    )
    assert len(results) == 6
    best = results.get_best_result()
    assert best.config["a"] == 3
    assert best.metrics["score"] == max(r.metrics["score"] for r in results)
    worst = results.get_best_result(metric="score", mode="min")
    assert worst.config["a"] == 1
    df = results.get_dataframe()
    assert len(df) == 6 and "config/a" in df.columns
    assert len(results[0].metrics_dataframe) == 20


def test_asha_terminates_trials_early():
    scheduler = ASHAScheduler(max_t=16, grace_period=1, reduction_factor=2)
    results = fit(
        T.curve,
        param_space={
            "level": tune.grid_search([0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]),
            "iters": 16,
        },
        tune_config=tune.TuneConfig(
            metric="acc", mode="max", scheduler=scheduler, max_concurrent_trials=2
        ),
    )
    iterations = {r.config["level"]: r.metrics["training_iteration"] for r in results}
    # good trials come first, so ASHA has a bar to cut the later, worse ones at
    assert iterations[0.8] == 16  # the best trial runs to max_t
    stopped = [it for it in iterations.values() if it < 16]
    assert stopped, iterations
    # stopped exactly at rung milestones, never past one
    assert set(stopped) <= {1, 2, 4, 8}, iterations


def test_failing_trainable_ends_with_a_summary(capsys):
    results = tune.Tuner(
        T.always_fails,
        param_space={"k": tune.grid_search([1, 2, 3])},
        run_config=air.RunConfig(verbose=1),
    ).fit()
    assert results.num_errors == 3
    assert "bad trainable" in str(results.errors[0])
    err = capsys.readouterr().err
    assert "3 errored" in err and "every trial failed" in err
    assert "error.txt" in err


def test_retries_from_checkpoint_up_to_max_failures(tmp_path):
    # always_fails never gets past its first report: each retry fails again
    results = fit(
        T.always_fails,
        run_config=air.RunConfig(failure_config=air.FailureConfig(max_failures=2), verbose=0),
    )
    state = os.path.join(results.experiment_path, "experiment_state.json")
    import json
    from pathlib import Path

    trial = json.loads(Path(state).read_text())["trials"][0]
    assert trial["num_failures"] == 3 and trial["status"] == "ERROR"


def test_storage_path_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot create storage directory"):
        fit(T.every_step, run_config=air.RunConfig(storage_path=str(blocker / "sub"), verbose=0))


def test_more_gpus_than_the_machine_has_fails_before_running(tmp_path):
    wrapped = tune.with_resources(T.every_step, {"gpu": 64})
    with pytest.raises(ValueError, match="needs 64 GPUs but this machine has"):
        fit(wrapped, param_space={"a": 1, "b": 1})
    assert not (tmp_path / "results").exists()  # nothing was written


def test_checkpoint_frequency_with_function_api_is_refused():
    with pytest.raises(ValueError, match="only work with the Class API"):
        fit(
            T.train_func,
            run_config=air.RunConfig(
                checkpoint_config=air.CheckpointConfig(checkpoint_frequency=2), verbose=0
            ),
        )


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_same_name_twice_runs_beside_the_first_and_keeps_it(capfd):
    """As in Ray (whose mlflow_example runs two Tuners under one name), the second run goes
    into the same folder; unlike Ray, the first run's state is set aside, not overwritten,
    and its trial folders are left as they were."""
    run = air.RunConfig(name="twice", verbose=0)
    first = fit(T.returns_final, param_space={"a": 1, "b": 1}, run_config=run)
    exp = first.experiment_path
    before = {
        name: _read(os.path.join(exp, name, "result.json"))
        for name in os.listdir(exp)
        if os.path.isfile(os.path.join(exp, name, "result.json"))
    }
    state = _read(os.path.join(exp, "experiment_state.json"))
    capfd.readouterr()
    second = fit(T.returns_final, param_space={"a": 2, "b": 4}, run_config=run)
    assert "holds an earlier run named 'twice'" in capfd.readouterr().err
    assert second.experiment_path == exp
    assert [r.config for r in second] == [{"a": 2, "b": 4}]  # this run's trials only
    assert os.path.basename(second[0].path) not in before  # a trial folder of its own
    for name, data in before.items():
        assert _read(os.path.join(exp, name, "result.json")) == data
    (kept,) = os.listdir(os.path.join(exp, ".kubetune", "earlier"))
    earlier = os.path.join(exp, ".kubetune", "earlier", kept)
    assert _read(os.path.join(earlier, "experiment_state.json")) == state
    assert os.path.exists(os.path.join(earlier, "tuner.pkl"))
    # restoring the folder continues the newest run
    restored = tune.Tuner.restore(exp, T.returns_final).get_results()
    assert [r.config for r in restored] == [{"a": 2, "b": 4}]
    third = fit(T.returns_final, param_space={"a": 3, "b": 1}, run_config=run)
    assert len(os.listdir(os.path.join(exp, ".kubetune", "earlier"))) == 2
    trial_dirs = {os.path.basename(r.path) for r in (*first, *second, *third)}
    assert len(trial_dirs) == 3


def test_with_parameters_objects_are_stored_once():
    data = list(range(1000))

    def train(config, data=None):
        from kubetune.air import session

        session.report({"total": sum(data)})

    results = fit(
        tune.with_parameters(train, data=data), param_space={"k": tune.grid_search([1, 2])}
    )
    assert [r.metrics["total"] for r in results] == [sum(data)] * 2
    params = os.path.join(results.experiment_path, ".kubetune", "params")
    assert os.listdir(params) == ["data.pkl"]
    size = os.path.getsize(os.path.join(results.experiment_path, ".kubetune", "trainable.pkl"))
    assert size < 20_000  # the data travels beside the trainable, not inside it


def test_reuse_actors_calls_reset_config_in_the_same_process():
    results = fit(
        T.Counter,
        param_space={"a": tune.grid_search([1, 2, 3, 4])},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
        run_config=air.RunConfig(stop={"training_iteration": 3}, verbose=0),
    )
    assert results.num_errors == 0
    assert [r.metrics["training_iteration"] for r in results] == [3, 3, 3, 3]
    assert len({r.metrics["pid"] for r in results}) == 1  # one process for all four
    assert sorted(r.metrics["resets"] for r in results) == [0, 1, 2, 3]
    assert [r.metrics["score"] for r in results] == [3, 6, 9, 12]  # each with its own config


def test_reuse_actors_refused_reset_starts_a_new_process():
    results = fit(
        T.MyTrainableNoReset,
        param_space={"a": tune.grid_search([1, 2])},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
        run_config=air.RunConfig(stop={"training_iteration": 2}, verbose=0),
    )
    assert results.num_errors == 0
    assert len({r.metrics["pid"] for r in results}) == 2


def test_pbt_exploits_restart_bottom_trials_from_top_checkpoints():
    from kubetune.tune.schedulers import PopulationBasedTraining

    pbt = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=3,
        hyperparam_mutations={"lr": tune.uniform(0.01, 1.0)},
        quantile_fraction=0.5,
        seed=5,
    )
    results = fit(
        tune.with_resources(T.PBTCounter, {"cpu": 0.5}),
        param_space={"lr": tune.grid_search([0.01, 0.02, 0.5, 1.0])},
        tune_config=tune.TuneConfig(metric="value", mode="max", scheduler=pbt),
        run_config=air.RunConfig(stop={"training_iteration": 12}, verbose=0),
    )
    assert results.num_errors == 0
    restarts = []
    for result in results:
        rows = result.history()
        assert rows[-1]["training_iteration"] == 12
        for prev, row in itertools.pairwise(rows):
            if row["iterations_since_restore"] == 1:
                restarts.append((prev, row))
                assert 0.01 <= row["lr"] <= 1.0  # mutations stay inside the declared space
    assert restarts, "PBT never exploited"
    # an exploited trial continues from its donor's state: its value jumps, not restarts at 0
    assert all(row["value"] > row["lr"] for _, row in restarts)


def test_pbt_time_shares_a_population_larger_than_the_machine():
    # room for 2 of the 4 members at once: Ray's PBT pauses a member at its perturbation point
    # while others wait to start, so the population trains in turns and is ranked together.
    # Before, the queued members counted as running: the first two ran to the end untouched.
    from kubetune.tune.schedulers import PopulationBasedTraining

    pbt = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=3,
        hyperparam_mutations={"lr": tune.uniform(0.01, 1.0)},
        seed=5,
    )
    half = (os.cpu_count() or 2) / 2
    results = fit(
        tune.with_resources(T.PBTCounter, {"cpu": half}),
        param_space={"lr": tune.grid_search([0.01, 0.02, 0.5, 1.0])},
        tune_config=tune.TuneConfig(metric="value", mode="max", scheduler=pbt),
        run_config=air.RunConfig(stop={"training_iteration": 9}, verbose=0),
    )
    assert results.num_errors == 0
    for result in results:
        rows = result.history()
        assert rows[-1]["training_iteration"] == 9
        # every member stopped (paused or exploited) and went on from a checkpoint at least once
        assert any(r["iterations_since_restore"] < r["training_iteration"] for r in rows), rows
    first = [r for r in results if r.config["lr"] in (0.01, 0.02)]
    for result in first:  # the first two gave their places up at their first perturbation point
        row4 = next(r for r in result.history() if r["training_iteration"] == 4)
        assert row4["iterations_since_restore"] == 1


@pytest.mark.parametrize("example", ["quickstart", "asha", "pbt", "sklearn_svm"])
def test_examples_run_in_under_a_minute(example, tmp_path):
    import subprocess
    import sys
    import time
    from pathlib import Path

    if example == "sklearn_svm":
        pytest.importorskip("sklearn", reason="the examples extra (scikit-learn) is missing")
    script = Path(__file__).resolve().parents[3] / "examples" / f"{example}.py"
    env = dict(os.environ, KUBETUNE_RESULTS_DIR=str(tmp_path))
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env
    )
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stderr[-2000:]
    assert "best" in out.stdout
    assert elapsed < 60, f"{example} took {elapsed:.0f} s"


def test_engine_stop_reaches_a_running_trial_within_100ms():
    from kubetune.tune.stopper import FunctionStopper

    # a function stopper is evaluated by the engine (not the runner): the backend signals
    stopper = FunctionStopper(lambda trial_id, result: result["i"] >= 3)
    results = fit(T.sleeps_between_reports, run_config=air.RunConfig(stop=stopper, verbose=0))
    last = results[0].metrics["training_iteration"]
    # results come every 50 ms: within 100 ms of the stop at i=3 (iteration 4) at most
    # two more can have been written
    assert 4 <= last <= 6, last


def test_each_gpu_trial_gets_its_own_gpu(two_gpus):
    results = fit(
        tune.with_resources(T.reports_visible_gpus, {"cpu": 0.5, "gpu": 1}),
        param_space={"k": tune.grid_search([1, 2])},
    )
    assert sorted(r.metrics["cuda"] for r in results) == ["0", "1"]
    with pytest.raises(ValueError, match="needs 3 GPUs but this machine has 2"):
        fit(tune.with_resources(T.reports_visible_gpus, {"gpu": 3}))


def test_without_the_fork_server_each_trial_starts_its_own_interpreter(monkeypatch):
    monkeypatch.setenv("KUBETUNE_FORKSERVER", "0")
    results = fit(
        T.Counter,
        param_space={"a": tune.grid_search([1, 2])},
        run_config=air.RunConfig(stop={"training_iteration": 2}, verbose=0),
    )
    assert [r.metrics["score"] for r in results] == [2, 4]
    assert len({r.metrics["pid"] for r in results}) == 2


def test_fork_server_trials_are_separate_processes():
    results = fit(
        T.Counter,
        param_space={"a": tune.grid_search([1, 2, 3])},
        run_config=air.RunConfig(stop={"training_iteration": 2}, verbose=0),
    )
    pids = {r.metrics["pid"] for r in results}
    assert len(pids) == 3 and os.getpid() not in pids
