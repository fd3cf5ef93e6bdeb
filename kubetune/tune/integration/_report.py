"""What the XGBoost and LightGBM callbacks share: picking metrics and reporting a model."""

from __future__ import annotations

import os
import shutil
import tempfile
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
