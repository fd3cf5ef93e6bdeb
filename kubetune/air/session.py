"""``session``: how a running trainable talks to kubetune (Ray AIR's ``ray.air.session``).

The trial runner installs the active session before it calls user code. Outside a trial every
function here raises a clear error instead of silently doing nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kubetune.air.checkpoint import Checkpoint
    from kubetune.tune.resources import PlacementGroupFactory


class SessionBackend(Protocol):
    """What the trial runner provides to the functions below."""

    trial_name: str
    trial_id: str
    experiment_name: str
    trial_dir: str

    def report(self, metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None: ...
    def get_checkpoint(self) -> Checkpoint | None: ...
    def get_trial_resources(self) -> PlacementGroupFactory: ...
    def is_stopping(self) -> bool: ...


_active: SessionBackend | None = None
# Set while a Class-API trainable runs: report() is forbidden there, the accessors work.
_inside_trainable_class = False


class SessionMisuseError(RuntimeError):
    """A session function was called where it cannot work."""


def _set_session(backend: SessionBackend | None) -> None:
    global _active
    _active = backend


def _require(name: str) -> SessionBackend:
    if _active is None:
        raise SessionMisuseError(
            f"session.{name}() was called outside a kubetune trial: run the trainable through"
            " tune.Tuner(...).fit() or `python -m kubetune.trial`"
        )
    return _active


def report(
    metrics: dict[str, Any] | None = None,
    *,
    checkpoint: Checkpoint | None = None,
    **kwargs: Any,
) -> None:
    """Report metrics (and optionally a checkpoint); each call is one training iteration.

    A directory checkpoint is taken over: it is moved into the trial's output, and the
    original directory no longer exists afterwards.
    """
    if _inside_trainable_class:
        raise SessionMisuseError(
            "session.report() must not be called inside a tune.Trainable: return the metrics"
            " from step() instead"
        )
    backend = _require("report")
    if metrics is None and kwargs:
        metrics = dict(kwargs)  # Ray 1.x style: tune.report(score=1)
    elif kwargs:
        raise TypeError("report() takes a metrics dict or keyword metrics, not both")
    if not isinstance(metrics, dict):
        raise TypeError(
            f"report() expects a dict of metrics, got {type(metrics).__name__}: {metrics!r:.80}"
        )
    backend.report(metrics, checkpoint)


def get_checkpoint() -> Checkpoint | None:
    """The checkpoint to resume from, or None when the trial starts fresh."""
    return _require("get_checkpoint").get_checkpoint()


def get_trial_name() -> str:
    return _require("get_trial_name").trial_name


def get_trial_id() -> str:
    return _require("get_trial_id").trial_id


def get_trial_resources() -> PlacementGroupFactory:
    return _require("get_trial_resources").get_trial_resources()


def get_trial_dir() -> str:
    return _require("get_trial_dir").trial_dir


def get_experiment_name() -> str:
    return _require("get_experiment_name").experiment_name


def is_stopping() -> bool:
    """Whether this trial has been asked to stop: its pod got SIGTERM (preemption, eviction,
    a draining node) or, in local mode, its process did. Ray has no such call. The runner
    writes the next ``report()`` (with its checkpoint, if one is passed) and then ends the
    trial, so a Function-API trainable that checks this can pass a checkpoint in time::

        for step in range(start, steps):
            train_one_epoch()
            ckpt = save_checkpoint() if session.is_stopping() or step % 10 == 0 else None
            session.report({"loss": loss}, checkpoint=ckpt)

    The backend resumes the trial from that checkpoint without counting a failure. See
    ``kubetune.trial.stopping`` for how long the trial has (the grace period less the final
    upload's share)."""
    return bool(_require("is_stopping").is_stopping())
