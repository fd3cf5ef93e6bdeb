"""A local trial as the backend follows it, and what every trial of the experiment shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubetune.engine import CheckpointRef
from kubetune.local.process import TrialProcess
from kubetune.local.workers import WorkerGroup
from kubetune.tune.resources import PlacementGroupFactory


@dataclass
class TrialTemplate:
    """What every trial of the experiment shares."""

    experiment_name: str
    experiment_dir: str
    trainable_pickle: str
    params_dir: str | None
    stop: dict[str, float] | None
    checkpoint_frequency: int
    checkpoint_at_end: bool
    chdir_to_trial_dir: bool
    python_path: list[str]
    reuse_actors: bool
    resources_for: Callable[[dict[str, Any], dict[str, Any]], PlacementGroupFactory]


@dataclass
class LocalTrial:
    trial_id: str
    name: str
    tag: str
    config: dict[str, Any]
    base_resources: dict[str, Any]
    restore_from: CheckpointRef | None = None
    decision_points: dict[str, Any] | None = None
    proc: TrialProcess | None = None
    pgf: PlacementGroupFactory | None = None
    gpus: list[int] = field(default_factory=list)
    attempt: int = 0
    verdicts: dict[int, str] = field(default_factory=dict)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    ended_by_engine: str | None = None  # "stop" | "pause" | "restart"
    relaunch: bool = False
    checkpoints_seen: set[str] = field(default_factory=set)
    # the runner wrote a result with done=True: it ends this trial by itself (stop criteria,
    # done), so an engine STOP needs no signal (which could hit a reused process's next trial)
    self_ending: bool = False
    dir_name: str = ""  # trial_dirname_creator's, when not the name
    workers: WorkerGroup | None = None  # ranks 1..N-1 of a multi-worker trial
    # resources the scheduler gave it (ResourceChangingScheduler): they replace the template's
    # (with_resources) from the next start on; `new_resources` waits for the process to end
    resources: dict[str, Any] | None = None
    new_resources: dict[str, Any] | None = None

    @property
    def dirname(self) -> str:
        return self.dir_name or self.name
