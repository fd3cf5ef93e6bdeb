"""Behaviour that Ray's examples and docs rely on (issue 14), through Tuner.fit()."""

from __future__ import annotations

from typing import Any

from kubetune import air, tune
from kubetune.tune import Stopper


def accuracy_ramp(config: dict[str, Any]) -> None:
    # the docs' stopping example, without its sleep: a trial that reports as fast as it can
    # is where a late decision shows
    i = 1
    while True:
        tune.report({"mean_accuracy": min(i / 10, 1.0)})
        i += 1


def stop_fn(trial_id: str, result: dict[str, Any]) -> bool:
    return result["mean_accuracy"] >= 0.8 or result["training_iteration"] >= 100


class CustomStopper(Stopper):
    def __init__(self) -> None:
        self.should_stop = False

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if not self.should_stop and result["mean_accuracy"] >= 0.8:
            self.should_stop = True
        return self.should_stop

    def stop_all(self) -> bool:
        return self.should_stop


def last_iterations(results: Any) -> list[int]:
    # a trial that reported nothing (stop_all ended it before its first result) counts as 0
    return sorted(r.metrics.get("training_iteration", 0) for r in results)


def test_a_function_stopper_stops_on_the_result_that_meets_it() -> None:
    results = tune.Tuner(
        accuracy_ramp,
        tune_config=tune.TuneConfig(num_samples=2),
        run_config=air.RunConfig(stop=stop_fn, verbose=0),
    ).fit()
    assert results.num_errors == 0
    assert last_iterations(results) == [8, 8]
    for result in results:  # nothing ran past the stopping result either
        assert len(result.history()) == 8


def test_a_stopper_class_and_stop_all_stop_at_the_same_result() -> None:
    results = tune.Tuner(
        accuracy_ramp,
        tune_config=tune.TuneConfig(num_samples=2),
        run_config=air.RunConfig(stop=CustomStopper(), verbose=0),
    ).fit()
    assert results.num_errors == 0
    iterations = last_iterations(results)
    # the first trial to reach 0.8 stops there and stop_all() ends the other one at once: it
    # can be at most where the first one was
    assert iterations[-1] == 8 and all(i <= 8 for i in iterations), iterations
    assert results.num_terminated == 2


def done_at_five(config: dict[str, Any]) -> None:
    for i in range(1, 1000):
        tune.report({"score": i, "done": i >= 5})


def test_bool_stop_criteria_as_in_rays_pbt_examples() -> None:
    results = tune.Tuner(
        done_at_five,
        run_config=air.RunConfig(stop={"done": True, "training_iteration": 50}, verbose=0),
    ).fit()
    assert results.num_errors == 0
    assert last_iterations(results) == [5]


class Opaque:
    """Not JSON: Ray hands such constants to every trial as they are."""

    def __init__(self, value: int) -> None:
        self.value = value


def uses_constants(config: dict[str, Any]) -> None:
    with config["ckpt"].as_directory() as d, open(f"{d}/weights.txt") as f:
        weights = f.read()
    tune.report({"score": config["model"].value + config["x"], "weights": weights})


def test_a_checkpoint_or_any_object_in_param_space_reaches_the_trials(tmp_path: Any) -> None:
    from kubetune.air.checkpoint import Checkpoint

    ckpt_dir = tmp_path / "pretrained"
    ckpt_dir.mkdir()
    (ckpt_dir / "weights.txt").write_text("w0")
    space = {
        "ckpt": Checkpoint.from_directory(str(ckpt_dir)),
        "model": Opaque(3),
        "x": tune.grid_search([1, 2]),
    }
    run_config = air.RunConfig(name="constants", verbose=0)
    results = tune.Tuner(uses_constants, param_space=space, run_config=run_config).fit()
    assert results.num_errors == 0
    assert sorted((r.metrics["score"], r.metrics["weights"]) for r in results) == [
        (4, "w0"),
        (5, "w0"),
    ]
    # the saved experiment restores (the constants are found again under the same names)
    path = results.experiment_path
    restored = tune.Tuner.restore(path, uses_constants)
    assert len(restored.get_results()) == 2  # readable before fit(), as in Ray
    assert len(restored.fit()) == 2


def test_result_metrics_of_a_trial_without_results_is_an_empty_dict() -> None:
    results = tune.Tuner(
        accuracy_ramp,
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=air.RunConfig(stop=lambda t, r: True, verbose=0),
    ).fit()
    assert results[0].metrics["training_iteration"] == 1  # a result, then stopped

    def never_reports(config: dict[str, Any]) -> None:
        return None

    results = tune.Tuner(never_reports, run_config=air.RunConfig(verbose=0)).fit()
    assert results[0].metrics == {}
    assert results.num_terminated == 1 and results.num_errors == 0


def prints(config: dict[str, Any]) -> None:
    print(f"hello from x={config['x']}")
    tune.report({"score": config["x"]})


def test_trial_output_shows_on_the_console_with_the_trial_name_and_stays_in_its_log(
    capsys: Any,
) -> None:
    results = tune.Tuner(
        prints,
        param_space={"x": tune.grid_search([1, 2])},
        run_config=air.RunConfig(verbose=0),
    ).fit()
    out = capsys.readouterr().out
    for result in results:
        name = result.path.rstrip("/").rsplit("/", 1)[-1]
        line = next(x for x in out.splitlines() if x.startswith(f"({name} pid="))
        assert line.endswith(f") hello from x={result.config['x']}")
        with open(f"{result.log_dir}/trial.log") as f:
            assert f"hello from x={result.config['x']}" in f.read()


def fails_fast_or_waits(config: dict[str, Any]) -> None:
    import time

    if config["x"] == 0:
        raise ValueError("boom")
    time.sleep(0.5 * config["x"])
    tune.report({"score": config["x"]})
    time.sleep(5)


def test_the_summary_counts_agree_with_the_trial_states_when_fail_fast_fires(
    capsys: Any,
) -> None:
    import json
    import re

    results = tune.Tuner(
        fails_fast_or_waits,
        param_space={"x": tune.grid_search([0, 1, 2, 3])},
        run_config=air.RunConfig(verbose=1, failure_config=air.FailureConfig(fail_fast=True)),
    ).fit()
    with open(f"{results.experiment_path}/experiment_state.json") as f:
        states = [t["status"] for t in json.load(f)["trials"]]
    assert states.count("ERROR") == results.num_errors == 1
    assert states.count("TERMINATED") == results.num_terminated == 3
    out = capsys.readouterr().out
    summary = re.search(r"kubetune: (\d+) trials, (\d+) terminated, (\d+) errored", out)
    assert summary is not None, out
    assert summary.groups() == ("4", "3", "1")


def test_two_fits_in_the_same_second_get_their_own_experiments(monkeypatch: Any) -> None:
    import datetime as dt

    from kubetune.local import common as tuner_module

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:
            return cls(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(tuner_module, "datetime", Frozen)  # both fits in the same second
    paths = []
    for _ in range(2):
        results = tune.Tuner(
            prints, param_space={"x": 1}, run_config=air.RunConfig(verbose=0)
        ).fit()
        assert results.num_errors == 0
        paths.append(results.experiment_path)
    assert paths[0].endswith("prints_2026-01-02_03-04-05")
    assert paths[1].endswith("prints_2026-01-02_03-04-05_2")


def reports_its_name(config: dict[str, Any]) -> None:
    from kubetune.air import session

    tune.report({"score": config["x"], "name": session.get_trial_name()})


def test_trial_name_and_dirname_creators_are_honoured() -> None:
    import json
    import os

    results = tune.Tuner(
        reports_its_name,
        param_space={"x": tune.grid_search([1, 2])},
        tune_config=tune.TuneConfig(
            trial_name_creator=lambda trial: f"run_x{trial.config['x']}",
            trial_dirname_creator=lambda trial: f"dir_{trial.trial_id}_{trial.experiment_tag}",
        ),
        run_config=air.RunConfig(name="named", verbose=0),
    ).fit()
    assert results.num_errors == 0
    names = sorted(r.metrics["name"] for r in results)
    assert names == ["run_x1", "run_x2"]
    dirs = sorted(os.path.basename(r.path) for r in results)
    assert all(d.startswith("dir_") for d in dirs) and len(set(dirs)) == 2
    for result in results:
        assert os.path.exists(os.path.join(result.log_dir, "result.json"))
    with open(f"{results.experiment_path}/experiment_state.json") as f:
        trials = json.load(f)["trials"]
    assert sorted(t["trial_name"] for t in trials) == ["run_x1", "run_x2"]
    # a restore finds the trials in their directories
    restored = tune.Tuner.restore(results.experiment_path, reports_its_name)
    assert sorted(r.metrics["name"] for r in restored.get_results()) == ["run_x1", "run_x2"]
