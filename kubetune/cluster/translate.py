"""A Tuner's Python objects as a TuneExperiment spec, checked against the manifest reader.

There is one reading of a manifest: ``kubetune.manifest.experiment.plan_from_manifest``, which
``kubetune run`` and the operator use. This module only *writes* the manifest form (param
space through ``kubetune.search.spec.to_manifest``; searchers, schedulers and configs field by
field), and :func:`check_round_trip` reads the result back with that reader and compares it
with the original objects, so a field that the two sides encode differently is refused before
anything is created instead of silently running another experiment.

What the operator cannot run is refused with :class:`NotOnCluster`, whose message names the
object and what to use instead: code that exists only in the user's process (a custom
searcher, scheduler or stopper, ``sample_from``, name creators). Callbacks are not refused:
they run in the submitting process, fed from storage (``kubetune.cluster.follow``).
"""

from __future__ import annotations

from typing import Any

from kubetune.search.errors import ConfigError


class NotOnCluster(ValueError):
    """The experiment holds something the operator cannot run."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


# -- param space ---------------------------------------------------------------------------
def param_space_to_manifest(
    space: dict[str, Any], where: str = "param_space", wrap_top: bool = True
) -> Any:
    """The manifest form; a top-level scalar or list constant is written ``{constant: v}``
    (the CRD types every top-level entry as an object, for its CEL rules)."""
    from kubetune.search.spec import from_manifest, to_manifest

    try:
        out = to_manifest(space)
    except ConfigError as exc:
        raise NotOnCluster(
            f"{where}: {exc}. The operator samples configs itself and never runs user code:"
            " replace tune.sample_from with a sampler (tune.uniform, tune.choice, ...), or"
            " compute the value inside the trainable from the sampled ones"
        ) from None
    if wrap_top and isinstance(out, dict):
        for key, value in out.items():
            if not isinstance(value, dict):
                wrapped = {"constant": value}
                if from_manifest({key: wrapped}) == {key: space[key]}:
                    out[key] = wrapped
    return out


# -- schedulers ----------------------------------------------------------------------------
# manifest field -> private attribute, per scheduler class (their constructor arguments)
_SCHEDULER_FIELDS: dict[str, tuple[str, dict[str, str]]] = {
    "AsyncHyperBandScheduler": (
        "asha",
        {
            "maxT": "_max_t",
            "gracePeriod": "_grace_period",
            "reductionFactor": "_rf",
            "stopLastTrials": "_stop_last_trials",
            "seed": "_seed",
        },
    ),
    "HyperBandScheduler": (
        "hyperband",
        {"maxT": "_max_t", "reductionFactor": "_eta", "stopLastTrials": "_stop_last_trials"},
    ),
    "MedianStoppingRule": (
        "median_stopping_rule",
        {
            "gracePeriod": "_grace_period",
            "minSamplesRequired": "_min_samples_required",
            "minTimeSliceS": "_min_time_slice",
            "hardStop": "_hard_stop",
        },
    ),
    "PopulationBasedTraining": (
        "pbt",
        {
            "perturbationInterval": "_interval",
            "burnInPeriod": "_burn_in",
            "quantileFraction": "_quantile_fraction",
            "resampleProbability": "_resample_probability",
            "logConfig": "_log_config",
            "seed": "_seed",
        },
    ),
}


def scheduler_to_manifest(scheduler: Any) -> dict[str, Any] | None:
    from kubetune import schedulers as S

    if scheduler is None:
        return None
    kind = type(scheduler)
    if kind is S.FIFOScheduler:
        return {"type": "fifo"}
    if kind.__module__.startswith("kubetune.schedulers") and kind.__name__ in _SCHEDULER_FIELDS:
        name, fields = _SCHEDULER_FIELDS[kind.__name__]
    else:
        raise NotOnCluster(
            f"tune_config.scheduler: {_name(scheduler)} is user code, which the operator does"
            " not run; use one of kubetune's schedulers (FIFOScheduler, ASHAScheduler,"
            " HyperBandScheduler, MedianStoppingRule, PopulationBasedTraining), or run this"
            " experiment in local mode"
        )
    out: dict[str, Any] = {"type": name, "timeAttr": scheduler._time_attr}
    out.update(_drop_none({"metric": scheduler._metric, "mode": scheduler._mode}))
    for key, attr in fields.items():
        out[key] = getattr(scheduler, attr)
    if name == "asha":
        out["brackets"] = len(scheduler._brackets)
    if name == "pbt":
        if scheduler._custom_explore_fn is not None:
            raise NotOnCluster(
                "PopulationBasedTraining(custom_explore_fn=...) is user code, which the"
                " operator does not run; express the mutations as hyperparam_mutations"
                " (samplers and lists)"
            )
        for flag, default in (("_require_attrs", True), ("_synch", False)):
            if getattr(scheduler, flag, default) != default:
                raise NotOnCluster(
                    f"PopulationBasedTraining({flag[1:]}={not default}) is not supported on"
                    " the cluster; leave it at its default"
                )
        out["hyperparamMutations"] = param_space_to_manifest(
            dict(scheduler._mutations), "PopulationBasedTraining.hyperparam_mutations", False
        )
        out["perturbationFactors"] = list(scheduler._factors)
    return out


# -- searchers -----------------------------------------------------------------------------
def searcher_to_manifest(searcher: Any) -> dict[str, Any] | None:
    from kubetune.search import ConcurrencyLimiter, Repeater
    from kubetune.search.basic_variant import BasicVariantGenerator

    if searcher is None:
        return None
    out: dict[str, Any] = {}
    inner = searcher
    if type(inner) is ConcurrencyLimiter:
        if inner.batch:
            raise NotOnCluster(
                "ConcurrencyLimiter(batch=True) is not supported on the cluster; use"
                " batch=False or TuneConfig(max_concurrent_trials=...)"
            )
        out["maxConcurrent"] = inner.max_concurrent
        inner = inner.searcher
    if type(inner) is Repeater:
        if not inner.set_index:
            raise NotOnCluster("Repeater(set_index=False) is not supported on the cluster")
        out["repeat"] = inner.repeat
        inner = inner.searcher
    if type(inner) in (ConcurrencyLimiter, Repeater):
        raise NotOnCluster(
            f"{_name(searcher)} wraps {_name(inner)}: on the cluster write the wrappers as"
            " ConcurrencyLimiter(Repeater(searcher, repeat=...), max_concurrent=...)"
        )
    if type(inner) is BasicVariantGenerator:
        if inner._constant_grid_search or inner._max_concurrent:
            raise NotOnCluster(
                "BasicVariantGenerator(constant_grid_search=..., max_concurrent=...) is not"
                " supported on the cluster; use ConcurrencyLimiter or"
                " TuneConfig(max_concurrent_trials=...)"
            )
        out.update(type="random", seed=inner._seed)
        if inner._points:
            out["pointsToEvaluate"] = [dict(p) for p in inner._points]
        return out
    if (
        type(inner).__name__ == "OptunaSearch"
        and type(inner).__module__ == "kubetune.search.optuna"
    ):
        if not isinstance(inner._sampler_spec, str):
            raise NotOnCluster(
                f"OptunaSearch(sampler={type(inner._sampler_spec).__name__}(...)) is an object"
                " the operator cannot rebuild; pass its name: sampler='tpe', 'cmaes', 'gp',"
                " 'qmc' or 'nsga2', and seed=..."
            )
        if inner._space_arg is not None:
            raise NotOnCluster(
                "OptunaSearch(space=...): put the search space in Tuner(param_space=...)"
                " instead (the operator samples from param_space)"
            )
        if inner._evaluated_rewards is not None:
            raise NotOnCluster(
                "OptunaSearch(evaluated_rewards=...) is not supported on the cluster"
            )
        out.update(type="optuna", sampler=inner._sampler_spec, seed=inner._seed)
        if inner._points:
            out["pointsToEvaluate"] = [dict(p) for p in inner._points]
        out.update(_drop_none({"metric": inner._metric, "mode": inner._mode}))
        return out
    raise NotOnCluster(
        f"tune_config.search_alg: {_name(inner)} is user code, which the operator does not"
        " run; use kubetune's searchers (BasicVariantGenerator, OptunaSearch, optionally in"
        " ConcurrencyLimiter/Repeater), or run this experiment in local mode"
    )


# -- configs -------------------------------------------------------------------------------
def tune_config_to_manifest(tc: Any) -> dict[str, Any]:
    for attr in ("trial_name_creator", "trial_dirname_creator"):
        if getattr(tc, attr, None) is not None:
            raise NotOnCluster(
                f"TuneConfig.{attr} is user code, which the operator does not run; trial names"
                " on the cluster are the operator's (EXPERIMENT_ID_INDEX_TAG)"
            )
    out = _drop_none(
        {
            "metric": tc.metric,
            "mode": tc.mode,
            "numSamples": tc.num_samples,
            "maxConcurrentTrials": tc.max_concurrent_trials,
            "timeBudgetS": tc.time_budget_s,
            "reuseActors": bool(tc.reuse_actors) if tc.reuse_actors is not None else None,
            "chdirToTrialDir": tc.chdir_to_trial_dir,
            "seed": tc.seed,
            "searchAlg": searcher_to_manifest(tc.search_alg),
            "scheduler": scheduler_to_manifest(tc.scheduler),
        }
    )
    return out


def stops_in_trial(stop: Any) -> bool:
    """A plain function ``stop(trial_id, result) -> bool``: shipped with the code and called
    inside each trial after each result (as the runner checks a dict's thresholds), so the
    operator never runs it. Each trial has its own copy of whatever the function closes over."""
    from kubetune.stoppers import FunctionStopper

    return (
        stop is not None and not isinstance(stop, dict) and FunctionStopper.is_valid_function(stop)
    )


def stop_to_manifest(stop: Any) -> dict[str, Any] | None:
    if stop is None or stops_in_trial(stop):
        return None
    if isinstance(stop, dict) and all(isinstance(v, (int, float)) for v in stop.values()):
        # booleans included: {"done": True} stops on the result's own flag, as in Ray
        return {str(k): v for k, v in stop.items()}
    raise NotOnCluster(
        f"run_config.stop: {_name(stop)} is a Stopper object, which the operator would have to"
        " run (it may stop the whole experiment or keep state across trials); use a dict of"
        " thresholds (stop={'training_iteration': 20, 'mean_accuracy': 0.98}), a plain"
        " function stop(trial_id, result) -> bool (it runs inside each trial), or stop from"
        " inside the trainable by returning"
    )


def run_config_to_manifest(rc: Any) -> dict[str, Any]:
    from kubetune.tune.execution.defaults import check_callbacks

    check_callbacks(rc.callbacks)  # they run here, fed from storage (kubetune.cluster.follow)
    ckpt = rc.checkpoint_config
    failure = rc.failure_config
    out: dict[str, Any] = {}
    stop = stop_to_manifest(rc.stop)
    if stop:
        out["stop"] = stop
    checkpoint = _drop_none(
        {
            "numToKeep": ckpt.num_to_keep,
            "checkpointScoreAttribute": ckpt.checkpoint_score_attribute,
            "checkpointScoreOrder": ckpt.checkpoint_score_order
            if ckpt.checkpoint_score_attribute
            else None,
            "checkpointFrequency": ckpt.checkpoint_frequency or None,
            "checkpointAtEnd": ckpt.checkpoint_at_end,
        }
    )
    if checkpoint:
        out["checkpointConfig"] = checkpoint
    fc = _drop_none(
        {
            "maxFailures": failure.max_failures or None,
            # "raise" is the client's behaviour (fit() raises); the operator stops the same way
            "failFast": bool(failure.fail_fast) or None,
        }
    )
    if fc:
        out["failureConfig"] = fc
    return out


def resources_to_manifest(trainable: Any) -> dict[str, Any] | None:
    from kubetune.tune.resources import resources_to_pgf

    resources = getattr(trainable, "_kubetune_resources", None)
    if resources is None:
        return None
    if callable(resources):
        raise NotOnCluster(
            "with_resources(trainable, <function>): resources computed from the config are user"
            " code the operator would run; give fixed resources (a dict or a"
            " PlacementGroupFactory)"
        )
    pgf = resources_to_pgf(resources)
    return pgf.to_dict()  # bundles, strategy, and workers of a ScalingConfig


def experiment_spec(tuner: Any) -> dict[str, Any]:
    """``paramSpace``, ``tuneConfig``, ``runConfig`` and ``resources`` of a Tuner."""
    spec: dict[str, Any] = {
        "paramSpace": param_space_to_manifest(tuner.param_space),
        "tuneConfig": tune_config_to_manifest(tuner.tune_config),
    }
    run = run_config_to_manifest(tuner.run_config)
    if run:
        spec["runConfig"] = run
    resources = resources_to_manifest(tuner.trainable)
    if resources is not None:
        spec["resources"] = resources
    return spec


__all__ = [
    "NotOnCluster",
    "experiment_spec",
    "param_space_to_manifest",
    "run_config_to_manifest",
    "scheduler_to_manifest",
    "searcher_to_manifest",
    "stops_in_trial",
    "tune_config_to_manifest",
]
