"""XGBoost: ``TuneReportCheckpointCallback`` reports each boosting round's evaluation metrics
(``"<data>-<metric>"``, e.g. ``eval-logloss``) and saves the booster as a checkpoint every
``frequency`` rounds and at the end. Needs xgboost (``pip install 'kubetune[xgboost]'``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from kubetune._util import flatten_dict
from kubetune.tune.integration._report import MetricsOnly, ReportCallback, report

try:
    from xgboost import Booster
    from xgboost.callback import TrainingCallback
except ImportError as exc:
    raise ImportError(
        "kubetune.tune.integration.xgboost needs xgboost: pip install 'kubetune[xgboost]'"
    ) from exc

__all__ = ["TuneReportCallback", "TuneReportCheckpointCallback"]


class TuneReportCheckpointCallback(ReportCallback, TrainingCallback):
    CHECKPOINT_NAME = "model.ubj"
    _evals_log: Any = None
    _last_checkpoint: int | None = None

    @classmethod
    def get_model(cls, checkpoint: Any, filename: str = CHECKPOINT_NAME) -> Booster:
        """The booster a checkpoint of this callback holds."""
        with checkpoint.as_directory() as path:
            booster = Booster()
            booster.load_model(os.path.join(path, filename))
            return booster

    def _metrics_of(self, evals_log: Any) -> dict[str, Any]:
        return self._select(
            {k: v[-1] for k, v in flatten_dict(evals_log or {}, delimiter="-").items()}
        )

    def _save(self, model: Booster) -> Callable[[str], None]:
        return lambda path: model.save_model(os.path.join(path, self._filename))

    def after_iteration(self, model: Booster, epoch: int, evals_log: Any) -> bool:
        self._evals_log = evals_log
        metrics = self._metrics_of(evals_log)
        if self._frequency and (epoch + 1) % self._frequency == 0:
            self._last_checkpoint = epoch
            report(metrics, self._save(model))
        else:
            report(metrics, None)
        return False  # never stops training itself: the scheduler does

    def after_training(self, model: Booster) -> Booster:
        if not self._checkpoint_at_end:
            return model
        if self._last_checkpoint is not None and (
            model.num_boosted_rounds() - 1 == self._last_checkpoint
        ):
            return model  # the last round was just checkpointed
        metrics = self._metrics_of(self._evals_log) if self._evals_log else {}
        report(metrics, self._save(model))
        return model


class TuneReportCallback(MetricsOnly, TuneReportCheckpointCallback):
    """Metrics only, no checkpoints (Ray deprecated it for TuneReportCheckpointCallback)."""
