"""The keys a result must carry, checked before any scheduler or searcher sees it.

A result without the scheduler's metric or time attribute, the searcher's metric, or the
experiment's metric (``TuneConfig(metric=...)``, as Ray checks it unless
``TUNE_DISABLE_STRICT_METRIC_CHECKING=1``), or with a value there that is not a number where a
scheduler or searcher must compare it, ends that trial in ERROR with a message naming the trial
and the key. The rest of the experiment goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from kubetune.schedulers.trial_scheduler import MissingResultKeyError

TUNE_CONFIG = "TuneConfig(metric=...)"
STRICT_ENV = "TUNE_DISABLE_STRICT_METRIC_CHECKING"


def strict_metric_checking() -> bool:
    return os.environ.get(STRICT_ENV, "0") != "1"


def add_experiment_metric(required: list[tuple[str, str]], metric: str | None) -> None:
    if metric and strict_metric_checking() and all(k != metric for k, _ in required):
        required.append((metric, TUNE_CONFIG))


def result_problem(
    trial_id: str,
    result: Mapping[str, Any],
    required: list[tuple[str, str]],
    lookup: Callable[[Mapping[str, Any], str], Any],
) -> str | None:
    """Why ``result`` cannot be used, or None."""
    for key, owner in required:
        value = lookup(result, key)
        if value is None:
            message = str(MissingResultKeyError(trial_id, key, owner))
            if owner == TUNE_CONFIG:
                message += f"; as in Ray, {STRICT_ENV}=1 turns this check off"
            return message
        if owner == TUNE_CONFIG:
            continue  # ranked only where it is a number; other values are kept as reported
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            return (
                f"trial {trial_id} reported `{key}` = {shown} (a {type(value).__name__}), but"
                f" {owner} needs a number there"
            )
    return None
