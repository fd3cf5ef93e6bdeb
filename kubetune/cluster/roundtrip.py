"""Read a translated TuneExperiment back with the manifest reader and compare with the Tuner.

``plan_from_manifest`` is what the operator and ``kubetune run`` execute; if it does not give
back the very objects the user built (same sampler arguments, same scheduler fields, same
configs), the experiment on the cluster would differ from the one in the notebook. That is
refused, naming the field, before anything is created.
"""

from __future__ import annotations

from typing import Any

from kubetune.cluster.translate import NotOnCluster

# state that differs between two equal objects (caches, live bookkeeping, lazily built parts)
_VOLATILE = {"_ot", "_study", "_live", "_records", "_order", "_dists", "_cat_maps"}


def comparable(obj: Any) -> Any:
    """A searcher's or scheduler's constructor-given state, as plain data."""
    if type(obj).__module__.startswith("kubetune."):
        fields = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
        for cls in type(obj).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if hasattr(obj, slot):
                    fields[slot] = getattr(obj, slot)
        out = {"__type__": type(obj).__qualname__}
        for key, value in fields.items():
            if key not in _VOLATILE:
                out[key] = comparable(value)
        return out
    if isinstance(obj, dict):
        return {k: comparable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [comparable(v) for v in obj]
    return obj


def manifest_document(tuner: Any, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuneExperiment",
        "metadata": {"name": name},
        "spec": spec,
    }


def read_back(doc: dict[str, Any]) -> Any:
    from kubetune.manifest.experiment import plan_from_manifest
    from kubetune.manifest.validate import Manifest, ManifestError

    try:
        return plan_from_manifest(Manifest.from_dict(doc, "<the Tuner's TuneExperiment>"))
    except ManifestError as exc:
        raise NotOnCluster(f"the translated TuneExperiment is not valid: {exc}") from None


def _differs(what: str, mine: Any, theirs: Any) -> NotOnCluster:
    return NotOnCluster(
        f"{what} does not survive the translation to a TuneExperiment (the operator would read"
        f" {theirs!r} where the Tuner has {mine!r}); please report this as a bug"
    )


def check_round_trip(tuner: Any, doc: dict[str, Any]) -> None:
    from kubetune.tune.resources import PlacementGroupFactory, resources_to_pgf

    plan = read_back(doc)
    if plan.param_space != tuner.param_space:
        raise _differs("param_space", tuner.param_space, plan.param_space)
    tc = tuner.tune_config
    for field in ("metric", "mode", "num_samples", "max_concurrent_trials", "time_budget_s"):
        if plan.tune.get(field) != getattr(tc, field):
            raise _differs(f"TuneConfig.{field}", getattr(tc, field), plan.tune.get(field))
    for field in ("seed", "chdir_to_trial_dir"):
        if plan.tune.get(field) != getattr(tc, field):
            raise _differs(f"TuneConfig.{field}", getattr(tc, field), plan.tune.get(field))
    if bool(plan.tune.get("reuse_actors")) != bool(tc.reuse_actors):
        raise _differs("TuneConfig.reuse_actors", tc.reuse_actors, plan.tune.get("reuse_actors"))
    for field in ("search_alg", "scheduler"):
        mine, theirs = getattr(tc, field), plan.tune.get(field)
        if mine is None and theirs is None:
            continue
        if comparable(mine) != comparable(theirs):
            raise _differs(f"TuneConfig.{field}", comparable(mine), comparable(theirs))
    rc, back = tuner.run_config, plan.run_config
    mine_stop = rc.stop if isinstance(rc.stop, dict) else None  # a function runs in-trial
    if (mine_stop or None) != (back.stop or None):
        raise _differs("RunConfig.stop", rc.stop, back.stop)
    for field in (
        "num_to_keep",
        "checkpoint_score_attribute",
        "checkpoint_frequency",
        "checkpoint_at_end",
    ):
        a, b = getattr(rc.checkpoint_config, field), getattr(back.checkpoint_config, field)
        if (a or None) != (b or None):
            raise _differs(f"CheckpointConfig.{field}", a, b)
    if rc.checkpoint_config.checkpoint_score_attribute and (
        rc.checkpoint_config.checkpoint_score_order != back.checkpoint_config.checkpoint_score_order
    ):
        raise _differs(
            "CheckpointConfig.checkpoint_score_order",
            rc.checkpoint_config.checkpoint_score_order,
            back.checkpoint_config.checkpoint_score_order,
        )
    if rc.failure_config.max_failures != back.failure_config.max_failures:
        raise _differs(
            "FailureConfig.max_failures",
            rc.failure_config.max_failures,
            back.failure_config.max_failures,
        )
    if bool(rc.failure_config.fail_fast) != bool(back.failure_config.fail_fast):
        raise _differs(
            "FailureConfig.fail_fast", rc.failure_config.fail_fast, back.failure_config.fail_fast
        )
    resources = getattr(tuner.trainable, "_kubetune_resources", None)
    if resources is not None:
        mine_pgf = resources_to_pgf(resources)
        if plan.resources is None or mine_pgf != PlacementGroupFactory.from_dict(plan.resources):
            raise _differs("with_resources", mine_pgf.to_dict(), plan.resources)
