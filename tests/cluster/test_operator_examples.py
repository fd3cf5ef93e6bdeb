"""The examples run by the operator with the real sidecar give local mode's answers: the
quickstart, the class API, PBT's exploits from a donor's checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cluster import operator_helpers
from tests.cluster.operator_helpers import (
    create_experiment,
    example_experiment,
    examples_importable,
    get_experiment,
    pbt_tune_config,
    phase_of,
    trial_objects,
    wait_succeeded,
)
from tests.testenv.helpers import s3_secret, wait_for

crds = operator_helpers.crds  # fixtures
operator_process = operator_helpers.operator_process


def local_best(tmp_path: Path) -> tuple[dict[str, Any], float]:
    """The reference quickstart in local mode with the same seed."""
    with examples_importable():
        import quickstart

        from kubetune import air, tune

        tuner = tune.Tuner(
            quickstart.trainable,
            param_space={"a": tune.grid_search([1, 2, 3]), "b": tune.uniform(0, 4)},
            tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=2, seed=7),
            run_config=air.RunConfig(name="qs", storage_path=str(tmp_path), verbose=0),
        )
        best = tuner.fit().get_best_result()
        return dict(best.config), float(best.metrics["score"])


def test_quickstart_with_the_real_sidecar_matches_local_mode(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process, tmp_path
):
    s3_secret(kube_api, namespace, s3_server)
    body = example_experiment(
        "quickstart",
        "quickstart:trainable",
        s3_server,
        s3_bucket,
        paramSpace={
            "a": {"gridSearch": [1, 2, 3]},
            "b": {"uniform": {"lower": 0, "upper": 4}},
        },
        tuneConfig={
            "metric": "score",
            "mode": "max",
            "numSamples": 2,
            "seed": 7,
            "maxConcurrentTrials": 3,
        },
    )
    create_experiment(kube_api, namespace, body)
    operator_process()
    try:
        wait_for(
            lambda: phase_of(kube_api, namespace, "quickstart") == "Succeeded", 150, "Succeeded"
        )
    except AssertionError:
        print(operator_process.log.read_text()[-5000:])
        raise
    status = get_experiment(kube_api, namespace, "quickstart")["status"]
    assert status["trials"]["total"] == 6 and status["trials"]["terminated"] == 6
    config, score = local_best(tmp_path)
    assert status["bestTrial"]["config"]["a"] == config["a"]
    assert status["bestTrial"]["config"]["b"] == pytest.approx(config["b"])
    assert status["bestTrial"]["metric"] == pytest.approx(score)


def test_class_api_example_matches_local_mode(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process, tmp_path
):
    s3_secret(kube_api, namespace, s3_server)
    body = example_experiment(
        "classapi",
        "pbt:Optimiser",
        s3_server,
        s3_bucket,
        paramSpace={"lr": {"uniform": {"lower": 0.01, "upper": 0.5}}},
        tuneConfig={"metric": "score", "mode": "max", "numSamples": 3, "seed": 3},
        runConfig={"stop": {"training_iteration": 6}},
    )
    create_experiment(kube_api, namespace, body)
    operator_process()
    wait_succeeded(kube_api, namespace, "classapi", 150, operator_process)
    status = get_experiment(kube_api, namespace, "classapi")["status"]
    assert status["trials"]["terminated"] == 3

    with examples_importable():
        import pbt

        from kubetune import air, tune

        grid = tune.Tuner(
            pbt.Optimiser,
            param_space={"lr": tune.uniform(0.01, 0.5)},
            tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=3, seed=3),
            run_config=air.RunConfig(
                name="classapi",
                storage_path=str(tmp_path),
                verbose=0,
                stop={"training_iteration": 6},
            ),
        ).fit()
        best = grid.get_best_result()
    assert status["bestTrial"]["config"]["lr"] == pytest.approx(best.config["lr"])
    assert status["bestTrial"]["metric"] == pytest.approx(best.metrics["score"])


def test_pbt_exploits_restart_trials_from_a_donor_checkpoint(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process, tmp_path
):
    s3_secret(kube_api, namespace, s3_server)
    body = example_experiment(
        "pbt",
        "tests.cluster.pbt_population:Population",
        s3_server,
        s3_bucket,
        paramSpace={
            "lr": {"uniform": {"lower": 0.01, "upper": 0.5}},
            "step_s": {"constant": 0.2},
            # the four members start training together however slowly their pods start:
            # exploits need live peers' results (see pbt_population.py)
            "barrier": {"constant": str(tmp_path / "barrier")},
            "population": {"constant": 4},
        },
        tuneConfig=pbt_tune_config(2, quantileFraction=0.5),
        runConfig={
            "stop": {"training_iteration": 9},
            # numToKeep 1: every newer checkpoint makes the last one surplus, so a donor's
            # checkpoint survives until its exploit restored it only if deletion waits for it
            "checkpointConfig": {"checkpointFrequency": 1, "numToKeep": 1},
        },
    )
    create_experiment(kube_api, namespace, body)
    operator_process()
    wait_succeeded(kube_api, namespace, "pbt", 180, operator_process)
    trials = trial_objects(kube_api, namespace)
    assert len(trials) == 4
    restarted = [t for t in trials if t["status"]["attempts"] > 1]
    assert restarted, ("PBT exploited no trial", operator_process.log.read_text()[-3000:])
    for t in restarted:
        donor = t["spec"]["restoreFrom"]
        assert donor.startswith(f"s3://{s3_bucket}/pbt/")
    finals = [t["status"]["report"].get("iteration") for t in trials]
    assert finals == [9, 9, 9, 9], [t["status"] for t in trials]
