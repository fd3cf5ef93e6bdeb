"""Unseeded runs sample anew each time, as Ray's do; the seed drawn is kept for a restore."""

from __future__ import annotations

from kubetune.engine import CreateTrial, EngineConfig, ExperimentEngine
from kubetune.schedulers import ASHAScheduler, PopulationBasedTraining
from kubetune.search import sample as S


def configs(engine: ExperimentEngine) -> list[float]:
    return [a.config["x"] for a in engine.start(0.0) if isinstance(a, CreateTrial)]


def test_two_unseeded_runs_sample_different_configs_and_a_restore_goes_on_the_same() -> None:
    config = EngineConfig(
        param_space={"x": S.uniform(0, 1)}, num_samples=6, max_concurrent_trials=3
    )
    first, second = ExperimentEngine(config), ExperimentEngine(config)
    assert first.seed != second.seed
    assert configs(first) != configs(second)
    # the seed drawn is in the state: the restored engine samples what the original would
    twin = ExperimentEngine.from_json(first.to_json())
    assert twin.seed == first.seed
    ids = first.trial_ids()
    for tid in ids:
        first.on_trial_complete(tid, 1.0)
        twin.on_trial_complete(tid, 1.0)
    assert [a.to_dict() for a in first.on_tick(2.0)] == [a.to_dict() for a in twin.on_tick(2.0)]


def test_schedulers_without_a_seed_draw_one_and_keep_it_in_their_state() -> None:
    for make in (
        lambda: PopulationBasedTraining(hyperparam_mutations={"x": [1, 2]}),
        lambda: ASHAScheduler(),
    ):
        a, b = make(), make()
        assert a.get_state()["seed"] != b.get_state()["seed"]
        c = make()
        c.set_state(a.get_state())
        assert c.get_state()["seed"] == a.get_state()["seed"]
