"""``ConcurrencyLimiter``: at most ``max_concurrent`` live trials from the wrapped searcher."""

from __future__ import annotations

from typing import Any

from kubetune.search.errors import ConfigError
from kubetune.search.searcher import Searcher, SearcherWrapper


class ConcurrencyLimiter(SearcherWrapper):
    """Answers ``None`` (nothing now) while ``max_concurrent`` suggested trials are live.

    With ``batch=True`` it waits until the whole batch of ``max_concurrent`` trials has ended
    before suggesting the next batch (Ray's semantics).
    """

    def __init__(self, searcher: Searcher, max_concurrent: int, batch: bool = False) -> None:
        super().__init__(searcher)  # checks that it is a Searcher
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise ConfigError("max_concurrent", f"must be an integer, got {max_concurrent!r}")
        if max_concurrent <= 0:
            raise ConfigError("max_concurrent", f"must be > 0, got {max_concurrent}")
        self.max_concurrent = max_concurrent
        self.batch = batch
        self._live: set[str] = set()
        self._limit_reached = False

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._limit_reached or len(self._live) >= self.max_concurrent:
            return None
        config = self.searcher.suggest(trial_id)
        if isinstance(config, dict):
            self._live.add(trial_id)
            if self.batch and len(self._live) >= self.max_concurrent:
                self._limit_reached = True
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self._live:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._live:
            return
        self._live.discard(trial_id)
        self.searcher.on_trial_complete(trial_id, result=result, error=error)
        if self.batch and not self._live:
            self._limit_reached = False

    def total_samples(self) -> int | None:
        return self.searcher.total_samples()

    def get_state(self) -> dict[str, Any]:
        return {
            "live": sorted(self._live),
            "limit_reached": self._limit_reached,
            "searcher": self.searcher.get_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._live = set(state["live"])
        self._limit_reached = bool(state["limit_reached"])
        self.searcher.set_state(state["searcher"])
