"""Property tests of the state machine (hypothesis).

For random experiments (space, scheduler, concurrency, stop criteria, failures) driven by the
in-memory backend in ``sim.py``:

* concurrency never exceeds ``max_concurrent_trials``;
* every trial ends exactly once (and the experiment finishes exactly once);
* every created trial has a config inside the declared space;
* snapshot -> JSON -> restore -> continue gives the same actions as an uninterrupted run.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetune.engine import CheckpointSettings, EngineConfig, ExperimentEngine
from kubetune.engine.trial import FINISHED
from kubetune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
)
from kubetune.search import sample as S
from kubetune.stoppers import MaximumIterationStopper

from .sim import Sim

SPACE = {
    "lr": S.loguniform(1e-3, 1.0),
    "width": S.qrandint(8, 64, 8),
    "act": S.choice(["relu", "tanh", "gelu"]),
    "nested": {"depth": S.randint(1, 4), "fixed": 3},
}


def make_scheduler(kind: str) -> Any:
    if kind == "fifo":
        return FIFOScheduler()
    if kind == "asha":
        return ASHAScheduler(max_t=12, grace_period=1, reduction_factor=2, brackets=2, seed=1)
    if kind == "hyperband":
        return HyperBandScheduler(max_t=9, reduction_factor=3)
    if kind == "median":
        return MedianStoppingRule(
            time_attr="training_iteration", grace_period=2, min_samples_required=2
        )
    return PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=3,
        hyperparam_mutations={"lr": S.loguniform(1e-3, 1.0), "act": ["relu", "tanh", "gelu"]},
        seed=2,
    )


def space_for(grid: int) -> dict[str, Any]:
    space = dict(SPACE)
    if grid:
        space["g"] = S.grid_search(list(range(grid)))
    return space


def curve(cfg: dict[str, Any], tid: str, it: int) -> dict[str, Any]:
    score = cfg["lr"] * it + cfg["width"] / 64 + (0.5 if cfg["act"] == "relu" else 0)
    return {"acc": score}


scenario = st.fixed_dictionaries(
    {
        "scheduler": st.sampled_from(["fifo", "asha", "hyperband", "median", "pbt"]),
        "num_samples": st.integers(1, 6),
        "grid": st.integers(0, 2),
        "max_concurrent": st.integers(0, 4),
        "max_iter": st.integers(1, 12),
        "stop_at": st.none() | st.integers(1, 12),
        "max_failures": st.integers(0, 2),
        "failures": st.lists(
            st.tuples(st.integers(0, 11), st.integers(1, 12), st.sampled_from(["error", "lost"])),
            max_size=4,
        ),
        "num_to_keep": st.none() | st.integers(1, 3),
        "seed": st.integers(0, 1000),
        "budget": st.none() | st.integers(5, 80),
        "snapshot_at": st.integers(0, 200),
    }
)


def build(sc: dict[str, Any], engine: ExperimentEngine | None = None) -> Sim:
    if sc["scheduler"] == "pbt":
        sc = {**sc, "grid": 0}
    config = EngineConfig(
        param_space=space_for(sc["grid"]),
        metric="acc",
        mode="max",
        num_samples=sc["num_samples"],
        max_concurrent_trials=sc["max_concurrent"],
        max_failures=sc["max_failures"],
        time_budget_s=sc["budget"],
        checkpoint=CheckpointSettings(
            num_to_keep=sc["num_to_keep"], checkpoint_score_attribute="acc"
        ),
    )
    stopper = MaximumIterationStopper(sc["stop_at"]) if sc["stop_at"] else None
    if engine is None:
        engine = ExperimentEngine(
            config, scheduler=make_scheduler(sc["scheduler"]), stopper=stopper, seed=sc["seed"]
        )
    fail = {(f"{i:05d}", it): kind for i, it, kind in sc["failures"]}
    return Sim(engine, curve, max_iter=sc["max_iter"], checkpoint_every=1, fail_at=fail)


def valid_config(cfg: dict[str, Any], grid: int) -> bool:
    ok = (
        SPACE["lr"].is_valid(cfg["lr"])
        and SPACE["width"].is_valid(cfg["width"])
        and SPACE["act"].is_valid(cfg["act"])
        and SPACE["nested"]["depth"].is_valid(cfg["nested"]["depth"])
        and cfg["nested"]["fixed"] == 3
    )
    if grid:
        ok = ok and cfg["g"] in range(grid)
    return ok


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scenario)
def test_invariants(sc: dict[str, Any]) -> None:
    sim = build(sc)
    limit = sc["max_concurrent"]
    ended: dict[str, int] = {}
    seen_status: dict[str, str] = {}

    def check(s: Sim) -> None:
        if limit:
            assert s.engine.num_active() <= limit
            assert len(s.running) <= limit
        for tid, rec in s.engine.trials.items():
            before = seen_status.get(tid)
            if rec.status in FINISHED and (before is None or before not in FINISHED):
                ended[tid] = ended.get(tid, 0) + 1
            if before in FINISHED:
                assert rec.status == before, f"{tid} left {before}"
            seen_status[tid] = rec.status

    sim.on_event = check
    sim.run()
    assert sim.finished is not None
    assert [a["type"] for a in sim.actions].count("ExperimentFinished") == 1
    assert set(ended) == set(sim.engine.trials)
    assert all(n == 1 for n in ended.values())
    assert all(rec.status in FINISHED for rec in sim.engine.trials.values())
    grid = 0 if sc["scheduler"] == "pbt" else sc["grid"]
    for a in sim.actions:
        if a["type"] == "CreateTrial":
            assert valid_config(a["config"], grid), a["config"]
        if a["type"] in ("RestartTrial",):
            assert valid_config(a["new_config"], grid), a["new_config"]
    if sc["budget"] is None and sc["scheduler"] != "pbt":
        total = sc["num_samples"] * max(grid, 1)
        assert len(sim.engine.trials) == total
    # deleted checkpoints are never restored from later
    deleted = set()
    for a in sim.actions:
        if a["type"] == "DeleteCheckpoint":
            deleted.add((a["trial_id"], a["checkpoint_dir_name"]))
        ref = a.get("restore_from")
        if ref:
            assert (ref["trial_id"], ref["checkpoint_dir_name"]) not in deleted


@SETTINGS
@given(scenario)
def test_snapshot_restore_continue_equals_uninterrupted(sc: dict[str, Any]) -> None:
    full = build(sc).run()
    resumed = build(sc)
    swapped = False

    def swap(s: Sim) -> None:
        nonlocal swapped
        if swapped or len(s.actions) < sc["snapshot_at"] or s.finished is not None:
            return
        swapped = True
        state = json.loads(s.engine.to_json())
        stopper = MaximumIterationStopper(sc["stop_at"]) if sc["stop_at"] else None
        s.engine = ExperimentEngine.from_json(
            state, scheduler=make_scheduler(sc["scheduler"]), stopper=stopper
        )
        assert json.loads(s.engine.to_json()) == state

    resumed.on_event = swap
    resumed.run()
    assert resumed.actions == full.actions
    assert resumed.verdicts == full.verdicts
