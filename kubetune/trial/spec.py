"""The trial spec: everything ``python -m kubetune.trial`` needs to run one trial.

It is a JSON document written by the backend (local mode or the operator's pod builder).
Paths are as the trial process sees them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


class SpecError(ValueError):
    """The trial spec is unusable; the message names the field."""


@dataclass
class TrialSpec:
    trial_id: str
    out_dir: str
    trainable: str | None = None  # "package.module:attr"
    trainable_pickle: str | None = None  # path of a cloudpickled trainable
    config: dict[str, Any] = field(default_factory=dict)
    trial_name: str | None = None
    experiment_name: str = "default"
    experiment_tag: str | None = None
    trial_dir: str | None = None  # defaults to out_dir
    params_dir: str | None = None  # with_parameters objects, one pickle per name
    restore_from: str | None = None  # a checkpoint directory to resume from
    stop: dict[str, float] | None = None  # result[key] >= value stops the trial
    stopper_pickle: str | None = None  # a cloudpickled Stopper or function
    checkpoint_frequency: int = 0
    checkpoint_at_end: bool = False
    resources: dict[str, Any] | None = None  # PlacementGroupFactory.to_dict()
    chdir_to_trial_dir: bool = True
    # DecisionPoints.to_dict() from the engine, a list of milestones, or "every"
    decision_points: dict[str, Any] | list[float] | str | None = None
    gate: dict[str, Any] | None = None  # {"kind": "file", "dir": ...} or {"kind": "pipe", ...}
    done_marker: str | None = None  # written with the exit status when the runner ends
    python_path: list[str] = field(default_factory=list)
    checkpoint_index_start: int = 0  # first checkpoint_NNNNNN number this attempt uses
    # reuse_actors: after a Class-API trial ends, ask the gate for the next trial and run it
    # in this process after Trainable.reset(new_config)
    reuse: bool = False
    # the pod's terminationGracePeriodSeconds (local mode: the driver's kill grace): on SIGTERM
    # the runner goes on to the next checkpoint when this leaves time (kubetune.trial.stopping)
    termination_grace_s: float | None = None

    def __post_init__(self) -> None:
        if not self.trial_id or not isinstance(self.trial_id, str):
            raise SpecError("trial spec: trial_id must be a non-empty string")
        if not self.out_dir or not isinstance(self.out_dir, str):
            raise SpecError("trial spec: out_dir must be a non-empty path")
        if (self.trainable is None) == (self.trainable_pickle is None):
            raise SpecError("trial spec: give exactly one of trainable or trainable_pickle")
        if self.trainable is not None and ":" not in self.trainable:
            raise SpecError(
                f"trial spec: trainable must look like 'module:attribute', got {self.trainable!r}"
            )
        if not isinstance(self.config, dict):
            raise SpecError("trial spec: config must be an object")
        if self.stop is not None:
            if not isinstance(self.stop, dict):
                raise SpecError("trial spec: stop must be an object of metric: threshold")
            for key, value in self.stop.items():
                if not isinstance(value, (int, float)):  # bool included, as in Ray
                    raise SpecError(
                        f"trial spec: stop.{key} must be a number or a boolean, got {value!r}"
                    )
        if not isinstance(self.checkpoint_frequency, int) or self.checkpoint_frequency < 0:
            raise SpecError("trial spec: checkpoint_frequency must be an integer >= 0")
        points = self.decision_points
        valid_list = isinstance(points, list) and all(isinstance(v, (int, float)) for v in points)
        if not (points is None or points == "every" or isinstance(points, dict) or valid_list):
            raise SpecError(
                "trial spec: decision_points must be an object, a list of numbers or 'every'"
            )
        if self.gate is not None and self.gate.get("kind") not in ("file", "pipe"):
            raise SpecError("trial spec: gate.kind must be 'file' or 'pipe'")
        grace = self.termination_grace_s
        if grace is not None and (
            isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0
        ):
            raise SpecError("trial spec: termination_grace_s must be a number >= 0")
        if self.trial_name is None:
            self.trial_name = self.trial_id
        if self.trial_dir is None:
            self.trial_dir = self.out_dir

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        if not isinstance(data, dict):
            raise SpecError("trial spec must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"trial spec: unknown field(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:  # a required field is missing
            raise SpecError(f"trial spec: {exc}") from None

    @classmethod
    def load(cls, path: str) -> TrialSpec:
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise SpecError(f"trial spec file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise SpecError(f"trial spec {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
