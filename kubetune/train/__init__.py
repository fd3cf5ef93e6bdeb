"""``kubetune.train``: the parts of Ray Train's API that a trial uses."""

from __future__ import annotations

from kubetune.air.session import (
    get_checkpoint,
    get_experiment_name,
    get_trial_dir,
    get_trial_id,
    get_trial_name,
    get_trial_resources,
    report,
)

__all__ = [
    "get_checkpoint",
    "get_experiment_name",
    "get_trial_dir",
    "get_trial_id",
    "get_trial_name",
    "get_trial_resources",
    "report",
]
