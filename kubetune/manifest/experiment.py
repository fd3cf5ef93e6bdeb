"""From a validated TuneExperiment manifest to the objects a run needs (local mode and the
operator use the same translation)."""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

from kubetune.air.config import CheckpointConfig, FailureConfig, RunConfig
from kubetune.manifest.validate import Manifest, ManifestError
from kubetune.search.errors import ConfigError

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


@dataclass
class ExperimentPlan:
    name: str
    entrypoint: str
    python_path: list[str]
    param_space: dict[str, Any]
    tune: dict[str, Any]  # TuneConfig keyword arguments (search_alg/scheduler built)
    run_config: RunConfig
    resources: dict[str, Any] | None  # PlacementGroupFactory.to_dict()


def plan_from_manifest(manifest: Manifest) -> ExperimentPlan:
    """Everything but the trainable object itself (which only local mode imports)."""
    from kubetune.search import create_searcher
    from kubetune.search.spec import from_manifest

    doc = manifest.validate()
    spec = doc["spec"]
    name = (doc.get("metadata") or {}).get("name") or "experiment"

    def parse(path: tuple[Any, ...], fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, ValueError, TypeError) as exc:
            raise manifest.error(path, str(exc)) from None

    param_space = parse(("spec", "paramSpace"), from_manifest, spec.get("paramSpace", {}))
    tc = spec.get("tuneConfig", {})
    tune: dict[str, Any] = {
        "metric": tc.get("metric"),
        "mode": tc.get("mode"),
        "num_samples": tc.get("numSamples", 1),
        "max_concurrent_trials": tc.get("maxConcurrentTrials"),
        "time_budget_s": tc.get("timeBudgetS"),
        "reuse_actors": tc.get("reuseActors", False),
        "chdir_to_trial_dir": tc.get("chdirToTrialDir", True),
        "seed": tc.get("seed"),
    }
    if "searchAlg" in tc:
        options = dict(tc["searchAlg"])
        kind = options.pop("type")
        limit = options.pop("maxConcurrent", None)
        repeat = options.pop("repeat", None)
        kwargs = {snake(k): v for k, v in options.items()}
        if kind in ("basic", "random", "grid"):
            kind = "random"
            if "seed" in kwargs:
                kwargs["random_state"] = kwargs.pop("seed")
        searcher = parse(("spec", "tuneConfig", "searchAlg"), create_searcher, kind, **kwargs)
        if repeat:
            from kubetune.search import Repeater

            searcher = Repeater(searcher, repeat=repeat)
        if limit:
            from kubetune.search import ConcurrencyLimiter

            searcher = ConcurrencyLimiter(searcher, max_concurrent=limit)
        tune["search_alg"] = searcher
    if "scheduler" in tc:
        from kubetune.schedulers import create_scheduler

        options = dict(tc["scheduler"])
        kind = options.pop("type")
        kwargs = {snake(k): v for k, v in options.items()}
        if "min_time_slice_s" in kwargs:  # the manifest says the unit; the argument does not
            kwargs["min_time_slice"] = kwargs.pop("min_time_slice_s")
        if "hyperparam_mutations" in kwargs:
            kwargs["hyperparam_mutations"] = parse(
                ("spec", "tuneConfig", "scheduler", "hyperparamMutations"),
                from_manifest,
                kwargs["hyperparam_mutations"],
                "hyperparamMutations",
            )
        if "perturbation_factors" in kwargs:
            kwargs["perturbation_factors"] = tuple(kwargs["perturbation_factors"])
        tune["scheduler"] = parse(
            ("spec", "tuneConfig", "scheduler"), create_scheduler, kind, **kwargs
        )
    rc = spec.get("runConfig", {})
    ckpt = rc.get("checkpointConfig", {})
    failure = rc.get("failureConfig", {})
    run_config = RunConfig(
        name=name,
        stop=rc.get("stop"),
        checkpoint_config=CheckpointConfig(**{snake(k): v for k, v in ckpt.items()}),
        failure_config=FailureConfig(
            max_failures=failure.get("maxFailures", 0), fail_fast=failure.get("failFast", False)
        ),
    )
    resources = spec.get("resources")
    if resources is not None:
        strategy = resources.get("strategy", "PACK")
        resources = {"bundles": resources.get("bundles", [{"CPU": 1}]), "strategy": strategy}
        if (spec.get("resources") or {}).get("workers") is not None:
            resources["workers"] = spec["resources"]["workers"]
    trainable = spec["trainable"]
    base = os.path.dirname(os.path.abspath(manifest.source)) if manifest.source else os.getcwd()
    python_path = [os.path.join(base, p) for p in trainable.get("pythonPath", [])] + [base]
    return ExperimentPlan(
        name=name,
        entrypoint=trainable["entrypoint"],
        python_path=python_path,
        param_space=param_space,
        tune=tune,
        run_config=run_config,
        resources=resources,
    )


def import_entrypoint(plan: ExperimentPlan, manifest: Manifest) -> Any:
    for entry in reversed(plan.python_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    module_name, _, attr = plan.entrypoint.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise manifest.error(
            ("spec", "trainable", "entrypoint"),
            f"cannot import {plan.entrypoint!r}: {type(exc).__name__}: {exc}",
        ) from None
    return obj


__all__ = ["ExperimentPlan", "ManifestError", "import_entrypoint", "plan_from_manifest"]
