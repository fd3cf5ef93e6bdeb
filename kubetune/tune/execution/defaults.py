"""Which callbacks an experiment runs: the user's, plus Ray's default loggers."""

from __future__ import annotations

import os
from typing import Any

from kubetune.tune.callback import Callback

# Ray's switch to turn the default loggers off
DISABLE_AUTO_LOGGERS = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"


def check_callbacks(user: Any) -> list[Callback]:
    """``RunConfig.callbacks`` as a list, or a TypeError naming the entry that is wrong."""
    if user is None:
        return []
    if not isinstance(user, (list, tuple)):
        raise TypeError(
            f"RunConfig.callbacks must be a list of tune.Callback, got {type(user).__name__}"
        )
    for i, cb in enumerate(user):
        if not isinstance(cb, Callback):
            hint = " (pass an instance, not the class)" if isinstance(cb, type) else ""
            raise TypeError(
                f"RunConfig.callbacks[{i}] must be a tune.Callback, got"
                f" {getattr(cb, '__name__', type(cb).__name__)}{hint}"
            )
    return list(user)


def experiment_callbacks(
    user: Any,
    reporter: Any = None,
    metric: str | None = None,
    mode: str | None = None,
    auto_loggers: bool = True,
) -> list[Callback]:
    """``RunConfig.callbacks`` checked, plus a TBXLoggerCallback when tensorboardX is installed
    and none is there (Ray's default; progress.csv and result.json, which Ray's CSV and JSON
    loggers write, come from the trial runner). ``auto_loggers=False`` leaves it out (cluster
    mode: the trials' logs are in storage already; following them is for the user's hooks)."""
    callbacks = check_callbacks(user)
    if reporter is not None:
        from kubetune.tune.progress_reporter import ProgressReporter, ReporterCallback

        if not isinstance(reporter, ProgressReporter):
            raise TypeError(
                "RunConfig.progress_reporter must be a tune.ProgressReporter (CLIReporter,"
                f" JupyterNotebookReporter), got {type(reporter).__name__}"
            )
        callbacks.append(ReporterCallback(reporter, metric, mode))
    if not auto_loggers or os.environ.get(DISABLE_AUTO_LOGGERS, "0") == "1":
        return callbacks
    from kubetune.tune.logger.tensorboardx import TBXLoggerCallback, tensorboardx_available

    if tensorboardx_available() and not any(isinstance(c, TBXLoggerCallback) for c in callbacks):
        callbacks.append(TBXLoggerCallback())
    return callbacks
