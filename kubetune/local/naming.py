"""``TuneConfig.trial_name_creator`` / ``trial_dirname_creator``, as Ray calls them.

Ray calls each with the trial object; the creators in Ray's docs and examples read
``trial.trial_id``, ``trial.trainable_name``, ``trial.config``, ``trial.experiment_tag`` or use
``str(trial)`` (the default name). :class:`NamingTrial` carries those. The name is what the
table, the results and ``session.get_trial_name()`` show; the directory name is where the trial
writes (by default the name).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from kubetune.engine.core import TrialNamer


class NamingTrial:
    """What a creator is given (the attributes of Ray's ``Trial`` that naming uses)."""

    def __init__(self, trial_id: str, trainable_name: str, tag: str, config: dict[str, Any]):
        self.trial_id = trial_id
        self.trainable_name = trainable_name
        self.experiment_tag = tag
        self.config = config
        self.evaluated_params = config

    def __str__(self) -> str:
        return f"{self.trainable_name}_{self.trial_id}"

    __repr__ = __str__


def _call(field: str, creator: Callable[[Any], Any], trial: NamingTrial) -> str:
    value = creator(trial)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"TuneConfig.{field} must return a non-empty string, got {value!r}")
    return value


def trial_namer(tune_config: Any, trainable_name: str) -> TrialNamer | None:
    name_creator = getattr(tune_config, "trial_name_creator", None)
    dirname_creator = getattr(tune_config, "trial_dirname_creator", None)
    if name_creator is None and dirname_creator is None:
        return None

    def namer(
        trial_id: str, tag: str, config: dict[str, Any], default: str
    ) -> tuple[str, str | None]:
        trial = NamingTrial(trial_id, trainable_name, tag, config)
        name = _call("trial_name_creator", name_creator, trial) if name_creator else default
        dirname = None
        if dirname_creator is not None:
            dirname = _call("trial_dirname_creator", dirname_creator, trial)
        elif os.sep in name or name in (".", ".."):
            dirname = default  # a name that is not a directory name: the trial's own
        if dirname is not None and (os.sep in dirname or dirname in (".", "..")):
            raise ValueError(
                f"TuneConfig.trial_dirname_creator must return a directory name without"
                f" {os.sep!r}, got {dirname!r}"
            )
        return name, dirname

    return namer
