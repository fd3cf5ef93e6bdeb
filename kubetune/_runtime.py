"""``kubetune.init`` / ``shutdown`` / ``is_initialized``: Ray's ``ray.init`` for ported scripts.

Ray starts (or joins) a Ray cluster there; kubetune needs none, so a script whose
``import ray; ray.init(num_cpus=2)`` became ``import kubetune; kubetune.init(num_cpus=2)``
runs as it did. What carries over is the resource limit: ``num_cpus`` / ``num_gpus`` cap what
local mode schedules trials on, as they cap a Ray node. Joining a Ray cluster by address has no
meaning here: the cluster way is ``kubetune submit`` / ``KUBETUNE_MODE=cluster``.
"""

from __future__ import annotations

import warnings
from typing import Any

_limits: dict[str, float] = {}
_initialized = False

# Ray's arguments that only configure Ray's own processes: accepted and ignored.
_RAY_ONLY = {
    "ignore_reinit_error",
    "include_dashboard",
    "dashboard_host",
    "dashboard_port",
    "configure_logging",
    "logging_level",
    "log_to_driver",
    "local_mode",
    "namespace",
    "runtime_env",
    "object_store_memory",
    "_temp_dir",
    "_system_config",
    "resources",
    "num_cpus_per_worker",
}


def _count(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"kubetune.init: {name} must be a number >= 0, got {value!r}")
    return float(value)


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Ray's ``ray.init``: set local mode's resource limits; returns them."""
    global _initialized
    if address not in (None, "", "auto", "local"):
        raise ValueError(
            f"kubetune.init(address={address!r}): kubetune joins no Ray cluster. To run the"
            " trials on Kubernetes, run the script with `kubetune submit` or set"
            " KUBETUNE_MODE=cluster (README, 'From a notebook')"
        )
    unknown = sorted(set(kwargs) - _RAY_ONLY)
    if unknown:
        warnings.warn(
            f"kubetune.init: ignoring {', '.join(unknown)} (Ray-only settings)", stacklevel=2
        )
    _limits.clear()
    if num_cpus is not None:
        _limits["num_cpus"] = _count("num_cpus", num_cpus)
    if num_gpus is not None:
        _limits["num_gpus"] = _count("num_gpus", num_gpus)
    _initialized = True
    return dict(_limits)


def shutdown() -> None:
    """Ray's ``ray.shutdown``: forget the limits ``init`` set."""
    global _initialized
    _limits.clear()
    _initialized = False


def is_initialized() -> bool:
    return _initialized


def cpu_limit() -> float | None:
    return _limits.get("num_cpus")


def gpu_limit() -> int | None:
    value = _limits.get("num_gpus")
    return None if value is None else int(value)
