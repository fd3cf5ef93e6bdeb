"""Helpers of ``OptunaSearch(space=function)`` (define-by-run): per-trial distributions kept as
JSON in the searcher's state, and the config built from the parameters the function asked for."""

from __future__ import annotations

from typing import Any


def dists_to_json(ot: Any, dists: dict[str, Any]) -> dict[str, str]:
    return {k: ot.distributions.distribution_to_json(d) for k, d in dists.items()}


def dists_from_json(ot: Any, dists: dict[str, str]) -> dict[str, Any]:
    return {k: ot.distributions.json_to_distribution(d) for k, d in dists.items()}


def by_run_config(params: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The parameters and the function's constants, ``a/b`` names nested as Ray does."""
    config: dict[str, Any] = {}
    for name, value in {**params, **extra}.items():
        parts = name.split("/") if isinstance(name, str) else [name]
        node = config
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return config
