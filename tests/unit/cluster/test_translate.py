"""Python -> TuneExperiment -> engine: every sampler, config field, searcher and scheduler
survives the translation, and the engine built from the manifest (as the operator builds it)
creates exactly the trials the engine built from the Python objects creates.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubetune import air, tune
from kubetune.cluster.roundtrip import check_round_trip, manifest_document, read_back
from kubetune.cluster.translate import NotOnCluster, experiment_spec
from kubetune.engine import EngineConfig, ExperimentEngine
from kubetune.engine.actions import CreateTrial
from kubetune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
    TrialScheduler,
)
from kubetune.search import ConcurrencyLimiter, Repeater, Searcher
from kubetune.search.basic_variant import BasicVariantGenerator
from kubetune.tune.helpers import with_resources
from kubetune.tune.resources import PlacementGroupFactory


def trainable(config: dict[str, Any]) -> None:
    pass


EVERY_SAMPLER = {
    "u": tune.uniform(0.1, 0.9),
    "qu": tune.quniform(0.0, 0.5, 0.05),
    "lu": tune.loguniform(1e-4, 1e-1),
    "lu2": tune.loguniform(1, 1000, base=2),
    "qlu": tune.qloguniform(1e-5, 1e-1, 1e-5),
    "n": tune.randn(0.0, 1.0),
    "qn": tune.qrandn(0.0, 1.0, 0.1),
    "ri": tune.randint(1, 5),
    "qri": tune.qrandint(32, 256, 32),
    "lri": tune.lograndint(8, 1024),
    "qlri": tune.qlograndint(16, 512, 16),
    "c": tune.choice(["adam", "sgd", {"nested": tune.uniform(0, 1)}]),
    "g": tune.grid_search(["relu", "tanh"]),
    "nested": {"deep": {"lr": tune.loguniform(1e-3, 1e-1), "k": 3}, "list": [1, 2]},
    "tuple": (3, 3),
    "looks_like_a_sampler": {"choice": [1, 2]},  # a constant: must stay a constant
    "epochs": 3,  # top-level constants: the CRD wants {constant: ...} there
    "layers": [64, 32],
    "name": "run",
    "flag": None,
}


def make(**tc: Any) -> tune.Tuner:
    rc = tc.pop("run_config", None) or air.RunConfig(name="tr")
    space = tc.pop("param_space", EVERY_SAMPLER)
    fn = tc.pop("trainable", trainable)
    return tune.Tuner(fn, param_space=space, tune_config=tune.TuneConfig(**tc), run_config=rc)


def doc_of(tuner: tune.Tuner) -> dict[str, Any]:
    spec = experiment_spec(tuner)
    spec["trainable"] = {"image": "kubetune/trial", "entrypoint": "kubetune.cluster:shipped"}
    return manifest_document(tuner, "tr", spec)


def engine_of(param_space, tune_kwargs, run_config, resources) -> ExperimentEngine:
    config = EngineConfig.from_run_config(
        run_config,
        param_space=param_space,
        metric=tune_kwargs.get("metric"),
        mode=tune_kwargs.get("mode"),
        num_samples=tune_kwargs.get("num_samples", 1),
        max_concurrent_trials=tune_kwargs.get("max_concurrent_trials"),
        time_budget_s=tune_kwargs.get("time_budget_s"),
        resources=resources or {"bundles": [{"CPU": 1}], "strategy": "PACK"},
        name="tr",
        trainable_name="trainable",
    )
    return ExperimentEngine(
        config,
        search_alg=tune_kwargs.get("search_alg"),
        scheduler=tune_kwargs.get("scheduler"),
        stopper=run_config.stop,
        seed=tune_kwargs.get("seed"),
    )


def created(engine: ExperimentEngine) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [
        (a.trial_name, a.config, dict(a.resources))
        for a in engine.start(1000.0)
        if isinstance(a, CreateTrial)
    ]


def assert_same_engine(factory) -> None:
    """The engine from the Tuner's objects and the one from its manifest start identically."""
    tuner = factory()
    doc = doc_of(tuner)
    check_round_trip(factory(), doc)
    plan = read_back(doc)
    fresh = factory()
    tc = fresh.tune_config
    mine = engine_of(
        fresh.param_space,
        {**vars(tc)},
        fresh.run_config,
        (experiment_spec(fresh).get("resources")),
    )
    theirs = engine_of(plan.param_space, plan.tune, plan.run_config, plan.resources)
    assert mine.config.to_dict(None) == theirs.config.to_dict(None)
    assert created(mine) == created(theirs)


def test_every_sampler_nested_and_grid_round_trip():
    assert_same_engine(lambda: make(metric="loss", mode="min", num_samples=3, seed=11))


def test_every_tune_config_field_round_trips():
    assert_same_engine(
        lambda: make(
            metric="acc",
            mode="max",
            num_samples=2,
            max_concurrent_trials=3,
            time_budget_s=60.5,
            reuse_actors=True,
            chdir_to_trial_dir=False,
            seed=5,
        )
    )


def test_every_run_config_field_round_trips():
    rc = lambda: air.RunConfig(  # noqa: E731
        name="tr",
        stop={"training_iteration": 20, "acc": 0.98, "done": True},
        checkpoint_config=air.CheckpointConfig(
            num_to_keep=2,
            checkpoint_score_attribute="acc",
            checkpoint_score_order="min",
            checkpoint_frequency=3,
            checkpoint_at_end=True,
        ),
        failure_config=air.FailureConfig(max_failures=4),
    )
    assert_same_engine(lambda: make(metric="acc", mode="max", seed=1, run_config=rc()))
    doc = doc_of(make(run_config=rc()))
    assert doc["spec"]["runConfig"] == {
        "stop": {"training_iteration": 20, "acc": 0.98, "done": True},
        "checkpointConfig": {
            "numToKeep": 2,
            "checkpointScoreAttribute": "acc",
            "checkpointScoreOrder": "min",
            "checkpointFrequency": 3,
            "checkpointAtEnd": True,
        },
        "failureConfig": {"maxFailures": 4},
    }


@pytest.mark.parametrize(
    "scheduler",
    [
        lambda: FIFOScheduler(),
        lambda: ASHAScheduler(max_t=30, grace_period=2, reduction_factor=3, brackets=2, seed=4),
        lambda: ASHAScheduler(
            time_attr="epoch", metric="acc", mode="max", stop_last_trials=False, seed=5
        ),
        lambda: HyperBandScheduler(max_t=27, reduction_factor=3, stop_last_trials=False),
        lambda: MedianStoppingRule(
            time_attr="training_iteration",
            grace_period=3,
            min_samples_required=2,
            min_time_slice=1.5,
            hard_stop=False,
        ),
        lambda: PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=4,
            burn_in_period=2,
            hyperparam_mutations={"lr": tune.loguniform(1e-4, 1e-1), "bs": [16, 32, 64]},
            quantile_fraction=0.3,
            resample_probability=0.4,
            perturbation_factors=(1.5, 0.5),
            log_config=False,
            seed=9,
        ),
    ],
    ids=["fifo", "asha", "asha-attrs", "hyperband", "median", "pbt"],
)
def test_every_scheduler_round_trips(scheduler):
    space = {"lr": tune.loguniform(1e-4, 1e-1), "bs": tune.choice([16, 32, 64])}
    assert_same_engine(
        lambda: make(
            metric="acc",
            mode="max",
            num_samples=4,
            seed=3,
            scheduler=scheduler(),
            param_space=space,
        )
    )


@pytest.mark.parametrize(
    "searcher",
    [
        lambda: BasicVariantGenerator(random_state=21),
        lambda: BasicVariantGenerator(points_to_evaluate=[{"x": 0.5}], random_state=2),
        lambda: ConcurrencyLimiter(BasicVariantGenerator(random_state=1), max_concurrent=2),
        lambda: ConcurrencyLimiter(
            Repeater(BasicVariantGenerator(random_state=1), repeat=2), max_concurrent=3
        ),
    ],
    ids=["basic", "points", "limiter", "limiter-repeater"],
)
def test_every_searcher_round_trips(searcher):
    assert_same_engine(
        lambda: make(
            metric="y",
            mode="min",
            num_samples=4,
            search_alg=searcher(),
            param_space={"x": tune.uniform(0, 1)},
        )
    )


def test_optuna_round_trips():
    pytest.importorskip("optuna", reason="OptunaSearch needs the optuna extra")
    from kubetune.search.optuna import OptunaSearch

    assert_same_engine(
        lambda: make(
            metric="y",
            mode="min",
            num_samples=3,
            search_alg=OptunaSearch(sampler="tpe", seed=8, points_to_evaluate=[{"x": 0.25}]),
            param_space={"x": tune.uniform(0, 1), "k": tune.choice([1, 2])},
        )
    )


def test_with_resources_and_placement_group_round_trip():
    pgf = PlacementGroupFactory([{"CPU": 2, "GPU": 1}, {"CPU": 1}], strategy="STRICT_PACK")
    assert_same_engine(lambda: make(trainable=with_resources(trainable, pgf), seed=1))
    assert_same_engine(lambda: make(trainable=with_resources(trainable, {"cpu": 3}), seed=1))
    assert doc_of(make(trainable=with_resources(trainable, pgf)))["spec"]["resources"] == {
        "bundles": [{"CPU": 2, "GPU": 1}, {"CPU": 1}],
        "strategy": "STRICT_PACK",
    }


def test_a_torch_trainers_scaling_config_round_trips_as_workers():
    from kubetune.air.config import ScalingConfig
    from kubetune.train.torch import TorchTrainer

    scaling = ScalingConfig(num_workers=3, use_gpu=True, placement_strategy="SPREAD")
    factory = lambda: make(  # noqa: E731
        trainable=TorchTrainer(trainable, scaling_config=scaling),
        param_space={"train_loop_config": {"lr": tune.uniform(0, 1)}},
        seed=1,
    )
    assert_same_engine(factory)
    assert doc_of(factory())["spec"]["resources"] == {
        "bundles": [{}, {"GPU": 1}, {"GPU": 1}, {"GPU": 1}],
        "strategy": "SPREAD",
        "workers": 3,
    }


# -- refusals: before anything is created, naming the object and the alternative ------------
class MySearcher(Searcher):
    def suggest(self, trial_id):
        return {}


class MyScheduler(TrialScheduler):
    pass


class MyCallback(tune.Callback):
    pass


class MyStopper(tune.Stopper):
    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        return False


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"search_alg": MySearcher()}, ["MySearcher", "user code", "OptunaSearch"]),
        ({"scheduler": MyScheduler()}, ["MyScheduler", "ASHAScheduler"]),
        (
            {"param_space": {"x": tune.sample_from(lambda spec: 1)}},
            ["sample_from", "x", "tune.uniform"],
        ),
        (
            {
                "scheduler": PopulationBasedTraining(
                    perturbation_interval=2, custom_explore_fn=lambda c: c
                )
            },
            ["custom_explore_fn", "hyperparam_mutations"],
        ),
        (
            {"run_config": air.RunConfig(stop=MyStopper())},
            ["MyStopper", "run_config.stop", "dict of thresholds"],
        ),
        ({"trial_name_creator": lambda t: "x"}, ["trial_name_creator"]),
        (
            {"trainable": with_resources(trainable, lambda config: {"cpu": 1})},
            ["with_resources", "fixed resources"],
        ),
        (
            {"search_alg": Repeater(ConcurrencyLimiter(BasicVariantGenerator(), 2), 2)},
            ["ConcurrencyLimiter(Repeater(searcher"],
        ),
    ],
    ids=[
        "searcher",
        "scheduler",
        "sample_from",
        "explore_fn",
        "stopper",
        "name-creator",
        "resources-fn",
        "wrapper-order",
    ],
)
def test_what_the_operator_cannot_run_is_refused_by_name(kwargs, words):
    with pytest.raises(NotOnCluster) as info:
        experiment_spec(make(**kwargs))
    for word in words:
        assert word in str(info.value)


def test_an_optuna_sampler_object_is_refused_with_its_name():
    optuna = pytest.importorskip("optuna", reason="OptunaSearch needs the optuna extra")
    from kubetune.search.optuna import OptunaSearch

    with pytest.raises(NotOnCluster, match="sampler='tpe'"):
        experiment_spec(make(search_alg=OptunaSearch(sampler=optuna.samplers.RandomSampler())))


def test_fail_fast_round_trips():
    rc = lambda: air.RunConfig(name="tr", failure_config=air.FailureConfig(fail_fast=True))  # noqa: E731
    assert_same_engine(lambda: make(seed=1, run_config=rc()))
    assert doc_of(make(run_config=rc()))["spec"]["runConfig"] == {
        "failureConfig": {"failFast": True}
    }


def test_callbacks_are_not_refused_they_run_in_the_submitting_process():
    """The operator never sees them: they stay out of the manifest (kubetune.cluster.follow
    runs them here, from storage)."""
    spec = experiment_spec(make(run_config=air.RunConfig(callbacks=[MyCallback()])))
    assert "callbacks" not in json.dumps(spec)
    with pytest.raises(TypeError, match=r"RunConfig.callbacks\[0\] must be a tune.Callback"):
        experiment_spec(make(run_config=air.RunConfig(callbacks=[object()])))
