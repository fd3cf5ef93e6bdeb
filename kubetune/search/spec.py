"""The manifest (JSON/YAML) form of a param space, and its lossless round trip.

A param space in a ``TuneExperiment`` manifest is plain data. Constants, nested objects and
lists are written as they are; a *sampler object* is a mapping with exactly one key, the
sampler's name (camelCase), whose value holds the arguments::

    lr:          {loguniform: {lower: 1.0e-4, upper: 1.0e-1}}        # base: 10 by default
    momentum:    {uniform: {lower: 0.1, upper: 0.9}}
    dropout:     {quniform: {lower: 0.0, upper: 0.5, q: 0.05}}
    layers:      {randint: {lower: 1, upper: 5}}                     # upper exclusive
    units:       {qrandint: {lower: 32, upper: 256, q: 32}}
    width:       {lograndint: {lower: 8, upper: 1024}}
    batch:       {qlograndint: {lower: 16, upper: 512, q: 16}}
    noise:       {randn: {mean: 0.0, sd: 1.0}}
    noise_q:     {qrandn: {mean: 0.0, sd: 1.0, q: 0.1}}
    wd:          {qloguniform: {lower: 1.0e-5, upper: 1.0e-1, q: 1.0e-5}}
    optimizer:   {choice: [adam, sgd]}
    activation:  {gridSearch: [relu, tanh]}                         # grid_search also accepted
    shape:       {tuple: [3, 3]}                                     # a Python tuple

The values in ``choice``, ``gridSearch`` and ``tuple`` are param spaces themselves (they may
hold sampler objects, as in Ray).

**Escape.** A one-key mapping whose key is one of the reserved names above, or ``constant``,
is read as a sampler. To write such a mapping as a literal value, wrap it:
``{constant: <value>}`` — its value is taken verbatim, never interpreted (so
``{constant: {choice: [1, 2]}}`` is the dict ``{"choice": [1, 2]}``, and
``{constant: {constant: 1}}`` is ``{"constant": 1}``). :func:`to_manifest` adds the wrapper
exactly where it is needed, so ``from_manifest(to_manifest(space)) == space``.

``sample_from`` is a Python function and has no manifest form: converting it raises
:class:`~kubetune.search.errors.ConfigError` naming its path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from kubetune.search import sample as S
from kubetune.search.errors import ConfigError

# manifest name -> (Python constructor name, argument names in order, required count)
_RANGE_SAMPLERS: dict[str, tuple[str, tuple[str, ...], int]] = {
    "uniform": ("uniform", ("lower", "upper"), 2),
    "quniform": ("quniform", ("lower", "upper", "q"), 3),
    "loguniform": ("loguniform", ("lower", "upper", "base"), 2),
    "qloguniform": ("qloguniform", ("lower", "upper", "q", "base"), 3),
    "randn": ("randn", ("mean", "sd"), 0),
    "qrandn": ("qrandn", ("mean", "sd", "q"), 3),
    "randint": ("randint", ("lower", "upper"), 2),
    "qrandint": ("qrandint", ("lower", "upper", "q"), 2),
    "lograndint": ("lograndint", ("lower", "upper", "base"), 2),
    "qlograndint": ("qlograndint", ("lower", "upper", "q", "base"), 3),
}
_LIST_SAMPLERS = {"choice", "gridSearch", "grid_search", "tuple"}
CONSTANT = "constant"
RESERVED = frozenset(_RANGE_SAMPLERS) | _LIST_SAMPLERS | {CONSTANT}

_CONSTRUCTORS: dict[str, Callable[..., S.Domain]] = {
    "uniform": S.uniform,
    "quniform": S.quniform,
    "loguniform": S.loguniform,
    "qloguniform": S.qloguniform,
    "randn": S.randn,
    "qrandn": S.qrandn,
    "randint": S.randint,
    "qrandint": S.qrandint,
    "lograndint": S.lograndint,
    "qlograndint": S.qlograndint,
}


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def from_manifest(data: Any, path: str = "paramSpace") -> Any:
    """Turn the manifest form into Python objects (domains, ``{"grid_search": ...}``, values)."""
    if isinstance(data, Mapping):
        if len(data) == 1:
            ((key, value),) = data.items()
            if key == CONSTANT:
                return _copy_literal(value)
            if key in _RANGE_SAMPLERS:
                return _range_from_manifest(key, value, _join(path, key))
            if key in _LIST_SAMPLERS:
                where = _join(path, key)
                if not isinstance(value, list):
                    raise ConfigError(where, f"must be a list, got {type(value).__name__}")
                items = [from_manifest(v, f"{where}[{i}]") for i, v in enumerate(value)]
                if key == "tuple":
                    return tuple(items)
                try:
                    if key == "choice":
                        return S.choice(items)
                    return S.grid_search(items)
                except ConfigError as exc:
                    raise ConfigError(where, exc.reason) from exc
        out: dict[str, Any] = {}
        for k, v in data.items():
            if not isinstance(k, str):
                raise ConfigError(_join(path, k), "keys must be strings")
            out[k] = from_manifest(v, _join(path, k))
        return out
    if isinstance(data, list):
        return [from_manifest(v, f"{path}[{i}]") for i, v in enumerate(data)]
    return data


def _copy_literal(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy_literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_literal(v) for v in value]
    return value


def _range_from_manifest(name: str, args: Any, where: str) -> S.Domain:
    ctor_name, arg_names, required = _RANGE_SAMPLERS[name]
    if not isinstance(args, Mapping):
        raise ConfigError(where, f"must be an object with {', '.join(arg_names)}")
    unknown = sorted(set(args) - set(arg_names))
    if unknown:
        raise ConfigError(
            _join(where, unknown[0]),
            f"unknown argument of {name} (expected {', '.join(arg_names)})",
        )
    for needed in arg_names[:required]:
        if needed not in args and not (name == "qrandint" and needed == "q"):
            raise ConfigError(_join(where, needed), f"{name} needs `{needed}`")
    try:
        return _CONSTRUCTORS[ctor_name](**dict(args))
    except ConfigError as exc:
        raise ConfigError(_join(where, exc.field), exc.reason) from exc


def to_manifest(space: Any, path: str = "paramSpace") -> Any:
    """Turn Python objects into the manifest form (JSON-able); inverse of :func:`from_manifest`."""
    if isinstance(space, S.Function):
        raise ConfigError(
            path, "sample_from is a Python function and cannot be written in a manifest"
        )
    if isinstance(space, S.Categorical):
        key = "gridSearch" if space.is_grid() else "choice"
        where = _join(path, key)
        return {key: [to_manifest(v, f"{where}[{i}]") for i, v in enumerate(space.categories)]}
    if isinstance(space, (S.Float, S.Integer)):
        return {space.kind: dict(space.params())}
    if isinstance(space, S.Domain):
        raise ConfigError(path, f"{type(space).__name__} has no manifest form")
    if S.is_grid_marker(space):
        values = space["grid_search"]
        where = _join(path, "gridSearch")
        if not isinstance(values, (list, tuple)):
            raise ConfigError(where, "grid_search values must be a list")
        return {"gridSearch": [to_manifest(v, f"{where}[{i}]") for i, v in enumerate(values)]}
    if isinstance(space, Mapping):
        out: dict[str, Any] = {}
        for k, v in space.items():
            if not isinstance(k, str):
                raise ConfigError(_join(path, k), "keys must be strings in a manifest")
            out[k] = to_manifest(v, _join(path, k))
        if len(out) == 1 and next(iter(out)) in RESERVED:
            # a literal that would read as a sampler: wrap it (and keep it verbatim)
            return {CONSTANT: _literal(space, path)}
        return out
    if isinstance(space, tuple):
        return {"tuple": [to_manifest(v, f"{path}[{i}]") for i, v in enumerate(space)]}
    if isinstance(space, list):
        return [to_manifest(v, f"{path}[{i}]") for i, v in enumerate(space)]
    if space is None or isinstance(space, (bool, int, str)):
        return space
    if isinstance(space, float):
        if not math.isfinite(space):
            raise ConfigError(path, f"{space!r} has no JSON form")
        return space
    raise ConfigError(path, f"a {type(space).__name__} value has no manifest form")


def _literal(value: Any, path: str) -> Any:
    """A value inside ``{constant: ...}``: plain JSON data only, taken verbatim on the way back."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(_join(path, k), "keys must be strings in a manifest")
            out[k] = _literal(v, _join(path, k))
        return out
    if isinstance(value, list):
        return [_literal(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise ConfigError(
        path,
        f"a {type(value).__name__} inside a one-key mapping named like a sampler cannot be "
        "written in a manifest",
    )
