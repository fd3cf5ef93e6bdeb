"""ResourceChangingScheduler in local mode (issue 14): new resources are applied as Ray applies
them, by pausing the trial and starting it again from its checkpoint with them."""

from __future__ import annotations

from kubetune import air, tune
from kubetune.tune.schedulers import ResourceChangingScheduler

from . import trainables as T


def test_reallocated_resources_restart_the_trial_from_its_checkpoint_with_them():
    def allocate(tune_controller, trial, result, scheduler):
        if result["training_iteration"] >= 2:
            return tune.PlacementGroupFactory([{"CPU": 2}])
        return None

    results = tune.Tuner(
        tune.with_resources(T.reports_its_cpus, {"cpu": 1}),
        param_space={"steps": 6},
        tune_config=tune.TuneConfig(
            scheduler=ResourceChangingScheduler(resources_allocation_function=allocate)
        ),
        run_config=air.RunConfig(verbose=0),
    ).fit()
    assert results.num_errors == 0
    rows = results[0].history()
    cpus = [row["cpus"] for row in rows]
    steps = [row["step"] for row in rows]
    assert cpus[0] == 1.0 and cpus[-1] == 2.0, rows
    assert steps[-1] == 6 and sorted(set(steps)) == list(range(1, 7))  # none lost, none re-run
    first_two = cpus.index(2.0)
    assert rows[first_two]["iterations_since_restore"] == 1  # a new start, from the checkpoint
    assert rows[first_two]["step"] == rows[first_two - 1]["step"] + 1
    assert all(c == 2.0 for c in cpus[first_two:])
