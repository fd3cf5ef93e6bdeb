"""Hyperparameter importance by Optuna's fANOVA evaluator (what optuna-dashboard shows).

The trials' flattened configs become Optuna trials in an in-memory study: numbers that vary
get a float range spanning what was sampled, anything else a categorical of the values seen.
Each trial's score is its last finite value of the metric (ResultGrid's default scope).
"""

from __future__ import annotations

import math
from typing import Any

from kubetune._util import flatten_dict
from kubetune.dashboard.api import metric_summary
from kubetune.dashboard.source import ExperimentView, is_number

MIN_TRIALS = 3


def param_importance(view: ExperimentView, metric: str | None) -> dict[str, Any]:
    metric = metric or view.metric
    mode = view.mode or "max"
    samples: list[tuple[dict[str, Any], float]] = []
    for trial_id in view.order:
        trial = view.trials[trial_id]
        last, _ = metric_summary(trial, metric, mode)
        if last is not None:
            samples.append((flatten_dict(trial.config), last))
    if len(samples) < MIN_TRIALS:
        return {"metric": metric, "importance": {}, "note": f"needs {MIN_TRIALS} scored trials"}
    try:
        import optuna
        from optuna.distributions import CategoricalDistribution, FloatDistribution
        from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    except ImportError:
        return {"metric": metric, "importance": {}, "note": "needs optuna and scikit-learn"}
    keys = sorted({k for config, _ in samples for k in config})
    distributions: dict[str, Any] = {}
    for key in keys:
        values: list[Any] = [c.get(key) for c, _ in samples]
        if all(is_number(v) for v in values):
            lo, hi = min(values), max(values)
            if lo < hi and all(math.isfinite(v) for v in values):
                distributions[key] = FloatDistribution(float(lo), float(hi))
            continue  # a constant explains nothing
        choices = sorted({_choice(v) for v in values}, key=str)
        if len(choices) > 1:
            distributions[key] = CategoricalDistribution(choices)
    if not distributions:
        return {"metric": metric, "importance": {}, "note": "no parameter varies"}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    trials = []
    for config, value in samples:
        params = {}
        for key, dist in distributions.items():
            raw: Any = config.get(key)
            params[key] = float(raw) if isinstance(dist, FloatDistribution) else _choice(raw)
        trials.append(
            optuna.trial.create_trial(params=params, distributions=distributions, value=value)
        )
    study.add_trials(trials)
    try:
        scores = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    except (ImportError, RuntimeError, ValueError) as exc:
        return {"metric": metric, "importance": {}, "note": str(exc)}
    return {"metric": metric, "importance": {k: float(v) for k, v in scores.items()}, "note": ""}


def _choice(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
