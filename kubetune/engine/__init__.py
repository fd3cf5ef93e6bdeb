"""The experiment state machine: events in, actions out, JSON state (see ``engine.py``)."""

from __future__ import annotations

from kubetune.engine.actions import (
    Action,
    CheckpointRef,
    CreateTrial,
    DeleteCheckpoint,
    ExperimentFinished,
    PauseTrial,
    RestartTrial,
    ResultResponse,
    ResumeTrial,
    StopTrial,
    Verdict,
    action_from_dict,
)
from kubetune.engine.config import CheckpointSettings, EngineConfig
from kubetune.engine.engine import ExperimentEngine
from kubetune.engine.trial import ERROR, PAUSED, PENDING, RUNNING, TERMINATED

__all__ = [
    "ERROR",
    "PAUSED",
    "PENDING",
    "RUNNING",
    "TERMINATED",
    "Action",
    "CheckpointRef",
    "CheckpointSettings",
    "CreateTrial",
    "DeleteCheckpoint",
    "EngineConfig",
    "ExperimentEngine",
    "ExperimentFinished",
    "PauseTrial",
    "RestartTrial",
    "ResultResponse",
    "ResumeTrial",
    "StopTrial",
    "Verdict",
    "action_from_dict",
]
