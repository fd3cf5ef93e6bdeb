"""Errors raised for bad experiment input; each names the offending field."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """Invalid input: ``field`` names it (``mode``, ``lower``, ``scheduler``, ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


def check_mode(mode: Any, field: str = "mode", *, allow_none: bool = True) -> str | None:
    if mode is None and allow_none:
        return None
    if mode not in ("min", "max"):
        raise ConfigError(field, f"must be 'min' or 'max', got {mode!r}")
    return str(mode)


def require_metric_mode(owner: str, metric: Any, mode: Any) -> tuple[str, str]:
    """``metric`` and ``mode`` must both be set for ``owner`` (a scheduler, searcher, query)."""
    if not metric:
        raise ConfigError(
            "metric",
            f"{owner} needs `metric` (pass it to {owner} or to the tune config)",
        )
    if mode is None:
        raise ConfigError(
            "mode", f"{owner} needs `mode` ('min' or 'max'; pass it to {owner} or the tune config)"
        )
    check_mode(mode)
    return metric, str(mode)
