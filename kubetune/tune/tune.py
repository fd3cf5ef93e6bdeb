"""``tune.run`` and ``tune.run_experiments``: Ray's older entry points, run through a Tuner.

``tune.run(trainable, config=..., metric=..., mode=..., num_samples=..., stop=..., ...)`` builds
the equivalent ``Tuner``, fits it and returns an :class:`ExperimentAnalysis`; with
``raise_on_failed_trial`` (the default) a trial that did not end TERMINATED raises TuneError,
as in Ray. ``resume=True`` / ``"AUTO"`` continues the experiment of the same name when one
exists (``"ERRORED_ONLY"`` / ``"RESTART_ERRORED"`` variants as in Ray).
"""

from __future__ import annotations

import os
from typing import Any

from kubetune.tune.analysis import ExperimentAnalysis
from kubetune.tune.error import TuneError
from kubetune.tune.experiment.experiment import Experiment
from kubetune.tune.registry import resolve_trainable

_UNSUPPORTED = ("restore", "export_formats", "sync_config", "storage_filesystem", "_remote")


def _checkpoint_config(
    checkpoint_config: Any,
    keep_checkpoints_num: int | None,
    checkpoint_score_attr: str | None,
    checkpoint_freq: int,
    checkpoint_at_end: bool,
) -> Any:
    from kubetune.air.config import CheckpointConfig

    if checkpoint_config is not None:
        return checkpoint_config
    order = "max"
    if checkpoint_score_attr and checkpoint_score_attr.startswith("min-"):
        checkpoint_score_attr, order = checkpoint_score_attr[4:], "min"
    return CheckpointConfig(
        num_to_keep=keep_checkpoints_num,
        checkpoint_score_attribute=checkpoint_score_attr,
        checkpoint_score_order=order,
        checkpoint_frequency=checkpoint_freq,
        checkpoint_at_end=checkpoint_at_end or None,
    )


def _resume_flags(resume: Any) -> dict[str, bool] | None:
    """Ray's ``resume`` strings as Tuner.restore flags; None: start a new experiment."""
    if not resume:
        return None
    text = "AUTO" if resume is True else str(resume).upper()
    flags = {"resume_unfinished": True, "resume_errored": False, "restart_errored": False}
    if "ERRORED_ONLY" in text:
        flags["resume_unfinished"] = False
    if "RESTART_ERRORED" in text:
        flags["restart_errored"] = True
    elif "ERRORED" in text:
        flags["resume_errored"] = True
    if not any(word in text for word in ("AUTO", "LOCAL", "REMOTE", "PROMPT", "ERRORED")):
        raise ValueError(f"tune.run: resume={resume!r} is not one of Ray's resume values")
    return flags


def run(
    run_or_experiment: Any,
    *,
    name: str | None = None,
    metric: str | None = None,
    mode: str | None = None,
    stop: Any = None,
    time_budget_s: float | None = None,
    config: dict[str, Any] | None = None,
    resources_per_trial: Any = None,
    num_samples: int = 1,
    storage_path: str | None = None,
    local_dir: str | None = None,
    search_alg: Any = None,
    scheduler: Any = None,
    checkpoint_config: Any = None,
    verbose: int | None = None,
    progress_reporter: Any = None,
    log_to_file: bool = False,
    trial_name_creator: Any = None,
    trial_dirname_creator: Any = None,
    max_failures: int = 0,
    fail_fast: bool | str = False,
    resume: Any = None,
    resume_config: Any = None,
    reuse_actors: bool | None = None,
    raise_on_failed_trial: bool = True,
    callbacks: list[Any] | None = None,
    max_concurrent_trials: int | None = None,
    keep_checkpoints_num: int | None = None,
    checkpoint_score_attr: str | None = None,
    checkpoint_freq: int = 0,
    checkpoint_at_end: bool = False,
    chdir_to_trial_dir: bool = True,
    **kwargs: Any,
) -> ExperimentAnalysis:
    from kubetune.air.config import FailureConfig, RunConfig
    from kubetune.local.common import default_storage
    from kubetune.local.config import TuneConfig
    from kubetune.local.tuner import Tuner
    from kubetune.tune.helpers import with_resources

    for key in kwargs:
        if key in _UNSUPPORTED and kwargs[key] is not None:
            raise ValueError(f"tune.run: {key}= is not supported by kubetune")
        if key not in _UNSUPPORTED:
            raise TypeError(f"tune.run() got an unexpected keyword argument {key!r}")
    if isinstance(run_or_experiment, Experiment):
        spec = run_or_experiment.run_kwargs()
        return run(
            run_or_experiment.run,
            **{
                **spec,
                "metric": metric,
                "mode": mode,
                "search_alg": search_alg,
                "scheduler": scheduler,
                "verbose": verbose,
                "resume": resume,
                "progress_reporter": progress_reporter,
                "reuse_actors": reuse_actors,
                "raise_on_failed_trial": raise_on_failed_trial,
                "fail_fast": fail_fast,
                "callbacks": spec.get("callbacks") or callbacks,
                "max_concurrent_trials": max_concurrent_trials,
            },
        )
    trainable = resolve_trainable(run_or_experiment)
    if resources_per_trial is not None:
        trainable = with_resources(trainable, resources_per_trial)
    run_config = RunConfig(
        name=name,
        storage_path=storage_path or local_dir,
        stop=stop,
        checkpoint_config=_checkpoint_config(
            checkpoint_config,
            keep_checkpoints_num,
            checkpoint_score_attr,
            checkpoint_freq,
            checkpoint_at_end,
        ),
        failure_config=FailureConfig(max_failures=max_failures, fail_fast=fail_fast),
        verbose=1 if verbose is None else int(verbose),
        callbacks=callbacks,
        log_to_file=log_to_file,
        progress_reporter=progress_reporter,
    )
    tune_config = TuneConfig(
        metric=metric,
        mode=mode,
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=num_samples,
        max_concurrent_trials=max_concurrent_trials,
        time_budget_s=time_budget_s,
        reuse_actors=reuse_actors,
        trial_name_creator=trial_name_creator,
        trial_dirname_creator=trial_dirname_creator,
        chdir_to_trial_dir=chdir_to_trial_dir,
    )
    flags = resume_config.restore_flags() if resume_config is not None else _resume_flags(resume)
    tuner: Tuner | None = None
    if flags is not None and name:
        root = storage_path or local_dir or default_storage()
        path = (
            f"{root.rstrip('/')}/{name}"
            if root.startswith("s3://")
            else os.path.join(os.path.expanduser(root), name)
        )
        if Tuner.can_restore(path):
            tuner = Tuner.restore(path, trainable, **flags)
    if tuner is None:
        tuner = Tuner(
            trainable,
            param_space=config or {},
            tune_config=tune_config,
            run_config=run_config,
        )
    grid = tuner.fit()
    analysis = ExperimentAnalysis(grid.experiment_path, default_metric=metric, default_mode=mode)
    incomplete = [t for t in analysis.trials if t.status != "TERMINATED"]
    if incomplete and raise_on_failed_trial:
        raise TuneError("Trials did not complete", incomplete)
    return analysis


def run_experiments(
    experiments: Experiment | list[Experiment] | dict[str, Any],
    scheduler: Any = None,
    verbose: int | None = None,
    progress_reporter: Any = None,
    resume: Any = None,
    reuse_actors: bool | None = None,
    raise_on_failed_trial: bool = True,
    concurrent: bool = True,
    callbacks: list[Any] | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Run each experiment (an Experiment, a list, or Ray's ``{name: spec}`` dict) one after
    the other; returns every trial."""
    if isinstance(experiments, Experiment):
        todo = [experiments]
    elif isinstance(experiments, dict):
        todo = [Experiment.from_json(n, s) for n, s in experiments.items()]
    elif isinstance(experiments, list) and all(isinstance(e, Experiment) for e in experiments):
        todo = list(experiments)
    else:
        raise TypeError(
            "run_experiments: experiments must be an Experiment, a list of them, or a"
            " {name: spec} dict"
        )
    trials: list[Any] = []
    for experiment in todo:
        analysis = run(
            experiment,
            scheduler=scheduler,
            verbose=verbose,
            progress_reporter=progress_reporter,
            resume=resume,
            reuse_actors=reuse_actors,
            raise_on_failed_trial=raise_on_failed_trial,
            callbacks=callbacks,
            **kwargs,
        )
        trials.extend(analysis.trials)
    return trials
