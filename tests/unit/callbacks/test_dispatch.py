"""The callback driver without processes: an engine driven by hand through EngineObserver
(pause, exploit and resume included), and a finished experiment replayed from storage with
StorageFollower (the seam cluster mode uses)."""

from __future__ import annotations

import json
import os

from kubetune import air, tune
from kubetune.engine import EngineConfig, ExperimentEngine, ResumeTrial, Verdict
from kubetune.local.result_grid import read_results
from kubetune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler
from kubetune.tune.execution.callbacks import CallbackDispatcher, EngineObserver
from kubetune.tune.execution.follow import StorageFollower

from . import trainables as T
from .test_hooks import Recorder


class PauseAtTwo(FIFOScheduler):
    """Pauses every trial once, at its second result."""

    def __init__(self):
        super().__init__()
        self.paused = set()

    def on_trial_result(self, trial_id, result):
        if result["training_iteration"] == 2 and trial_id not in self.paused:
            self.paused.add(trial_id)
            return TrialScheduler.PAUSE
        return TrialScheduler.CONTINUE


def _engine(scheduler=None, num_samples=1):
    config = EngineConfig(param_space={"x": tune.uniform(0, 1)}, num_samples=num_samples)
    return ExperimentEngine(config, scheduler=scheduler, seed=1)


def _result(i, checkpoint=None):
    row = {"training_iteration": i, "score": float(i)}
    if checkpoint:
        row["checkpoint_dir_name"] = checkpoint
    return row


def test_observer_follows_a_pause_and_a_resume_from_checkpoint(tmp_path):
    rec = Recorder()
    d = CallbackDispatcher([rec], str(tmp_path), "fn", {"x": tune.uniform(0, 1)})
    engine = _engine(PauseAtTwo())
    obs = EngineObserver(engine, d)
    actions = obs.start(0.0)
    (tid,) = [a.trial_id for a in actions]
    obs.on_trial_started(tid, 1.0)
    obs.on_result(tid, _result(1), 1.0)
    os.makedirs(os.path.join(d.trial(tid).local_path, "checkpoint_000000"))
    resp = obs.on_result(tid, _result(2, "checkpoint_000000"), 2.0)
    assert resp.verdict == Verdict.PAUSE
    # the only trial: the engine resumes it at once, from the checkpoint it paused with
    resumed = [a for a in resp.actions if isinstance(a, ResumeTrial)]
    assert resumed and resumed[0].restore_from is not None
    assert d.trial(tid).status == "PENDING"
    obs.on_tick(3.0)
    obs.on_trial_started(tid, 4.0)
    obs.on_result(tid, _result(3), 4.0)
    obs.on_trial_complete(tid, 5.0)
    obs.finish()
    name = str(d.trial(tid))
    assert rec.per_trial(name) == [
        ("on_trial_start", None),
        ("on_trial_result", 1),
        ("on_trial_result", 2),
        ("on_checkpoint", "checkpoint_000000"),
        ("on_trial_save", None),
        ("on_trial_start", None),
        ("on_trial_restore", None),
        ("on_trial_result", 3),
        ("on_trial_complete", "TERMINATED"),
    ]
    assert rec.hooks()[-1] == "on_experiment_end"


def test_a_trial_never_started_still_gets_its_end_hook(tmp_path):
    rec = Recorder()
    d = CallbackDispatcher([rec], str(tmp_path))
    obs = EngineObserver(_engine(), d)
    (tid,) = [a.trial_id for a in obs.start(0.0)]
    obs.stop_experiment(1.0)
    obs.finish()
    assert [h for h, _ in rec.per_trial(str(d.trial(tid)))] == ["on_trial_complete"]


def test_replaying_a_finished_experiment_from_storage_gives_the_live_order():
    live = Recorder()
    grid = tune.Tuner(
        T.three_reports,
        param_space={"x": tune.grid_search([1, 2])},
        run_config=air.RunConfig(verbose=0, callbacks=[live], name="replayed"),
    ).fit()
    root = grid.experiment_path
    with open(os.path.join(root, "experiment_state.json")) as f:
        state = json.load(f)

    replay = Recorder()
    follower = StorageFollower(CallbackDispatcher([replay], root, "three_reports"))
    follower.update(state, lambda t: read_results(os.path.join(root, t["dirname"], "result.json")))
    follower.update(state, lambda t: read_results(os.path.join(root, t["dirname"], "result.json")))
    follower.finish()
    for result in grid:
        name = os.path.basename(result.path)
        assert replay.per_trial(name) == live.per_trial(name)
    assert replay.hooks().count("on_trial_result") == 6  # a second read adds nothing
    assert replay.hooks()[-1] == "on_experiment_end"


def test_replay_reports_a_retried_failure_and_a_final_error(tmp_path):
    grid = tune.Tuner(
        T.always_fails,
        run_config=air.RunConfig(
            verbose=0, name="fails", failure_config=air.FailureConfig(max_failures=1)
        ),
    ).fit()
    root = grid.experiment_path
    with open(os.path.join(root, "experiment_state.json")) as f:
        state = json.load(f)
    rec = Recorder()
    follower = StorageFollower(CallbackDispatcher([rec], root))
    follower.update(state, lambda t: read_results(os.path.join(root, t["dirname"], "result.json")))
    follower.finish()
    hooks = rec.hooks()
    assert hooks.count("on_trial_recover") == 1 and hooks.count("on_trial_error") == 1
    assert hooks.index("on_trial_recover") < hooks.index("on_trial_error")
