"""``tune.with_parameters`` and ``tune.with_resources``.

``with_parameters`` keeps large objects out of the trainable itself: the driver stores each
object once (``store_parameters`` writes one pickle per name into the experiment's params
directory) and ships only references; inside the trial each object is loaded from that
directory the first time it is needed, once per process.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable
from typing import Any

from kubetune.tune.resources import PlacementGroupFactory, resources_to_pgf
from kubetune.tune.trainable import Trainable

PARAMS_ENV = "KUBETUNE_PARAMS_DIR"
_loaded: dict[str, Any] = {}


class ParamRef:
    """Stands in for a with_parameters object that was stored in the params directory."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"ParamRef({self.name!r})"


def _params_file(directory: str, name: str) -> str:
    return os.path.join(directory, f"{name}.pkl")


def resolve_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """Replace references by the stored objects (loaded once per process)."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if not isinstance(value, ParamRef):
            out[name] = value
            continue
        if name not in _loaded:
            directory = os.environ.get(PARAMS_ENV)
            if not directory:
                raise RuntimeError(
                    f"with_parameters object {name!r} was stored by the driver, but this process"
                    f" has no params directory (${PARAMS_ENV})"
                )
            path = _params_file(directory, value.name)
            if not os.path.exists(path):
                raise FileNotFoundError(f"with_parameters object {name!r} not found at {path}")
            import cloudpickle

            with open(path, "rb") as f:
                _loaded[name] = cloudpickle.load(f)
        out[name] = _loaded[name]
    return out


class WrappedFunction:
    """A Function-API trainable with with_parameters objects and/or resources attached."""

    def __init__(
        self,
        fn: Callable[..., Any],
        params: dict[str, Any] | None = None,
        resources: Any = None,
    ) -> None:
        self.fn = fn
        self._kubetune_parameters = dict(params or {})
        self._kubetune_resources = resources
        functools.update_wrapper(self, fn)

    def __call__(self, config: dict[str, Any]) -> Any:
        return self.fn(config, **resolve_parameters(self._kubetune_parameters))


def with_parameters(trainable: Any, **kwargs: Any) -> Any:
    """Pass large objects to a trainable: as keyword arguments of the function, or of
    ``Trainable.setup`` for a class."""
    if isinstance(trainable, type) and issubclass(trainable, Trainable):
        base = trainable
        params = dict(getattr(base, "_kubetune_parameters", {}))
        params.update(kwargs)

        def setup(self: Trainable, config: dict[str, Any]) -> None:
            values = resolve_parameters(type(self)._kubetune_parameters)  # type: ignore[attr-defined]
            base.setup(self, config, **values)

        return type(
            base.__name__,
            (base,),
            {"setup": setup, "_kubetune_parameters": params, "__module__": base.__module__},
        )
    if not callable(trainable):
        raise TypeError(f"with_parameters needs a function or a Trainable class, got {trainable!r}")
    if isinstance(trainable, WrappedFunction):
        wrapped = copy.copy(trainable)
        wrapped._kubetune_parameters = {**trainable._kubetune_parameters, **kwargs}
        return wrapped
    return WrappedFunction(trainable, kwargs)


def with_resources(trainable: Any, resources: Any) -> Any:
    """Attach resources to a trainable: a dict, a PlacementGroupFactory, or a function of
    the config returning either."""
    if not callable(resources):
        resources_to_pgf(resources)  # validate now, naming the bad key
    if isinstance(trainable, type) and issubclass(trainable, Trainable):
        return type(
            trainable.__name__,
            (trainable,),
            {"_kubetune_resources": resources, "__module__": trainable.__module__},
        )
    if not callable(trainable):
        raise TypeError(f"with_resources needs a function or a Trainable class, got {trainable!r}")
    if isinstance(trainable, WrappedFunction):
        wrapped = copy.copy(trainable)
        wrapped._kubetune_resources = resources
        return wrapped
    return WrappedFunction(trainable, resources=resources)


def trainable_resources(trainable: Any, config: dict[str, Any]) -> PlacementGroupFactory | None:
    """The resources a trial of ``trainable`` with ``config`` asks for, or None (default)."""
    resources = getattr(trainable, "_kubetune_resources", None)
    if resources is None and isinstance(trainable, type) and issubclass(trainable, Trainable):
        resources = trainable.default_resource_request(config)
    if resources is None:
        return None
    if callable(resources) and not isinstance(resources, PlacementGroupFactory):
        resources = resources(config)
    return resources_to_pgf(resources)


def store_parameters(trainable: Any, directory: str) -> Any:
    """Write each with_parameters object once into ``directory``; return the trainable with
    references in their place (what travels to trial processes)."""
    params = getattr(trainable, "_kubetune_parameters", None)
    if not params:
        return trainable
    import cloudpickle

    os.makedirs(directory, exist_ok=True)
    refs: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, ParamRef):
            refs[name] = value
            continue
        path = _params_file(directory, name)
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            cloudpickle.dump(value, f)
        os.replace(tmp, path)
        refs[name] = ParamRef(name)
    if isinstance(trainable, WrappedFunction):
        light = copy.copy(trainable)
        light._kubetune_parameters = refs
        return light
    return type(
        trainable.__name__,
        (trainable,),
        {"_kubetune_parameters": refs, "__module__": trainable.__module__},
    )
