"""LightGBM: ``TuneReportCheckpointCallback`` reports each round's evaluation metrics
(``"<data>-<metric>"``, e.g. ``valid_0-binary_logloss``) and saves the booster as a checkpoint
every ``frequency`` rounds and at the end. Needs lightgbm (``pip install 'kubetune[lightgbm]'``).
"""

from __future__ import annotations

import os
from typing import Any

from kubetune.tune.integration._report import MetricsOnly, ReportCallback, report

try:
    from lightgbm import Booster
except ImportError as exc:
    raise ImportError(
        "kubetune.tune.integration.lightgbm needs lightgbm: pip install 'kubetune[lightgbm]'"
    ) from exc

__all__ = ["TuneReportCallback", "TuneReportCheckpointCallback"]


class TuneReportCheckpointCallback(ReportCallback):
    CHECKPOINT_NAME = "model.txt"
    order = 20  # after LightGBM's own recording callbacks
    before_iteration = False

    @classmethod
    def get_model(cls, checkpoint: Any, filename: str = CHECKPOINT_NAME) -> Booster:
        with checkpoint.as_directory() as path:
            return Booster(model_file=os.path.join(path, filename))

    def __call__(self, env: Any) -> None:
        available = {
            f"{entry[0]}-{entry[1]}": entry[2] for entry in env.evaluation_result_list or []
        }
        metrics = self._select(available)
        round_number = env.iteration + 1
        is_last = env.iteration == env.end_iteration - 1
        due = bool(self._frequency) and round_number % self._frequency == 0
        if due or (self._checkpoint_at_end and is_last):
            model = env.model
            report(metrics, lambda path: model.save_model(os.path.join(path, self._filename)))
        else:
            report(metrics, None)


class TuneReportCallback(MetricsOnly, TuneReportCheckpointCallback):
    """Metrics only, no checkpoints (Ray deprecated it for TuneReportCheckpointCallback)."""
