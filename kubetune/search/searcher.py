"""The searcher interface (Ray's ``Searcher``) with JSON state instead of pickles.

A searcher proposes configs: ``suggest(trial_id)`` returns a config dict, ``None`` when it has
nothing to propose *right now* (e.g. a concurrency limit), or :data:`Searcher.FINISHED` when it
never will again. It learns from ``on_trial_result`` and ``on_trial_complete``. Its state is a
JSON-able dict (``get_state``/``set_state``); Python objects that cannot be JSON (functions in
the space) are re-supplied by the caller, who builds the searcher again before ``set_state``.
"""

from __future__ import annotations

from typing import Any

from kubetune.search.errors import ConfigError, check_mode

FINISHED = "FINISHED"


class Searcher:
    """Base class for search algorithms."""

    FINISHED = FINISHED

    def __init__(self, metric: str | list[str] | None = None, mode: Any = None) -> None:
        if isinstance(mode, list):
            for m in mode:
                check_mode(m)
        else:
            check_mode(mode)
        self._metric = metric
        self._mode = mode

    @property
    def metric(self) -> Any:
        return self._metric

    @property
    def mode(self) -> Any:
        return self._mode

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        """Fill in metric, mode and the param space from the tune config.

        Values already given to the searcher's constructor win. Returns False when the searcher
        cannot take the space (Ray's contract).
        """
        check_mode(mode)
        if self._metric is None and metric:
            self._metric = metric
        if self._mode is None and mode:
            self._mode = mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        raise NotImplementedError

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Called for every intermediate result."""

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Called once when a trial ends (``error=True`` if it failed)."""

    def add_evaluated_point(
        self,
        parameters: dict[str, Any],
        value: float,
        error: bool = False,
        pruned: bool = False,
        intermediate_values: list[float] | None = None,
    ) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not take evaluated points")

    def trial_tag(self, trial_id: str) -> str | None:
        """An experiment tag for the trial just suggested (Ray's ``0_a=1,b=2``), if any."""
        return None

    def total_samples(self) -> int | None:
        """How many trials this searcher will produce in all, if it knows (grid x samples)."""
        return None

    def get_state(self) -> dict[str, Any]:
        return {"metric": self._metric, "mode": self._mode}

    def set_state(self, state: dict[str, Any]) -> None:
        self._metric = state.get("metric", self._metric)
        self._mode = state.get("mode", self._mode)


def require_properties(searcher: Searcher) -> tuple[Any, Any]:
    """``metric`` and ``mode`` of a model-based searcher, or a ConfigError naming the field."""
    name = type(searcher).__name__
    if not searcher.metric:
        raise ConfigError("metric", f"{name} needs `metric` (set it here or in the tune config)")
    if searcher.mode is None:
        raise ConfigError("mode", f"{name} needs `mode` ('min' or 'max')")
    return searcher.metric, searcher.mode


class SearcherWrapper(Searcher):
    """Base of searchers that wrap another (ConcurrencyLimiter, Repeater): metric, mode and
    the search properties are the wrapped searcher's."""

    def __init__(self, searcher: Searcher) -> None:
        if not isinstance(searcher, Searcher):
            raise ConfigError("searcher", f"must be a Searcher, got {type(searcher).__name__}")
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher

    @property
    def metric(self) -> Any:
        return self.searcher.metric

    @property
    def mode(self) -> Any:
        return self.searcher.mode

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def trial_tag(self, trial_id: str) -> str | None:
        return self.searcher.trial_tag(trial_id)
