"""``tune.get_context()`` / ``TuneContext``: where a running trial is (Ray's trial context).

Works inside a trial (function or class trainable); outside one, each getter raises the
session's clear error. A trial is one worker, so world size is 1 and every rank is 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubetune.air import session
from kubetune.train._context import current_place

if TYPE_CHECKING:
    from kubetune.tune.resources import PlacementGroupFactory


class TuneContext:
    def get_trial_name(self) -> str:
        return session.get_trial_name()

    def get_trial_id(self) -> str:
        return session.get_trial_id()

    def get_trial_resources(self) -> PlacementGroupFactory:
        return session.get_trial_resources()

    def get_trial_dir(self) -> str:
        return session.get_trial_dir()

    def get_experiment_name(self) -> str:
        return session.get_experiment_name()

    def get_metadata(self) -> dict[str, Any]:
        return {}

    def get_world_size(self) -> int:
        return current_place().world_size

    def get_world_rank(self) -> int:
        return current_place().world_rank

    def get_local_rank(self) -> int:
        return current_place().local_rank

    def get_local_world_size(self) -> int:
        return current_place().local_world_size

    def get_node_rank(self) -> int:
        return current_place().node_rank


_CONTEXT = TuneContext()


def get_context() -> TuneContext:
    return _CONTEXT
