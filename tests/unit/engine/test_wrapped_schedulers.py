"""PB2, HyperBandForBOHB, ResourceChangingScheduler, PopulationBasedTrainingReplay (issue 14):
pure decision objects with JSON state."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from kubetune.schedulers import (
    PB2,
    DistributeResources,
    Exploit,
    FIFOScheduler,
    HyperBandForBOHB,
    HyperBandScheduler,
    PopulationBasedTrainingReplay,
    ResourceChangingScheduler,
    create_scheduler,
)
from kubetune.search.errors import ConfigError


def rate(lr: float) -> float:
    """Improvement per step: best at lr = 0.8."""
    return 1.0 - abs(lr - 0.8)


def run_pb2(pb2: PB2, steps: int, n: int = 4) -> list[float]:
    """A toy population; returns the lr of every exploit."""
    chosen: list[float] = []
    rng = random.Random(0)
    configs = {f"t{i}": {"lr": rng.uniform(0, 1)} for i in range(n)}
    score = dict.fromkeys(configs, 0.0)
    for tid, cfg in configs.items():
        new = pb2.on_trial_add(tid, cfg)
        assert new is None or new["lr"] == cfg["lr"]
    for t in range(1, steps + 1):
        for tid in configs:
            score[tid] += rate(configs[tid]["lr"])
            pb2.context.checkpoints[tid] = f"ckpt-{tid}-{t}"  # type: ignore[attr-defined]
            d = pb2.on_trial_result(tid, {"training_iteration": t, "acc": score[tid]})
            if isinstance(d, Exploit):
                lr = d.new_config["lr"]
                assert 0.0 <= lr <= 1.0
                chosen.append(lr)
                configs[tid] = dict(d.new_config)
                score[tid] = score[d.donor_trial_id]
    return chosen


def make_pb2(seed: int = 0) -> PB2:
    return PB2(
        time_attr="training_iteration",
        metric="acc",
        mode="max",
        perturbation_interval=2,
        hyperparam_bounds={"lr": [0.0, 1.0]},
        seed=seed,
    )


def test_pb2_chooses_better_hyperparameters_than_random() -> None:
    chosen = run_pb2(make_pb2(), steps=60, n=8)
    assert len(chosen) >= 6
    late = chosen[len(chosen) // 2 :]
    # uniform random lr in [0, 1] is on average 0.34 away from the best 0.8
    mean_distance = sum(abs(lr - 0.8) for lr in late) / len(late)
    assert mean_distance < 0.2, (mean_distance, late)


def test_pb2_state_round_trip_chooses_the_same() -> None:
    a = make_pb2(seed=4)
    run_pb2(a, steps=12)
    state = json.loads(json.dumps(a.get_state()))
    b = make_pb2(seed=4)
    b.set_state(state)
    b.context.checkpoints = dict(a.context.checkpoints)  # type: ignore[attr-defined]
    assert a._select({"lr": 0.5}) == b._select({"lr": 0.5})


def test_pb2_bounds_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"hyperparam_bounds\.lr"):
        PB2(hyperparam_bounds={"lr": [1.0, 0.0]})
    with pytest.raises(ConfigError, match="hyperparam_bounds"):
        PB2()
    assert isinstance(create_scheduler("pb2", hyperparam_bounds={"lr": [0, 1]}), PB2)


def test_hyperband_for_bohb_is_hyperband() -> None:
    hb = HyperBandForBOHB(metric="m", mode="max", max_t=9, reduction_factor=3)
    assert isinstance(hb, HyperBandScheduler)
    hb.on_trial_add("a", {})
    assert hb.decision_points("a").milestones


def test_resource_changing_forwards_decisions_and_records_allocations() -> None:
    base = HyperBandScheduler(metric="m", mode="max", max_t=9, reduction_factor=3)
    rcs = ResourceChangingScheduler(base, DistributeResources(total_cpus=8))
    rcs.set_search_properties("m", "max")
    for tid in ("a", "b"):
        rcs.on_trial_add(tid, {})
    # new resources pause the trial (Ray); it starts again with them
    assert rcs.on_trial_result("a", {"training_iteration": 1, "m": 1.0}) == "PAUSE"
    four = {"bundles": [{"CPU": 4.0}], "strategy": "PACK"}  # 8 CPUs shared by 2 live trials
    assert rcs.resources_for("a") == four
    assert rcs.on_trial_result("a", {"training_iteration": 2, "m": 1.0}) == "CONTINUE"  # same
    state = json.loads(json.dumps(rcs.get_state()))
    again = ResourceChangingScheduler(
        HyperBandScheduler(metric="m", mode="max", max_t=9, reduction_factor=3)
    )
    again.set_state(state)
    assert again.resources_for("a") == four
    assert ResourceChangingScheduler().on_trial_result("x", {}) == FIFOScheduler.CONTINUE


def test_resource_changing_calls_ray_style_allocation_functions() -> None:
    """The function of Ray's xgboost_dynamic_resources example: it reads private Ray names."""
    from kubetune.tune.resources import PlacementGroupFactory

    seen: list[Any] = []

    def allocate(tune_controller, trial, result, scheduler):
        base = scheduler._base_trial_resources or PlacementGroupFactory([{"CPU": 1}])
        total = tune_controller._resource_updater.get_num_cpus()
        seen.append((trial.trial_id, trial.placement_group_factory, total))
        cpus = max(
            base.required_resources.get("CPU", 0), total // len(tune_controller.get_live_trials())
        )
        return PlacementGroupFactory([{"CPU": cpus, "GPU": 0}])

    rcs = ResourceChangingScheduler(resources_allocation_function=allocate)
    rcs.context.resource_totals = {"CPU": 6.0}  # type: ignore[attr-defined]
    for tid in ("a", "b", "c"):
        rcs.on_trial_add(tid, {"x": tid})
    assert rcs.on_trial_result("a", {"training_iteration": 1}) == "PAUSE"
    assert rcs.resources_for("a") == {"bundles": [{"CPU": 2.0}], "strategy": "PACK"}
    assert seen == [("a", None, 6.0)]
    rcs.context.statuses["c"] = "TERMINATED"  # type: ignore[attr-defined]
    assert rcs.on_trial_result("a", {"training_iteration": 2}) == "PAUSE"  # 6 // 2 live
    assert rcs.resources_for("a") == {"bundles": [{"CPU": 3.0}], "strategy": "PACK"}
    assert seen[-1][1] == PlacementGroupFactory([{"CPU": 2.0}])
    with pytest.raises(ConfigError, match="resources_allocation_function"):
        ResourceChangingScheduler(resources_allocation_function=lambda *a: "lots").on_trial_result(
            "a", {}
        )


def test_pbt_replay_follows_the_policy_file(tmp_path: Any) -> None:
    lines = [
        ["t1", "t0", 4, 5, {"lr": 0.1, "m": 1}, {"lr": 0.2, "m": 1}],
        ["t1", "t2", 8, 9, {"lr": 0.2, "m": 1}, {"lr": 0.05, "m": 1}],
    ]
    path = tmp_path / "pbt_policy_t1.txt"
    path.write_text("\n".join(json.dumps(x) for x in lines))
    s = PopulationBasedTrainingReplay(str(path))
    assert s.on_trial_add("r", {"lr": 9.0, "other": 1}) == {"lr": 0.1, "m": 1, "other": 1}
    decisions = {}
    for t in range(1, 12):
        s.context.checkpoints["r"] = f"ckpt-{t}"  # type: ignore[attr-defined]
        d = s.on_trial_result("r", {"training_iteration": t})
        if isinstance(d, Exploit):
            decisions[t] = (d.donor_trial_id, d.donor_checkpoint, d.new_config["lr"])
    assert decisions == {4: ("r", "ckpt-4", 0.2), 8: ("r", "ckpt-8", 0.05)}
    with pytest.raises(ConfigError, match="num_samples"):
        s.on_trial_add("other", {})
    with pytest.raises(ConfigError, match="policy_file"):
        PopulationBasedTrainingReplay(str(tmp_path / "missing.txt"))


def test_hyperband_with_a_concurrency_limiter_halves_instead_of_waiting_forever() -> None:
    """bohb_example's shape: 4 trials at most, brackets bigger than that. The paused trials
    hold the limiter's slots, so the bracket can never fill: it must be halved with the
    trials it has (Ray's behaviour), not wait for ever."""
    from kubetune.engine import EngineConfig, ExperimentEngine
    from kubetune.search import ConcurrencyLimiter
    from kubetune.search import sample as S
    from kubetune.search.hyperopt import HyperOptSearch

    from .sim import Sim

    config = EngineConfig(
        param_space={"w": S.uniform(0, 1)}, metric="acc", mode="max", num_samples=12
    )
    searcher = ConcurrencyLimiter(HyperOptSearch(seed=0), max_concurrent=4)
    scheduler = HyperBandForBOHB(max_t=9, reduction_factor=3, stop_last_trials=False)
    engine = ExperimentEngine(config, search_alg=searcher, scheduler=scheduler, seed=0)
    sim = Sim(
        engine, lambda cfg, tid, it: {"acc": cfg["w"] * it}, max_iter=9, checkpoint_every=1
    ).run()
    assert sim.finished is not None
    assert len(sim.order) == 12  # every sample ran: nothing stalled
    stopped = sim.stopped_at()
    assert any(it < 9 for it in stopped.values())  # halving happened
    assert any(it == 9 for it in stopped.values())
