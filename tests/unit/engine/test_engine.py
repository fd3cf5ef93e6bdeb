"""The experiment state machine: limits, stop criteria, failures, checkpoints, best trial."""

from __future__ import annotations

import json

import pytest

from kubetune.engine import (
    CheckpointRef,
    CheckpointSettings,
    CreateTrial,
    DeleteCheckpoint,
    EngineConfig,
    ExperimentEngine,
    ExperimentFinished,
    PauseTrial,
    RestartTrial,
    ResumeTrial,
    StopTrial,
    action_from_dict,
)
from kubetune.engine.trial import LAST_N
from kubetune.schedulers import ASHAScheduler, DecisionPoints
from kubetune.search import sample as S
from kubetune.search.errors import ConfigError
from kubetune.stoppers import ExperimentPlateauStopper, MaximumIterationStopper, TimeoutStopper

from .sim import Sim, ckpt_name


def engine(space=None, stopper=None, scheduler=None, **kw) -> ExperimentEngine:
    kw.setdefault("metric", "acc")
    kw.setdefault("mode", "max")
    space = space if space is not None else {"x": S.uniform(0, 1)}
    return ExperimentEngine(
        EngineConfig(param_space=space, **kw), scheduler=scheduler, stopper=stopper, seed=1
    )


def acc(cfg, tid, it):
    return {"acc": cfg["x"] * it}


def test_num_samples_and_concurrency() -> None:
    sim = Sim(engine(num_samples=10, max_concurrent_trials=3), acc, max_iter=4).run()
    creates = [a for a in sim.actions if a["type"] == "CreateTrial"]
    assert len(creates) == 10
    assert sim.max_active_seen == 3
    assert sim.finished.status == "SUCCEEDED"
    assert sim.engine.counts()["TERMINATED"] == 10
    assert len({a["trial_id"] for a in creates}) == 10


def test_create_trial_fields() -> None:
    e = engine(num_samples=2, resources={"cpu": 2, "gpu": 1}, name="exp", trainable_name="train_fn")
    a = e.start(0.0)[0]
    assert isinstance(a, CreateTrial)
    assert a.trial_name == f"train_fn_{a.trial_id}"
    assert a.resources == {"cpu": 2, "gpu": 1}
    assert a.restore_from is None
    assert isinstance(a.decision_points, DecisionPoints)
    assert 0 <= a.config["x"] < 1


def test_dict_stop_criteria_with_nested_key() -> None:
    sim = Sim(engine(num_samples=3, stopper={"training_iteration": 3}), acc, max_iter=10).run()
    assert set(sim.stopped_at().values()) == {3}
    stops = [a for a in sim.actions if a["type"] == "StopTrial"]
    assert {a["reason"] for a in stops} == {"stop criteria"}

    def nested(cfg, tid, it):
        return {"acc": it, "eval": {"loss": 1.0 / it}}

    sim = Sim(engine(num_samples=2, stopper={"eval/loss": 0.5}), nested, max_iter=10).run()
    assert set(sim.stopped_at().values()) == {1}  # 1/1 >= 0.5


def test_function_and_stopper_objects() -> None:
    sim = Sim(
        engine(num_samples=2, stopper=lambda tid, r: r["acc"] > 1.5),
        lambda c, t, it: {"acc": it},
        max_iter=9,
    ).run()
    assert set(sim.stopped_at().values()) == {2}
    sim = Sim(engine(num_samples=2, stopper=MaximumIterationStopper(4)), acc, max_iter=9).run()
    assert set(sim.stopped_at().values()) == {4}


def test_stop_all_ends_the_experiment() -> None:
    stopper = ExperimentPlateauStopper("acc", std=0.1, top=2, mode="max")
    sim = Sim(
        engine(num_samples=4, max_concurrent_trials=2, stopper=stopper),
        lambda c, t, it: {"acc": 1.0},
        max_iter=9,
    ).run()
    assert sim.finished.reason == "stopper.stop_all()"
    assert len([a for a in sim.actions if a["type"] == "CreateTrial"]) == 2
    assert sim.engine.counts()["TERMINATED"] == 2


def test_timeout_stopper_uses_event_time() -> None:
    sim = Sim(
        engine(num_samples=50, max_concurrent_trials=1, stopper=TimeoutStopper(5)), acc, max_iter=3
    ).run()
    assert sim.finished.reason == "stopper.stop_all()"
    assert sim.now <= 7


def test_time_budget() -> None:
    sim = Sim(
        engine(num_samples=20, max_concurrent_trials=2, time_budget_s=10), acc, max_iter=100
    ).run()
    assert sim.finished.reason == "time budget exhausted"
    assert sim.now <= 11
    assert all(s in ("TERMINATED",) for s in (r.status for r in sim.engine.trials.values()))


def test_retry_from_latest_checkpoint_then_error() -> None:
    fail = {("00000", 5): "error", ("00000", 6): "lost", ("00000", 7): "error"}
    sim = Sim(
        engine(num_samples=2, max_failures=2), acc, max_iter=8, checkpoint_every=2, fail_at=fail
    ).run()
    retries = [a for a in sim.actions if a["type"] == "ResumeTrial"]
    assert [r["reason"] for r in retries] == ["retry", "retry"]
    assert retries[0]["restore_from"]["checkpoint_dir_name"] == ckpt_name(4)
    first = sim.order[0]
    rec = sim.engine.trials[first]
    assert rec.status == "ERROR" and rec.num_failures == 3
    assert "boom at 7" in rec.error
    assert sim.engine.trials[sim.order[1]].status == "TERMINATED"
    assert sim.finished.status == "SUCCEEDED"
    summary = sim.engine.trial_summary(first)
    assert summary["num_failures"] == 3 and summary["status"] == "ERROR"


def test_infinite_retries() -> None:
    fail = {("00000", 2): "error", ("00000", 3): "error", ("00000", 4): "error"}
    sim = Sim(
        engine(num_samples=1, max_failures=-1), acc, max_iter=5, checkpoint_every=1, fail_at=fail
    ).run()
    assert sim.engine.trials[sim.order[0]].status == "TERMINATED"


def test_fail_fast() -> None:
    sim = Sim(
        engine(num_samples=6, max_concurrent_trials=3, fail_fast=True),
        acc,
        max_iter=5,
        fail_at={("00001", 2): "error"},
    ).run()
    assert sim.finished.status == "FAILED"
    assert "fail_fast" in sim.finished.reason
    counts = sim.engine.counts()
    assert counts["ERROR"] == 1 and counts["TERMINATED"] == 2
    assert len([a for a in sim.actions if a["type"] == "CreateTrial"]) == 3


def test_missing_metric_errors_the_trial_not_the_experiment() -> None:
    def curve(cfg, tid, it):
        return {"loss": 1.0} if tid.endswith("00001") else {"acc": it}

    sched = ASHAScheduler(max_t=10, grace_period=1, reduction_factor=2)
    sim = Sim(engine(num_samples=3, scheduler=sched), curve, max_iter=3).run()
    bad = sim.engine.trials[sim.order[1]]
    assert bad.status == "ERROR"
    assert (
        sim.order[1] in bad.error
        and "`acc`" in bad.error
        and "AsyncHyperBandScheduler" in bad.error
    )
    assert [r.status for r in sim.engine.trials.values()].count("TERMINATED") == 2
    stop = next(a for a in sim.actions if a["type"] == "StopTrial" and a["status"] == "ERROR")
    assert stop["trial_id"] == sim.order[1]
    assert sim.finished.status == "SUCCEEDED"


def test_done_result_ends_the_trial_and_late_events_are_ignored() -> None:
    e = engine(num_samples=1)
    tid = e.start(0)[0].trial_id
    e.on_trial_started(tid, 1)
    resp = e.on_result(tid, {"training_iteration": 1, "acc": 1, "done": True}, 2)
    assert resp.verdict == "STOP"
    assert any(isinstance(a, ExperimentFinished) for a in resp)
    assert e.on_result(tid, {"training_iteration": 2, "acc": 1}, 3).verdict == "STOP"
    assert e.on_trial_complete(tid, 4) == []
    assert e.on_trial_error(tid, "late", 5) == []
    assert e.trials[tid].status == "TERMINATED"


def test_checkpoints_by_score() -> None:
    ck = CheckpointSettings(
        num_to_keep=2, checkpoint_score_attribute="acc", checkpoint_score_order="max"
    )
    e = engine(num_samples=1, checkpoint=ck)
    tid = e.start(0)[0].trial_id
    deleted = []
    for it, a in enumerate([0.5, 0.9, 0.1, 0.7, 0.2], start=1):
        resp = e.on_result(
            tid, {"training_iteration": it, "acc": a, "checkpoint_dir_name": ckpt_name(it)}, it
        )
        deleted += [d.checkpoint_dir_name for d in resp if isinstance(d, DeleteCheckpoint)]
    # kept: the best two (0.9 @2, 0.7 @4) and always the latest (@5)
    assert sorted(deleted) == [ckpt_name(1), ckpt_name(3)]
    assert e.trial_summary(tid)["checkpoints"] == [ckpt_name(5), ckpt_name(4), ckpt_name(2)]
    assert e.best_checkpoint(tid) == CheckpointRef(tid, ckpt_name(2))
    assert e.trial_summary(tid)["latest_checkpoint"] == {
        "trial_id": tid,
        "checkpoint_dir_name": ckpt_name(5),
    }
    # the next checkpoint (0.8) leaves 0.9 and 0.8; the old latest and 0.7 go (Ray's rule)
    resp = e.on_result(
        tid, {"training_iteration": 6, "acc": 0.8, "checkpoint_dir_name": ckpt_name(6)}, 6
    )
    gone = [d.checkpoint_dir_name for d in resp if isinstance(d, DeleteCheckpoint)]
    assert sorted(gone) == [ckpt_name(4), ckpt_name(5)]


def test_checkpoints_min_order_and_newest() -> None:
    ck = CheckpointSettings(
        num_to_keep=1, checkpoint_score_attribute="loss", checkpoint_score_order="min"
    )
    e = engine(num_samples=1, checkpoint=ck)
    tid = e.start(0)[0].trial_id
    e.on_result(
        tid, {"training_iteration": 1, "acc": 1, "loss": 0.5, "checkpoint_dir_name": "c1"}, 1
    )
    out = e.on_checkpoint(tid, "c2", {"loss": 0.2})
    assert [d.checkpoint_dir_name for d in out] == ["c1"]
    assert e.best_checkpoint(tid).checkpoint_dir_name == "c2"
    e2 = engine(num_samples=1, checkpoint=CheckpointSettings(num_to_keep=2))
    tid = e2.start(0)[0].trial_id
    dels = []
    for i in range(1, 5):
        dels += [d.checkpoint_dir_name for d in e2.on_checkpoint(tid, f"c{i}")]
    assert dels == ["c1", "c2"] and e2.best_checkpoint(tid).checkpoint_dir_name == "c4"


def test_best_trial_scopes() -> None:
    e = engine(num_samples=3, mode="max")
    ids = [a.trial_id for a in e.start(0)]
    curves = {
        ids[0]: [10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],  # best peak
        ids[1]: [1, 1, 1, 1, 1, 1, 1, 5, 5, 5, 5, 5],  # best last, last-5 and last-10 average
        ids[2]: [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2],  # best overall average (2.92 vs 2.67)
    }
    for it in range(12):
        for tid in ids:
            e.on_result(tid, {"training_iteration": it + 1, "acc": curves[tid][it]}, it)
    assert e.best_trial(scope="all") == ids[0]
    assert e.best_trial(scope="last") == ids[1]
    assert e.best_trial(scope="avg") == ids[2]
    assert e.best_trial(scope="last-5-avg") == ids[1]
    assert e.best_trial(scope="last-10-avg") == ids[1]
    assert e.best_trial(mode="min", scope="all") in (ids[0],)
    assert len(e.trials[ids[0]].stats.recent) == LAST_N
    with pytest.raises(ConfigError) as info:
        e.best_trial(scope="best")
    assert info.value.field == "scope"
    with pytest.raises(ConfigError) as info:
        e.best_trial(mode="maximum")
    assert info.value.field == "mode"
    e2 = ExperimentEngine(EngineConfig(param_space={}))
    with pytest.raises(ConfigError) as info:
        e2.best_trial()
    assert info.value.field == "metric"
    with pytest.raises(ConfigError) as info:
        e2.best_trial(metric="acc")
    assert info.value.field == "mode"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"mode": "best"}, "mode"),
        ({"metric": None, "mode": "max"}, "metric"),
        ({"max_concurrent_trials": -1}, "max_concurrent_trials"),
        ({"time_budget_s": 0}, "time_budget_s"),
        ({"max_failures": -2}, "max_failures"),
        ({"fail_fast": True, "max_failures": 1}, "fail_fast"),
        ({"checkpoint": CheckpointSettings(num_to_keep=0)}, "checkpoint.num_to_keep"),
        (
            {"checkpoint": CheckpointSettings(checkpoint_score_order="up")},
            "checkpoint.checkpoint_score_order",
        ),
        ({"param_space": [1]}, "param_space"),
    ],
)
def test_bad_config_names_the_field(kwargs, field) -> None:
    base = {"param_space": {}, "metric": "acc", "mode": "max"}
    base.update(kwargs)
    with pytest.raises(ConfigError) as info:
        ExperimentEngine(EngineConfig(**base))
    assert info.value.field == field


def test_bad_stop_argument() -> None:
    with pytest.raises(ConfigError) as info:
        engine(stopper=42)
    assert info.value.field == "stop"
    with pytest.raises(ConfigError) as info:
        engine(stopper={"training_iteration": "ten"})
    assert info.value.field == "stop.training_iteration"


def test_actions_round_trip_through_json() -> None:
    ref = CheckpointRef("t1", "checkpoint_000001")
    dp = DecisionPoints("training_iteration", (1, 4, 16))
    actions = [
        CreateTrial("t1", "f_t1", "0_x=1", {"x": 1}, {"cpu": 1}, ref, dp),
        StopTrial("t1", "scheduler"),
        PauseTrial("t1"),
        ResumeTrial("t1", {"x": 1}, ref, "retry", dp),
        RestartTrial("t1", {"x": 2}, ref, dp, {"donor": "t2"}),
        DeleteCheckpoint("t1", "checkpoint_000001"),
        ExperimentFinished("SUCCEEDED", "all trials finished", "t1"),
    ]
    for a in actions:
        assert action_from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_decision_points_semantics() -> None:
    dp = DecisionPoints("training_iteration", milestones=(4, 16))
    assert [t for t in range(1, 20) if dp.is_due(t, t - 1)] == [4, 16]
    assert dp.is_due(5, prev=3)  # first result past a milestone
    pbt = DecisionPoints("time_total_s", interval=10, anchor=0, start=5)
    assert (
        not pbt.is_due(9.9)
        and pbt.is_due(10)
        and not pbt.is_due(15, last=10)
        and pbt.is_due(20, last=10)
    )
    med = DecisionPoints("t", start=3, every_result=True)
    assert not med.is_due(2) and med.is_due(3)
    assert DecisionPoints().is_empty()


def test_restart_errored_from_scratch_forgets_the_old_checkpoints_for_its_retries() -> None:
    e = engine(num_samples=1, max_failures=1)
    (create,) = e.start(0.0)
    tid = create.trial_id
    e.on_trial_started(tid, 0.0)
    e.on_result(tid, {"acc": 0.1, "training_iteration": 1, "checkpoint_dir_name": ckpt_name(0)}, 1)
    e.on_trial_error(tid, "boom", 2.0)  # retried from checkpoint_000000
    e.on_trial_error(tid, "boom", 3.0)  # out of retries: ERROR
    assert e.trial_status(tid) == "ERROR"
    (resume,) = e.resume_trial(tid, 4.0, from_checkpoint=False)  # restart_errored
    assert isinstance(resume, ResumeTrial) and resume.restore_from is None
    # the fresh run fails before its first checkpoint: its retry starts from scratch too,
    # not from the errored run's checkpoint
    retry = [a for a in e.on_trial_error(tid, "boom again", 5.0) if isinstance(a, ResumeTrial)]
    assert len(retry) == 1 and retry[0].restore_from is None


def test_preemptions_retry_from_the_latest_checkpoint_without_using_up_max_failures() -> None:
    eng = engine(num_samples=1, max_failures=0)
    (create,) = eng.start(0.0)
    tid = create.trial_id
    eng.on_trial_started(tid, 1.0)
    eng.on_result(tid, {"acc": 0.1, "training_iteration": 1, "checkpoint_dir_name": "c1"}, 2.0)
    for i in range(3):  # more preemptions than max_failures allows failures
        (resume,) = [a for a in eng.on_trial_preempted(tid, "PreemptionByScheduler", 3.0 + i)]
        assert resume.type == "ResumeTrial" and resume.reason == "preempted"
        assert resume.restore_from is not None
        assert resume.restore_from.checkpoint_dir_name == "c1"
        eng.on_trial_started(tid, 3.5 + i)
    summary = eng.trial_summary(tid)
    assert summary["num_failures"] == 0 and summary["num_preemptions"] == 3
    assert summary["last_disruption"] == "PreemptionByScheduler"
    assert eng.num_preemptions() == 3 and eng.trial_status(tid) == "RUNNING"
    # the counters survive a snapshot; an older snapshot without them reads as none
    again = ExperimentEngine.from_json(eng.to_json())
    assert again.num_preemptions() == 3
    assert again.trial_summary(tid)["num_preemptions"] == 3
    state = json.loads(eng.to_json())
    del state["preemptions"]
    for rec in state["trials"]:
        del rec["num_preemptions"], rec["last_disruption"]
    old = ExperimentEngine.from_json(state)
    assert old.num_preemptions() == 0 and old.trial_summary(tid)["num_preemptions"] == 0
    # a real failure still counts, and with max_failures=0 ends the trial
    eng.on_trial_error(tid, "boom", 10.0)
    assert eng.trial_status(tid) == "ERROR"
    late = eng.on_trial_preempted(tid, "late", 11.0)
    assert not any(a.type == "ResumeTrial" for a in late)
    assert eng.trial_status(tid) == "ERROR"
    assert eng.trial_summary(tid)["num_preemptions"] == 3  # a finished trial is left alone
