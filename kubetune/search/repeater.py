"""``Repeater``: run every suggested config ``repeat`` times, report the mean to the searcher."""

from __future__ import annotations

import copy
import math
from typing import Any

from kubetune.search.errors import ConfigError
from kubetune.search.searcher import Searcher, SearcherWrapper

TRIAL_INDEX = "__trial_index__"


class Repeater(SearcherWrapper):
    """Groups of ``repeat`` trials share one config; ``__trial_index__`` tells them apart.

    When every trial of a group has ended, the wrapped searcher gets one completion for the
    group's first trial with the mean of the group's metric (NaN results ignored, Ray's rule).
    """

    def __init__(self, searcher: Searcher, repeat: int = 1, set_index: bool = True) -> None:
        super().__init__(searcher)  # checks that it is a Searcher
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ConfigError("repeat", f"must be an integer >= 1, got {repeat!r}")
        self.repeat = repeat
        self.set_index = set_index
        # group number -> {"primary": id, "config": dict, "trials": [ids], "scores": {id: score}}
        # a group is dropped once all its trials have reported, so the state stays small
        self._groups: dict[int, dict[str, Any]] = {}
        self._current = -1
        self._trial_group: dict[str, int] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        current = self._groups.get(self._current)
        if current is None or len(current["trials"]) >= self.repeat:
            config = self.searcher.suggest(trial_id)
            if not isinstance(config, dict):
                return config
            current = {"primary": trial_id, "config": copy.deepcopy(config), "trials": []}
            current["scores"] = {}
            previous = self._groups.get(self._current)
            if previous is not None and previous.get("done"):
                del self._groups[self._current]
            self._current += 1
            self._groups[self._current] = current
        index = len(current["trials"])
        current["trials"].append(trial_id)
        self._trial_group[trial_id] = self._current
        config = copy.deepcopy(current["config"])
        if self.set_index:
            config[TRIAL_INDEX] = index
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        index = self._trial_group.pop(trial_id, None)
        if index is None:
            return
        group = self._groups[index]
        metric = self.searcher.metric
        score = None
        if result and metric in result and isinstance(result[metric], (int, float)):
            score = float(result[metric])
        group["scores"][trial_id] = score
        if len(group["scores"]) == self.repeat:
            values = [s for s in group["scores"].values() if s is not None and not math.isnan(s)]
            mean = sum(values) / len(values) if values else math.nan
            self.searcher.on_trial_complete(group["primary"], result={metric: mean}, error=error)
            if index != self._current:
                del self._groups[index]
            else:
                group["done"] = True

    def get_state(self) -> dict[str, Any]:
        return {
            "groups": {str(k): copy.deepcopy(v) for k, v in self._groups.items()},
            "current": self._current,
            "trial_group": dict(self._trial_group),
            "searcher": self.searcher.get_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._groups = {int(k): copy.deepcopy(v) for k, v in state["groups"].items()}
        self._current = int(state["current"])
        self._trial_group = {k: int(v) for k, v in state["trial_group"].items()}
        self.searcher.set_state(state["searcher"])
