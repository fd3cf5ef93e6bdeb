"""What the integrations share: the install error and which result values are metrics."""

from __future__ import annotations

import importlib
import math
from typing import Any

from kubetune._util import flatten_dict

# auto-filled fields that are not metrics worth charting
NOT_METRICS = {"config", "pid", "timestamp", "date", "hostname", "node_ip", "trial_id"}


def require(module: str, extra: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{what} needs the {module} package: pip install 'kubetune[{extra}]'"
        ) from exc


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of ``result``, nested keys joined with ``/``."""
    out: dict[str, float] = {}
    shown = {k: v for k, v in result.items() if k not in NOT_METRICS}
    for key, value in flatten_dict(shown, delimiter="/").items():
        if isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, (int, float)) or type(value).__module__ == "numpy":
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(number):
                out[key] = number
    return out


def flat_params(config: dict[str, Any]) -> dict[str, Any]:
    return flatten_dict(config, delimiter="/")
