"""Schedulers on fixed synthetic learning curves, against tables computed by hand.

The ASHA and median-stopping tables were also checked against Ray 2.60.0's schedulers driven
with the same curves (once, in a throwaway virtualenv).
"""

from __future__ import annotations

import json
import math
import random

import pytest

from kubetune.engine import EngineConfig, ExperimentEngine, PauseTrial, ResumeTrial
from kubetune.schedulers import (
    ASHAScheduler,
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    MissingResultKeyError,
    PopulationBasedTraining,
    create_scheduler,
)
from kubetune.schedulers.async_hyperband import percentile
from kubetune.schedulers.pbt import explore
from kubetune.search import sample as S
from kubetune.search.errors import ConfigError

from .sim import Sim

CURVES = {
    "A": [0.1, 0.2, 0.3, 0.4],
    "B": [0.5, 0.6, 0.7, 0.8],
    "C": [0.3, 0.1, 0.5, 0.5],
    "D": [0.05, 0.9, 0.9, 0.9],
}


def round_robin(scheduler, curves, metric="acc", iters=4):
    for k in curves:
        scheduler.on_trial_add(k, {})
    alive = list(curves)
    stops = []
    for it in range(1, iters + 1):
        for k in list(alive):
            action = scheduler.on_trial_result(
                k, {"training_iteration": it, metric: curves[k][it - 1]}
            )
            if action != "CONTINUE":
                stops.append((k, it, action))
                alive.remove(k)
    return stops


def test_percentile_matches_numpy_linear() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([0.05, 0.1, 0.3, 0.5], 50) == pytest.approx(0.2)
    assert percentile([3.0], 75) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 75) == 4.0


def test_asha_table_max() -> None:
    s = ASHAScheduler(metric="acc", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    # rungs: int(log(4/1)/log(2) + 1) = 3 -> milestones 4, 2, 1; quantile 50 %.
    # t=1: A records (no cutoff); B 0.5 >= 0.1; C 0.3 >= median(0.1, 0.5)=0.3;
    #      D 0.05 < median(0.1, 0.3, 0.5)=0.3 -> STOP
    # t=2: A records; B 0.6 >= 0.2; C 0.1 < median(0.2, 0.6)=0.4 -> STOP
    # t=4: A and B reach max_t -> STOP
    assert round_robin(s, CURVES) == [
        ("D", 1, "STOP"),
        ("C", 2, "STOP"),
        ("A", 4, "STOP"),
        ("B", 4, "STOP"),
    ]
    cut = s.rung_cutoffs()
    assert cut[4] is None
    assert cut[2] == pytest.approx(0.2)  # median of 0.2, 0.6, 0.1
    assert cut[1] == pytest.approx(0.2)  # median of 0.1, 0.5, 0.3, 0.05
    assert s.decision_points("A").milestones == (1, 2, 4)


def test_asha_table_min() -> None:
    s = AsyncHyperBandScheduler(
        metric="acc", mode="min", max_t=4, grace_period=1, reduction_factor=2
    )
    # scores are negated: B 0.5 is worse than A 0.1 at t=1; D 0.9 worse than median at t=2
    assert round_robin(s, CURVES) == [
        ("B", 1, "STOP"),
        ("D", 2, "STOP"),
        ("A", 4, "STOP"),
        ("C", 4, "STOP"),
    ]
    assert s.rung_cutoffs()[1] == pytest.approx(-0.2)


def test_asha_rungs_and_brackets() -> None:
    s = ASHAScheduler(
        metric="m", mode="max", max_t=100, grace_period=1, reduction_factor=4, brackets=3
    )
    assert [[r.milestone for r in b.rungs] for b in s._brackets] == [
        [64, 16, 4, 1],
        [64, 16, 4],
        [64, 16],
    ]
    for i in range(50):
        s.on_trial_add(f"t{i}", {})
    assert set(s._trial_bracket.values()) <= {0, 1, 2}
    assert s.decision_points("t0").milestones[-1] == 100


def test_asha_state_round_trip() -> None:
    s = ASHAScheduler(metric="acc", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    round_robin(s, {k: v[:1] for k, v in CURVES.items()}, iters=1)
    s2 = ASHAScheduler(metric="acc", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    s2.set_state(json.loads(json.dumps(s.get_state())))
    assert s2.rung_cutoffs() == s.rung_cutoffs()
    assert s2.on_trial_result("E", {"training_iteration": 1, "acc": 0.01}) == "STOP"


def test_asha_missing_metric_is_an_error_naming_trial_and_key() -> None:
    s = ASHAScheduler(metric="acc", mode="max")
    s.on_trial_add("t1", {})
    with pytest.raises(MissingResultKeyError) as info:
        s.on_trial_result("t1", {"training_iteration": 1, "loss": 3})
    assert info.value.trial_id == "t1" and info.value.key == "acc"
    assert "t1" in str(info.value) and "acc" in str(info.value)


def test_median_stopping_table() -> None:
    curves = {
        "A": [1, 2, 3, 4, 5, 6],
        "B": [2, 3, 4, 5, 6, 7],
        "C": [3, 4, 5, 6, 7, 8],
        "D": [0, 1, 2, 2, 2, 2],
        "E": [9, 9, 9, 9, 9, 9],
    }
    s = MedianStoppingRule(
        time_attr="training_iteration",
        metric="acc",
        mode="max",
        grace_period=2,
        min_samples_required=2,
    )
    # t=2, D: A, B, C have reached t=2; their running means over [2, 2] are 2, 3, 4 -> median
    # 3 > D's best 1 -> STOP. Nobody else is ever below the median of the others.
    assert round_robin(s, curves, iters=6) == [("D", 2, "STOP")]
    dp = s.decision_points("A")
    assert dp.every_result and dp.start == 2


def test_median_stopping_min_mode_and_soft_stop() -> None:
    curves = {
        k: [-x for x in v] for k, v in {"A": [1, 2], "B": [2, 3], "C": [3, 4], "D": [0, 1]}.items()
    }
    s = MedianStoppingRule(
        time_attr="training_iteration",
        metric="loss",
        mode="min",
        grace_period=1,
        min_samples_required=2,
        hard_stop=False,
    )
    stops = round_robin(s, curves, metric="loss", iters=2)
    assert ("D", 1, "PAUSE") in stops


def hyperband_engine(**kw):
    values = [5, 1, 3, 7, 2, 8, 4, 6]
    config = EngineConfig(
        param_space={"i": S.grid_search(list(range(8)))}, metric="acc", mode="max", **kw
    )
    engine = ExperimentEngine(
        config, scheduler=HyperBandScheduler(max_t=9, reduction_factor=3), seed=0
    )
    return Sim(
        engine, lambda cfg, tid, it: {"acc": values[cfg["i"]]}, max_iter=50, checkpoint_every=1
    )


def test_hyperband_table() -> None:
    sim = hyperband_engine().run()
    # s_max_1 = round(log 9 / log 3) + 1 = 3. Band 0, bracket s=0: n0=3, r0=9 (trials 0-2);
    # bracket s=1: n0=ceil(3/2*3)=5, r0=3 (trials 3-7). At t=3 trials 3-6 pause; when 7 gets
    # there the best ceil(5/3)=2 (trial 5: 8, trial 3: 7) go on to 9, the others stop at 3.
    # Bracket s=0 has no halving: all three run to 9 (the first two pause there until the
    # third arrives, then the bracket finishes and all stop).
    ids = sim.order
    assert sim.stopped_at() == {
        ids[0]: 9,
        ids[1]: 9,
        ids[2]: 9,
        ids[3]: 9,
        ids[4]: 3,
        ids[5]: 9,
        ids[6]: 3,
        ids[7]: 3,
    }
    paused = {a["trial_id"] for a in sim.actions if a["type"] == "PauseTrial"}
    resumed = [a["trial_id"] for a in sim.actions if a["type"] == "ResumeTrial"]
    assert {ids[3], ids[4], ids[5], ids[6]} <= paused
    assert resumed == [ids[3], ids[5]]
    resume = next(a for a in sim.actions if a["type"] == "ResumeTrial")
    assert resume["restore_from"] == {
        "trial_id": ids[3],
        "checkpoint_dir_name": "checkpoint_000003",
    }
    assert sim.engine.scheduler.decision_points(ids[0]).milestones == (9,)
    assert sim.engine.scheduler.decision_points(ids[3]).milestones == (3, 9)
    assert sim.finished.best_trial_id == ids[5]


def test_hyperband_respects_concurrency() -> None:
    sim = hyperband_engine(max_concurrent_trials=2).run()
    assert sim.max_active_seen <= 2
    assert sorted(sim.stopped_at().values()) == [3, 3, 3, 9, 9, 9, 9, 9]


class SpyPBT(PopulationBasedTraining):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.quantile_log: list[tuple[list[str], list[str]]] = []

    def _quantiles(self):
        lower, upper = super()._quantiles()
        self.quantile_log.append((list(lower), list(upper)))
        return lower, upper


def test_pbt_exploits_bottom_from_top_within_space() -> None:
    mutations = {
        "lr": S.uniform(0.001, 0.1),
        "bs": [16, 32, 64],
        "opt": {"mom": S.choice([0.8, 0.9, 0.99])},
    }
    pbt = SpyPBT(
        time_attr="training_iteration",
        perturbation_interval=2,
        hyperparam_mutations=mutations,
        quantile_fraction=0.25,
        resample_probability=0.25,
        seed=3,
    )
    config = EngineConfig(
        param_space={"lr": S.uniform(0.001, 0.1), "bs": S.choice([16, 32, 64])},
        metric="acc",
        mode="max",
        num_samples=8,
        checkpoint=__import__("kubetune.engine", fromlist=["x"]).CheckpointSettings(num_to_keep=2),
    )
    engine = ExperimentEngine(config, scheduler=pbt, seed=5)
    events = []
    real = engine._exploit

    def spy(rec, exploit, out):
        lower, upper = pbt.quantile_log[-1]
        events.append((rec.trial_id, exploit, lower, upper))
        return real(rec, exploit, out)

    engine._exploit = spy
    sim = Sim(
        engine, lambda cfg, tid, it: {"acc": cfg["lr"] * it}, max_iter=12, checkpoint_every=1
    ).run()
    assert events, "PBT never exploited"
    deleted = set()
    for target, exploit, lower, upper in events:
        assert 1 <= len(lower) == len(upper) <= 2  # ceil(n_scored * 0.25), at most ceil(8 * 0.25)
        assert target in lower and exploit.donor_trial_id in upper
        assert target not in upper
        cfg = exploit.new_config
        assert 0.001 <= cfg["lr"] <= 0.1
        assert cfg["bs"] in (16, 32, 64)
        assert cfg["opt"]["mom"] in (0.8, 0.9, 0.99)
    for a in sim.actions:
        if a["type"] == "DeleteCheckpoint":
            deleted.add((a["trial_id"], a["checkpoint_dir_name"]))
        if a["type"] in ("RestartTrial", "ResumeTrial") and a["restore_from"]:
            ref = a["restore_from"]
            assert (ref["trial_id"], ref["checkpoint_dir_name"]) not in deleted
    restarts = [a for a in sim.actions if a["type"] == "RestartTrial"]
    assert restarts and all(a["decision_points"]["interval"] == 2 for a in restarts)


def test_pbt_pauses_to_yield_when_trials_wait() -> None:
    pbt = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=2,
        hyperparam_mutations={"lr": [0.1, 0.2, 0.3]},
        seed=0,
    )
    config = EngineConfig(
        param_space={"lr": S.choice([0.1, 0.2, 0.3])},
        metric="acc",
        mode="max",
        num_samples=4,
        max_concurrent_trials=2,
    )
    sim = Sim(
        ExperimentEngine(config, scheduler=pbt),
        lambda c, t, it: {"acc": c["lr"] * it},
        max_iter=6,
        checkpoint_every=1,
    ).run()
    assert sim.max_active_seen <= 2
    assert any(a["type"] == "PauseTrial" for a in sim.actions)
    assert all(s == 6 for s in sim.stopped_at().values())


def test_pbt_time_shares_when_the_population_is_larger_than_the_resources() -> None:
    # 4 trials, room for 2 (no max_concurrent_trials: the backend's resources decide, as in
    # local mode on 2 CPUs or with pods that stay Pending): the waiting ones are PENDING, so a
    # trial at a perturbation point pauses to let them run (Ray's time sharing) and the
    # population is ranked while all of it is alive; before, two trials ran to the end first.
    pbt = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=4,
        hyperparam_mutations={"lr": S.uniform(0.001, 0.1)},
        seed=0,
    )
    config = EngineConfig(
        param_space={"lr": S.uniform(0.001, 0.1)}, metric="acc", mode="max", num_samples=4
    )
    engine = ExperimentEngine(config, scheduler=pbt, seed=1)
    sim = Sim(
        engine, lambda c, t, it: {"acc": c["lr"] * it}, max_iter=20, checkpoint_every=1, capacity=2
    ).run()
    assert sim.max_active_seen <= 2
    paused = {a["trial_id"] for a in sim.actions if a["type"] == "PauseTrial"}
    assert paused == set(sim.order)  # every member yielded its place at least once
    for tid in sim.order[:2]:  # the first two paused at their first perturbation point
        assert (tid, 4, "PAUSE") in sim.verdicts
    assert all(s == 20 for s in sim.stopped_at().values())
    assert pbt.get_state()["num_perturbations"] >= 2


def test_explore_rules() -> None:
    rng = random.Random(0)
    cfg = {"lr": 0.05, "bs": 32, "n": 10}
    muts = {"lr": S.uniform(0.01, 0.06), "bs": [16, 32, 64], "n": S.randint(1, 100)}
    for _ in range(200):
        new, ops = explore(cfg, muts, 0.0, (1.2, 0.8), rng)
        assert new["bs"] in (16, 64) and ops["bs"].startswith("shift")
        assert new["lr"] in (pytest.approx(0.06), pytest.approx(0.04))  # 0.06 clipped from 0.06
        assert new["n"] in (12, 8) and isinstance(new["n"], int)
    new, ops = explore({"bs": 128}, {"bs": [16, 32]}, 0.0, (1.2,), rng)
    assert ops["bs"] == "resample" and new["bs"] in (16, 32)


def test_pbt_fills_missing_keys_on_add() -> None:
    pbt = PopulationBasedTraining(
        metric="m", mode="max", hyperparam_mutations={"lr": S.uniform(0, 1)}
    )
    cfg = pbt.on_trial_add("t", {"x": 1})
    assert cfg is not None and 0 <= cfg["lr"] < 1 and cfg["x"] == 1


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: ASHAScheduler(max_t=0), "max_t"),
        (lambda: ASHAScheduler(grace_period=0), "grace_period"),
        (lambda: ASHAScheduler(reduction_factor=1), "reduction_factor"),
        (lambda: ASHAScheduler(brackets=0), "brackets"),
        (lambda: ASHAScheduler(mode="maximize"), "mode"),
        (lambda: ASHAScheduler(grace_period=10, max_t=5), "grace_period"),
        (lambda: HyperBandScheduler(reduction_factor=0.5), "reduction_factor"),
        (lambda: MedianStoppingRule(grace_period=-1), "grace_period"),
        (lambda: PopulationBasedTraining(), "hyperparam_mutations"),
        (
            lambda: PopulationBasedTraining(hyperparam_mutations={"a": [1]}, quantile_fraction=0.6),
            "quantile_fraction",
        ),
        (
            lambda: PopulationBasedTraining(
                hyperparam_mutations={"a": [1]}, perturbation_interval=0
            ),
            "perturbation_interval",
        ),
        (
            lambda: PopulationBasedTraining(hyperparam_mutations={"a": S.sample_from(lambda: 1)}),
            "hyperparam_mutations.a",
        ),
        (lambda: PopulationBasedTraining(hyperparam_mutations={"a": 5}), "hyperparam_mutations.a"),
        (lambda: create_scheduler("bohb"), "scheduler"),
    ],
)
def test_bad_scheduler_arguments(make, field) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field


def test_scheduler_without_metric_or_mode() -> None:
    for make in (ASHAScheduler, HyperBandScheduler, MedianStoppingRule):
        with pytest.raises(ConfigError) as info:
            ExperimentEngine(EngineConfig(param_space={"x": 1}), scheduler=make())
        assert info.value.field == "metric"
        with pytest.raises(ConfigError) as info:
            ExperimentEngine(EngineConfig(param_space={"x": 1}), scheduler=make(metric="m"))
        assert info.value.field == "mode"
    ExperimentEngine(EngineConfig(param_space={"x": 1}), scheduler=FIFOScheduler())


def test_create_scheduler_by_name() -> None:
    assert isinstance(create_scheduler("ASHA", metric="m", mode="max"), AsyncHyperBandScheduler)
    assert isinstance(create_scheduler("async_hyperband"), AsyncHyperBandScheduler)
    assert isinstance(create_scheduler("HyperBandScheduler"), HyperBandScheduler)
    assert isinstance(create_scheduler("median_stopping_rule"), MedianStoppingRule)
    assert isinstance(create_scheduler("fifo"), FIFOScheduler)
    assert math.isfinite(1.0)
    assert PauseTrial and ResumeTrial


def test_pbt_exploits_are_recorded_with_their_donor_in_the_state() -> None:
    # the dashboard's lineage reads each trial's exploits from the stored state (local mode
    # and operator alike): the donor, its checkpoint, and the iteration of the exploit
    pbt = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=2,
        hyperparam_mutations={"lr": S.uniform(0.001, 0.1)},
        quantile_fraction=0.5,
        seed=3,
    )
    config = EngineConfig(
        param_space={"lr": S.uniform(0.001, 0.1)}, metric="acc", mode="max", num_samples=4
    )
    engine = ExperimentEngine(config, scheduler=pbt, seed=5)
    exploits = []
    real = engine._exploit

    def spy(rec, exploit, out):
        exploits.append((rec.trial_id, exploit.donor_trial_id, exploit.donor_checkpoint))
        return real(rec, exploit, out)

    engine._exploit = spy
    Sim(engine, lambda c, t, it: {"acc": c["lr"] * it}, max_iter=10, checkpoint_every=1).run()
    assert exploits, "PBT never exploited"
    stored = json.loads(engine.to_json())["trials"]  # what a reader of the state sees
    recorded = [(t["trial_id"], e["donor"], e["checkpoint"]) for t in stored for e in t["exploits"]]
    assert sorted(recorded) == sorted(exploits)
    for t in stored:
        its = [e["iteration"] for e in t["exploits"]]
        assert all(it % 2 == 0 for it in its) and its == sorted(its), its
