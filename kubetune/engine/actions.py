"""What the engine asks a backend to do: frozen, JSON-able action records.

Every action has ``to_dict()`` (with a ``"type"`` key) and :func:`action_from_dict` reverses it.
A checkpoint is named by a :class:`CheckpointRef` (trial id + the trial's checkpoint directory
name, Ray's ``checkpoint_dir_name``); the backend maps it to a path or URI, the engine never
sees one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kubetune.schedulers.trial_scheduler import DecisionPoints


@dataclass(frozen=True)
class CheckpointRef:
    trial_id: str
    checkpoint_dir_name: str

    def to_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "checkpoint_dir_name": self.checkpoint_dir_name}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CheckpointRef | None:
        if d is None:
            return None
        return cls(d["trial_id"], d["checkpoint_dir_name"])


class Verdict:
    """The answer to the trial that reported a result (it may be waiting at a decision point)."""

    CONTINUE = "CONTINUE"
    STOP = "STOP"
    PAUSE = "PAUSE"
    RESTART = "RESTART"


@dataclass(frozen=True)
class Action:
    type: ClassVar[str] = "Action"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (CheckpointRef, DecisionPoints)):
                value = value.to_dict()
            out[f.name] = value
        return out


@dataclass(frozen=True)
class CreateTrial(Action):
    """Start a new trial (it occupies a slot from now on)."""

    type: ClassVar[str] = "CreateTrial"
    trial_id: str
    trial_name: str
    experiment_tag: str
    config: dict[str, Any]
    resources: dict[str, Any]
    restore_from: CheckpointRef | None = None
    decision_points: DecisionPoints = field(default_factory=DecisionPoints)


@dataclass(frozen=True)
class StopTrial(Action):
    """Stop the trial; the engine already counts it as ended (``status``) and its slot free."""

    type: ClassVar[str] = "StopTrial"
    trial_id: str
    reason: str
    status: str = "TERMINATED"


@dataclass(frozen=True)
class PauseTrial(Action):
    """Pause the trial (keep its latest checkpoint); its slot is free. Resumed later."""

    type: ClassVar[str] = "PauseTrial"
    trial_id: str


@dataclass(frozen=True)
class ResumeTrial(Action):
    """Start the trial again: after a pause (``reason="unpause"``) or a failure (``"retry"``)."""

    type: ClassVar[str] = "ResumeTrial"
    trial_id: str
    config: dict[str, Any]
    restore_from: CheckpointRef | None
    reason: str = "unpause"
    decision_points: DecisionPoints = field(default_factory=DecisionPoints)
    # new resources for this start (ResourceChangingScheduler), as CreateTrial's; None: the same
    resources: dict[str, Any] | None = None


@dataclass(frozen=True)
class RestartTrial(Action):
    """PBT exploit: restart the trial now from ``restore_from`` (the donor's checkpoint)."""

    type: ClassVar[str] = "RestartTrial"
    trial_id: str
    new_config: dict[str, Any]
    restore_from: CheckpointRef
    decision_points: DecisionPoints = field(default_factory=DecisionPoints)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeleteCheckpoint(Action):
    type: ClassVar[str] = "DeleteCheckpoint"
    trial_id: str
    checkpoint_dir_name: str


@dataclass(frozen=True)
class ExperimentFinished(Action):
    """Nothing is left to run. ``status``: ``"SUCCEEDED"`` or ``"FAILED"`` (fail_fast)."""

    type: ClassVar[str] = "ExperimentFinished"
    status: str
    reason: str
    best_trial_id: str | None = None


ACTION_TYPES: dict[str, type[Action]] = {
    cls.type: cls
    for cls in (
        CreateTrial,
        StopTrial,
        PauseTrial,
        ResumeTrial,
        RestartTrial,
        DeleteCheckpoint,
        ExperimentFinished,
    )
}


def action_from_dict(d: dict[str, Any]) -> Action:
    cls = ACTION_TYPES.get(d.get("type", ""))
    if cls is None:
        raise ValueError(f"unknown action type {d.get('type')!r}")
    kwargs = {k: v for k, v in d.items() if k != "type"}
    if "restore_from" in kwargs:
        kwargs["restore_from"] = CheckpointRef.from_dict(kwargs["restore_from"])
    if "decision_points" in kwargs:
        kwargs["decision_points"] = DecisionPoints.from_dict(kwargs["decision_points"])
    return cls(**kwargs)


@dataclass
class ResultResponse:
    """What :meth:`ExperimentEngine.on_result` returns: the trial's verdict and all actions.

    The actions include the one that carries out the verdict (StopTrial, PauseTrial,
    RestartTrial) plus any others (new trials, stops of other trials, checkpoint deletions). It
    iterates like the list of actions.
    """

    verdict: str
    actions: list[Action]

    def __iter__(self) -> Iterator[Action]:
        return iter(self.actions)

    def __len__(self) -> int:
        return len(self.actions)

    def __getitem__(self, index: int) -> Action:
        return self.actions[index]
