"""``tune.experiment.Trial``: what callbacks and ``ExperimentAnalysis`` see of one trial.

In Ray a Trial also drives its actor; here the engine and the backend do that, so a Trial is
a view: its id, name, config, status, last result, directory and checkpoint, kept up to date
by the driver (see :mod:`kubetune.tune.execution.callbacks`).
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubetune.air.checkpoint import Checkpoint
    from kubetune.tune.resources import PlacementGroupFactory


class Trial:
    """One trial of an experiment (Ray's ``ray.tune.experiment.Trial``)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"

    def __init__(
        self,
        trainable_name: str = "trainable",
        config: dict[str, Any] | None = None,
        trial_id: str | None = None,
        experiment_path: str | None = None,
        experiment_dir_name: str | None = None,
        evaluated_params: dict[str, Any] | None = None,
        experiment_tag: str = "",
        placement_group_factory: PlacementGroupFactory | None = None,
        stopping_criterion: dict[str, Any] | None = None,
        *,
        trial_name: str | None = None,
        status: str = PENDING,
        **_: Any,
    ) -> None:
        self.trainable_name = trainable_name
        self.config: dict[str, Any] = dict(config or {})
        self.trial_id = trial_id or self.generate_id()
        self.evaluated_params: dict[str, Any] = dict(evaluated_params or {})
        self.experiment_tag = experiment_tag
        self.placement_group_factory = placement_group_factory
        self.stopping_criterion = dict(stopping_criterion or {})
        self.status = status
        self.custom_trial_name = trial_name
        self.num_failures = 0
        self.error_msg: str | None = None
        self.checkpoint: Checkpoint | None = None
        self._last_result: dict[str, Any] = {}
        self._experiment_path = experiment_path
        self._experiment_dir_name = experiment_dir_name or (
            os.path.basename(experiment_path.rstrip("/")) if experiment_path else None
        )

    @classmethod
    def generate_id(cls) -> str:
        return uuid.uuid4().hex[:8]

    # -- names and places -------------------------------------------------------------------
    @property
    def trial_name(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return self.custom_trial_name or f"{self.trainable_name}_{self.trial_id}"

    def __repr__(self) -> str:
        return str(self)

    @property
    def experiment_dir_name(self) -> str | None:
        return self._experiment_dir_name

    @property
    def local_experiment_path(self) -> str | None:
        return self._experiment_path

    @property
    def remote_experiment_path(self) -> str | None:
        return self._experiment_path

    @property
    def local_path(self) -> str | None:
        """The trial's directory (``<experiment>/<trial name>``)."""
        if self._experiment_path is None:
            return None
        return os.path.join(self._experiment_path, str(self))

    @property
    def path(self) -> str | None:
        return self.local_path

    @property
    def logdir(self) -> str | None:  # Ray's older name
        return self.local_path

    def init_local_path(self) -> None:
        if self.local_path:
            os.makedirs(self.local_path, exist_ok=True)

    def init_logdir(self) -> None:
        self.init_local_path()

    @property
    def error_file(self) -> str | None:
        if self.status != self.ERROR or self.local_path is None:
            return None
        return os.path.join(self.local_path, "error.txt")

    # -- progress ---------------------------------------------------------------------------
    @property
    def last_result(self) -> dict[str, Any]:
        return self._last_result

    @last_result.setter
    def last_result(self, result: dict[str, Any] | None) -> None:
        self._last_result = dict(result or {})

    def update_last_result(self, result: dict[str, Any]) -> None:
        self._last_result = result

    @property
    def has_reported_at_least_once(self) -> bool:
        return bool(self._last_result)

    def is_finished(self) -> bool:
        return self.status in (self.TERMINATED, self.ERROR)

    def set_status(self, status: str) -> None:
        self.status = status

    def set_config(self, config: dict[str, Any]) -> None:
        self.config = config

    def set_experiment_tag(self, experiment_tag: str) -> None:
        self.experiment_tag = experiment_tag

    def has_checkpoint(self) -> bool:
        return self.checkpoint is not None

    def get_error(self) -> Exception | None:
        if self.error_msg is None:
            return None
        from kubetune.local.result_grid import TuneError

        return TuneError(self.error_msg)
