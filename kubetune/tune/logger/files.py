"""``CSVLoggerCallback`` and ``JsonLoggerCallback``: Ray's two file loggers.

In kubetune the trial runner itself writes ``progress.csv``, ``result.json`` and
``params.json`` into the trial's directory (locally and in a pod, before the driver sees the
result), so these loggers have nothing left to write: they exist so that code that lists them
in ``RunConfig(callbacks=...)`` (or subclasses them) runs unchanged and gets the same files.
"""

from __future__ import annotations

from kubetune.tune.logger.logger import LoggerCallback


class CSVLoggerCallback(LoggerCallback):
    """``progress.csv`` in each trial directory (written by the trial runner)."""

    _SAVED_FILE_TEMPLATES = ["progress.csv"]


class JsonLoggerCallback(LoggerCallback):
    """``result.json`` (one JSON line per result) and ``params.json`` (written by the runner)."""

    _SAVED_FILE_TEMPLATES = ["result.json", "params.json"]
