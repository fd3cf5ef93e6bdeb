"""RunConfig(callbacks=...): Ray's hooks, in Ray's order, from a real local-mode run."""

from __future__ import annotations

import os

import pytest

from kubetune import air, tune
from kubetune.tune.experiment import Trial

from . import trainables as T

TRIAL_HOOKS = (
    "on_trial_start",
    "on_trial_restore",
    "on_trial_result",
    "on_checkpoint",
    "on_trial_save",
    "on_trial_complete",
    "on_trial_recover",
    "on_trial_error",
)


class Recorder(tune.Callback):
    """Records every hook call: (hook, trial name or None, detail)."""

    def __init__(self):
        self.calls = []
        self.trial_lists = set()
        self.setup_info = None

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self.setup_info = {
            "stop": stop,
            "num_samples": num_samples,
            "total_num_samples": total_num_samples,
            **info,
        }
        self.calls.append(("setup", None, None))

    def on_step_begin(self, iteration, trials, **info):
        self.calls.append(("on_step_begin", None, iteration))

    def on_step_end(self, iteration, trials, **info):
        self.calls.append(("on_step_end", None, iteration))

    def _trial(self, hook, iteration, trials, trial, detail=None):
        assert isinstance(trial, Trial) and trial in trials
        assert isinstance(iteration, int)
        self.trial_lists.add(id(trials))
        self.calls.append((hook, str(trial), detail))

    def on_trial_start(self, iteration, trials, trial, **info):
        self._trial("on_trial_start", iteration, trials, trial)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._trial("on_trial_restore", iteration, trials, trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._trial("on_trial_result", iteration, trials, trial, result["training_iteration"])

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        assert os.path.isdir(checkpoint.path)
        self._trial("on_checkpoint", iteration, trials, trial, os.path.basename(checkpoint.path))

    def on_trial_save(self, iteration, trials, trial, **info):
        self._trial("on_trial_save", iteration, trials, trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._trial("on_trial_complete", iteration, trials, trial, trial.status)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._trial("on_trial_recover", iteration, trials, trial, trial.num_failures)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._trial("on_trial_error", iteration, trials, trial, trial.status)

    def on_experiment_end(self, trials, **info):
        self.calls.append(("on_experiment_end", None, len(trials)))

    def per_trial(self, name):
        return [(h, d) for h, t, d in self.calls if t == name]

    def hooks(self):
        return [h for h, _, _ in self.calls if h not in ("on_step_begin", "on_step_end")]


def fit(trainable, callbacks, **kwargs):
    run_kwargs = kwargs.pop("run", {})
    run_config = air.RunConfig(verbose=0, callbacks=callbacks, **run_kwargs)
    return tune.Tuner(trainable, run_config=run_config, **kwargs).fit()


def test_hook_order_of_one_trial_with_a_checkpoint():
    rec = Recorder()
    grid = fit(T.three_reports, [rec], param_space={"x": tune.choice([2])})
    name = os.path.basename(grid[0].path)
    assert rec.calls[0] == ("setup", None, None)
    assert rec.setup_info == {
        "stop": None,
        "num_samples": 1,
        "total_num_samples": 1,
    }
    assert rec.per_trial(name) == [
        ("on_trial_start", None),
        ("on_trial_result", 1),
        ("on_trial_result", 2),
        ("on_checkpoint", "checkpoint_000000"),
        ("on_trial_save", None),
        ("on_trial_result", 3),
        ("on_trial_complete", "TERMINATED"),
    ]
    assert rec.calls[-1] == ("on_experiment_end", None, 1)
    assert len(rec.trial_lists) == 1  # one list of trials, updated in place, as in Ray


def test_step_hooks_alternate_and_count_up():
    rec = Recorder()
    fit(T.three_reports, [rec])
    steps = [(h, i) for h, _, i in rec.calls if h in ("on_step_begin", "on_step_end")]
    assert len(steps) >= 2
    for k, (hook, iteration) in enumerate(steps):
        # begin(i), end(i + 1), begin(i + 1), ...: Ray increases the counter before step_end
        assert hook == ("on_step_begin" if k % 2 == 0 else "on_step_end")
        assert iteration == (k + 1) // 2
    assert steps[-1][0] == "on_step_end"
    # the experiment ends after the last step
    assert rec.calls.index(("on_experiment_end", None, 1)) > rec.calls.index(
        ("on_step_end", None, steps[-1][1])
    )


def test_a_retried_failure_recovers_and_restores_from_its_checkpoint():
    rec = Recorder()
    grid = fit(T.fails_once, [rec], run={"failure_config": air.FailureConfig(max_failures=1)})
    name = os.path.basename(grid[0].path)
    assert rec.per_trial(name) == [
        ("on_trial_start", None),
        ("on_trial_result", 1),
        ("on_checkpoint", "checkpoint_000000"),
        ("on_trial_save", None),
        ("on_trial_recover", 1),
        ("on_trial_start", None),
        ("on_trial_restore", None),
        ("on_trial_result", 2),
        ("on_trial_complete", "TERMINATED"),
    ]


def test_a_trial_that_fails_for_good_gets_on_trial_error_once():
    rec = Recorder()
    fit(T.always_fails, [rec], run={"failure_config": air.FailureConfig(max_failures=1)})
    hooks = rec.hooks()
    assert hooks.count("on_trial_recover") == 1
    assert hooks.count("on_trial_error") == 1
    assert "on_trial_complete" not in hooks
    assert hooks.index("on_trial_error") < hooks.index("on_experiment_end")


def test_stop_criteria_end_a_trial_with_on_trial_complete_after_its_last_result():
    rec = Recorder()
    grid = fit(T.counts, [rec], run={"stop": {"training_iteration": 3}})
    name = os.path.basename(grid[0].path)
    assert rec.per_trial(name) == [
        ("on_trial_start", None),
        ("on_trial_result", 1),
        ("on_trial_result", 2),
        ("on_trial_result", 3),
        ("on_trial_complete", "TERMINATED"),
    ]
    assert rec.setup_info["stop"] == {"training_iteration": 3}


def test_trials_seen_by_callbacks_carry_config_params_and_paths():
    seen = {}

    class Inspect(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            seen[trial.trial_id] = (
                dict(trial.config),
                dict(trial.evaluated_params),
                trial.local_path,
                dict(trial.last_result),
                [str(t) for t in trials],
            )

    grid = fit(
        T.three_reports,
        [Inspect()],
        param_space={"x": tune.grid_search([1, 2]), "const": 7, "n": {"y": tune.uniform(0, 1)}},
    )
    assert len(seen) == 2
    dirs = {r.path for r in grid}
    for config, params, path, last, names in seen.values():
        assert config["const"] == 7
        assert set(params) == {"x", "n/y"}  # the sampled entries only, Ray's "a/b" keys
        assert params["x"] == config["x"] and params["n/y"] == config["n"]["y"]
        assert path in dirs and os.path.isdir(path)
        assert last["score"] == config["x"] * 3.0
        assert len(names) == 2


def test_several_callbacks_are_called_in_list_order():
    order = []

    class Named(tune.Callback):
        def __init__(self, name):
            self.name = name

        def on_trial_result(self, iteration, trials, trial, result, **info):
            order.append(self.name)

    fit(T.three_reports, [Named("a"), Named("b")])
    assert order == ["a", "b"] * 3


def test_a_callback_that_raises_fails_the_fit():
    class Boom(tune.Callback):
        def on_trial_result(self, *args, **kwargs):
            raise RuntimeError("callback bug")

    with pytest.raises(RuntimeError, match="callback bug"):
        fit(T.three_reports, [Boom()])


def test_not_a_callback_is_refused_naming_the_field(_results_dir):
    with pytest.raises(TypeError, match=r"RunConfig.callbacks\[0\].*instance, not the class"):
        fit(T.three_reports, [tune.Callback])
    with pytest.raises(TypeError, match=r"RunConfig.callbacks\[1\]"):
        fit(T.three_reports, [tune.Callback(), object()])
    with pytest.raises(TypeError, match=r"RunConfig.callbacks must be a list"):
        air.RunConfig(callbacks=tune.Callback())
    assert not _results_dir.exists()  # refused before anything was written


class Counting(tune.Callback):
    def __init__(self):
        self.results = 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results += 1

    def get_state(self):
        return {"results": self.results}

    def set_state(self, state):
        self.results = state["results"]


def test_callback_state_is_saved_and_restored_with_the_experiment(tmp_path):
    counting = Counting()
    grid = tune.Tuner(
        T.always_fails,
        run_config=air.RunConfig(
            storage_path=str(tmp_path), name="stateful", verbose=0, callbacks=[counting]
        ),
    ).fit()
    assert counting.results == 1
    restored = tune.Tuner.restore(grid.experiment_path, T.three_reports, restart_errored=True)
    restored.fit()
    # the restored run's callback is the pickled one, its state set from the first run: 1 + 3
    (callback,) = [c for c in restored.run_config.callbacks if isinstance(c, Counting)]
    assert callback.results == 4
