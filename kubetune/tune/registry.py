"""``tune.register_trainable``: trainables by name, so ``Tuner("name")`` and ``tune.run("name")``
work as in Ray. Names live in this process: a trial process gets the trainable itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_TRAINABLES: dict[str, Any] = {}
_ENVS: dict[str, Callable[..., Any]] = {}


def register_trainable(name: str, trainable: Any, warn: bool = True) -> None:
    """Register a function or ``tune.Trainable`` subclass under ``name``."""
    from kubetune.tune.trainable import Trainable

    if not isinstance(name, str) or not name:
        raise TypeError(f"register_trainable: name must be a non-empty string, got {name!r}")
    is_class = isinstance(trainable, type) and issubclass(trainable, Trainable)
    if not is_class and not callable(trainable):
        raise TypeError(
            f"register_trainable({name!r}): trainable must be a function or a tune.Trainable"
            f" subclass, got {type(trainable).__name__}"
        )
    _TRAINABLES[name] = trainable


def register_env(name: str, env_creator: Callable[..., Any]) -> None:
    """Kept for Ray's RLlib-style scripts: an environment creator under ``name``."""
    if not callable(env_creator):
        raise TypeError(f"register_env({name!r}): env_creator must be callable")
    _ENVS[name] = env_creator


def get_trainable(name: str) -> Any:
    try:
        return _TRAINABLES[name]
    except KeyError:
        known = ", ".join(sorted(_TRAINABLES)) or "none"
        raise ValueError(
            f"trainable {name!r} is not registered (tune.register_trainable(name, fn) first;"
            f" registered: {known})"
        ) from None


def resolve_trainable(trainable: Any) -> Any:
    """A registered name becomes its trainable; anything else is returned as it is."""
    return get_trainable(trainable) if isinstance(trainable, str) else trainable
