"""Expanding a param space into concrete configs, in Ray's order.

* Unresolved values are domains and ``{"grid_search": [...]}`` markers anywhere in nested dicts
  and lists. Grid variables are ordered by their key path; the *first* path varies fastest
  (Ray's ``_grid_search_generator``). For every grid combination the random domains are drawn
  in the space's insertion order, and ``sample_from`` functions that read values not drawn yet
  are retried in later passes.
* Values produced by a grid or a choice may themselves contain domains: they are expanded
  recursively, as Ray does.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Iterator, Mapping
from typing import Any

from kubetune.search.errors import ConfigError
from kubetune.search.sample import (
    Categorical,
    Domain,
    Function,
    UnresolvedDependency,
    _SpecView,
    is_grid_marker,
)

Path = tuple[Any, ...]

_MAX_RESOLUTION_PASSES = 20


def copy_space(value: Any) -> Any:
    """Copy the containers (dicts, lists, tuples) of a space; domains are immutable and shared.

    Much cheaper than ``copy.deepcopy`` (which would copy every domain object), and enough:
    variant generation only ever replaces container items.
    """
    if isinstance(value, dict):
        return {k: copy_space(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_space(v) for v in value]
    if isinstance(value, tuple):
        return tuple(copy_space(v) for v in value)
    if isinstance(value, Domain):
        return value
    return copy.deepcopy(value)


def _as_domain(value: Any) -> Domain | None:
    if isinstance(value, Domain):
        return value
    if is_grid_marker(value):
        return Categorical(value["grid_search"], grid=True)
    return None


def split_space(space: Any, prefix: Path = ()) -> tuple[dict[Path, Any], dict[Path, Domain]]:
    """(resolved leaf values, unresolved domains) by key path."""
    resolved: dict[Path, Any] = {}
    unresolved: dict[Path, Domain] = {}

    def walk(path: Path, value: Any) -> None:
        domain = _as_domain(value)
        if domain is not None:
            unresolved[path] = domain
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk((*path, k), v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk((*path, i), v)
        else:
            resolved[path] = value

    if isinstance(space, Mapping):
        for k, v in space.items():
            walk((*prefix, k), v)
    return resolved, unresolved


def _path_key(path: Path) -> tuple[tuple[int, Any], ...]:
    return tuple((0, p) if isinstance(p, int) else (1, str(p)) for p in path)


def parse_space(
    space: Mapping[str, Any],
) -> tuple[list[tuple[Path, Domain]], list[tuple[Path, Categorical]]]:
    """(random domain vars in insertion order, grid vars sorted by path)."""
    _, unresolved = split_space(space)
    domain_vars: list[tuple[Path, Domain]] = []
    grid_vars: list[tuple[Path, Categorical]] = []
    for path, domain in unresolved.items():
        if domain.is_grid():
            assert isinstance(domain, Categorical)
            grid_vars.append((path, domain))
        else:
            domain_vars.append((path, domain))
    grid_vars.sort(key=lambda pv: _path_key(pv[0]))
    return domain_vars, grid_vars


def has_unresolved(space: Any) -> bool:
    return bool(split_space(space)[1])


def count_grid(space: Mapping[str, Any]) -> int:
    """Number of grid combinations of the top level of ``space`` (Ray's count)."""
    n = 1
    for _, domain in parse_space(space)[1]:
        n *= len(domain)
    return n


def get_value(spec: Any, path: Path) -> Any:
    for k in path:
        spec = spec[k]
    return spec


def assign_value(spec: Any, path: Path, value: Any) -> None:
    parent: Any = None
    parent_key: Any = None
    node = spec
    for k in path[:-1]:
        parent, parent_key, node = node, k, node[k]
    key = path[-1]
    if isinstance(node, tuple):
        if parent is None:
            raise ValueError("cannot assign into a top-level tuple")
        parent[parent_key] = (*node[:key], value, *node[key + 1 :])
    else:
        node[key] = value


def _resolve_domain_vars(
    spec: dict[str, Any],
    domain_vars: list[tuple[Path, Domain]],
    rng: random.Random,
    allow_fail: bool = False,
) -> tuple[bool, dict[Path, Any]]:
    resolved: dict[Path, Any] = {}
    pending = True
    passes = 0
    last_error: UnresolvedDependency | None = None
    while pending and passes < _MAX_RESOLUTION_PASSES:
        passes += 1
        pending = False
        for path, domain in domain_vars:
            if path in resolved:
                continue
            try:
                value = domain.sample(_SpecView(spec), random_state=rng)
            except UnresolvedDependency as exc:
                pending = True
                last_error = exc
                continue
            except Exception as exc:
                if not isinstance(domain, Function):
                    raise
                name = "/".join(str(p) for p in path)
                raise ConfigError(name, f"sample_from function failed: {exc!r}") from exc
            assign_value(spec, path, value)
            resolved[path] = value
    if pending:
        if allow_fail:
            return False, resolved
        unresolved = [
            "/".join(str(p) for p in path) for path, _ in domain_vars if path not in resolved
        ]
        raise ConfigError(
            unresolved[0],
            f"sample_from could not be resolved (circular dependency on {last_error})",
        )
    return True, resolved


def _grid_combinations(
    spec: dict[str, Any], grid_vars: list[tuple[Path, Categorical]]
) -> Iterator[dict[str, Any]]:
    if not grid_vars:
        yield spec
        return
    indices = [0] * len(grid_vars)
    while True:
        variant = copy_space(spec)
        for i, (path, domain) in enumerate(grid_vars):
            assign_value(variant, path, domain.categories[indices[i]])
        yield variant
        # the first grid variable (by sorted path) varies fastest
        i = 0
        while i < len(indices):
            indices[i] += 1
            if indices[i] < len(grid_vars[i][1]):
                break
            indices[i] = 0
            i += 1
        if i == len(indices):
            return


def generate_variants(
    space: Mapping[str, Any],
    rng: random.Random,
    constant_grid_search: bool = False,
) -> Iterator[tuple[dict[Path, Any], dict[str, Any]]]:
    """Yield ``(resolved_vars, config)`` for every grid combination of ``space``."""
    spec: dict[str, Any] = copy_space(dict(space))
    domain_vars, grid_vars = parse_space(spec)
    if not domain_vars and not grid_vars:
        yield {}, spec
        return
    to_resolve = domain_vars
    constant_vars: dict[Path, Any] = {}
    all_resolved = True
    if constant_grid_search:
        all_resolved, constant_vars = _resolve_domain_vars(spec, domain_vars, rng, allow_fail=True)
        to_resolve = [(p, d) for p, d in domain_vars if p not in constant_vars]
    for grid_spec in _grid_combinations(spec, grid_vars):
        resolved_vars = dict(constant_vars)
        if not constant_grid_search or not all_resolved:
            _, passed = _resolve_domain_vars(grid_spec, to_resolve, rng)
            resolved_vars.update(passed)
        for nested_vars, final in generate_variants(grid_spec, rng, constant_grid_search):
            variant_vars = dict(resolved_vars)
            for path, _ in grid_vars:
                variant_vars[path] = get_value(final, path)
            variant_vars.update(nested_vars)
            yield variant_vars, final


def apply_preset(space: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """``space`` with the values of ``point`` (a full or partial config) filled in."""
    spec: dict[str, Any] = copy_space(dict(space))
    resolved, _ = split_space(point)
    for path, value in resolved.items():
        try:
            current = get_value(spec, path[:-1])
            if not isinstance(current, (Mapping, list, tuple)):
                raise KeyError(path[-1])
            if isinstance(current, Mapping) and path[-1] not in current:
                raise KeyError(path[-1])
        except (KeyError, IndexError, TypeError) as exc:
            name = "/".join(str(p) for p in path)
            raise ConfigError(
                "points_to_evaluate",
                f"key `{name}` is not in the search space (add it to param_space)",
            ) from exc
        assign_value(spec, path, value)
    return spec


def _clean_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", str(value)).strip("_")


def format_vars(resolved_vars: Mapping[Path, Any]) -> str:
    """Ray's experiment tag body: ``last_key=value`` pairs sorted by path, comma separated."""
    items = sorted(resolved_vars.items(), key=lambda kv: _path_key(kv[0]))
    return ",".join(f"{_clean_value(k[-1])}={_clean_value(v)}" for k, v in items)


def flatten_resolved_vars(resolved_vars: Mapping[Path, Any]) -> dict[str, Any]:
    return {"/".join(str(p) for p in path): v for path, v in resolved_vars.items()}
