"""What the XGBoost and LightGBM callbacks share: Ray's constructor, picking metrics, reporting
a model, and the deprecated metrics-only ``TuneReportCallback``."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from typing import Any

Metrics = str | list[str] | Mapping[str, str] | None


def select(
    available: dict[str, Any],
    metrics: Metrics,
    postprocess: Callable[[dict[str, Any]], dict[str, Any]] | None,
) -> dict[str, Any]:
    """``metrics`` picked (and renamed, for a dict) from ``available``; all when None."""
    if isinstance(metrics, str):
        metrics = [metrics]
    if not metrics:
        out = dict(available)
    else:
        pairs = metrics.items() if isinstance(metrics, Mapping) else ((m, m) for m in metrics)
        out = {}
        for report_as, source in pairs:
            if source not in available:
                raise KeyError(
                    f"metric {source!r} is not among the training metrics"
                    f" {sorted(available)} (TuneReportCheckpointCallback(metrics=...))"
                )
            out[report_as] = available[source]
    return postprocess(out) if postprocess else out


def report(metrics: dict[str, Any], save: Callable[[str], None] | None) -> None:
    """Report ``metrics``; with ``save``, also a checkpoint directory it writes into."""
    from kubetune.air import session
    from kubetune.air.checkpoint import Checkpoint

    if save is None:
        session.report(metrics)
        return
    path = tempfile.mkdtemp(prefix="kubetune-model-")
    try:
        save(path)
        session.report(metrics, checkpoint=Checkpoint.from_directory(path))
    finally:
        if os.path.isdir(path):  # the session takes a directory over; only leftovers remain
            shutil.rmtree(path, ignore_errors=True)


class ReportCallback:
    """Ray's ``TuneReportCheckpointCallback`` arguments: which ``metrics`` to report (all when
    None; a dict renames them), the checkpoint's ``filename`` (the class's CHECKPOINT_NAME by
    default), a checkpoint every ``frequency`` rounds (0: none) and ``checkpoint_at_end``."""

    CHECKPOINT_NAME = "model"

    def __init__(
        self,
        metrics: Metrics = None,
        filename: str | None = None,
        frequency: int = 0,
        checkpoint_at_end: bool = True,
        results_postprocessing_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if not isinstance(frequency, int) or isinstance(frequency, bool) or frequency < 0:
            raise ValueError(f"frequency must be an integer >= 0, got {frequency!r}")
        self._metrics = metrics
        self._filename = filename or self.CHECKPOINT_NAME
        self._frequency = frequency
        self._checkpoint_at_end = checkpoint_at_end
        self._postprocess = results_postprocessing_fn

    def _select(self, available: dict[str, Any]) -> dict[str, Any]:
        return select(available, self._metrics, self._postprocess)


class MetricsOnly(ReportCallback):
    """Ray's ``TuneReportCallback``: metrics only, no checkpoints (deprecated by Ray for
    ``TuneReportCheckpointCallback``). Listed first, before a library's checkpointing class."""

    def __init__(
        self,
        metrics: Metrics = None,
        results_postprocessing_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        warnings.warn(
            "TuneReportCallback is deprecated; use TuneReportCheckpointCallback",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(
            metrics,
            frequency=0,
            checkpoint_at_end=False,
            results_postprocessing_fn=results_postprocessing_fn,
        )
