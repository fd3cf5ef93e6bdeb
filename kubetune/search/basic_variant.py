"""Grid search and random sampling (Ray's ``BasicVariantGenerator``).

Trials come in *batches*: first one batch per entry of ``points_to_evaluate`` (the point's
values are fixed, grid variables it leaves open are still expanded), then one batch per
remaining sample (``num_samples`` minus the number of points). A batch is every grid
combination of the space, first grid path fastest. The counts, order and experiment tags equal
Ray's (checked against Ray 2.60 in tests/unit/engine/test_variants.py).

Determinism and state: batch ``k`` draws from ``random.Random(f"{seed}/{k}")``, so the state is
three integers (seed, batch, position in batch) and a restore regenerates the current batch and
skips what was already handed out.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from kubetune.search.errors import ConfigError
from kubetune.search.searcher import Searcher
from kubetune.search.variant_generator import (
    Path,
    apply_preset,
    count_grid,
    format_vars,
    generate_variants,
)


def _new_seed() -> int:
    return random.SystemRandom().randrange(2**31)


class BasicVariantGenerator(Searcher):
    """Grid x ``num_samples`` expansion with random sampling of the other domains."""

    def __init__(
        self,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        max_concurrent: int = 0,
        constant_grid_search: bool = False,
        random_state: int | None = None,
    ) -> None:
        super().__init__()
        if max_concurrent < 0:
            raise ConfigError("max_concurrent", f"must be >= 0, got {max_concurrent}")
        if random_state is not None and (
            isinstance(random_state, bool) or not isinstance(random_state, int)
        ):
            raise ConfigError("random_state", f"must be an integer seed, got {random_state!r}")
        self._points = [dict(p) for p in points_to_evaluate or []]
        self._max_concurrent = max_concurrent
        self._constant_grid_search = constant_grid_search
        self._seed = random_state if random_state is not None else _new_seed()
        self._space: dict[str, Any] | None = None
        self._num_samples = 1
        self._batch = 0
        self._pos = 0
        self._counter = 0
        self._finished = False
        self._live: set[str] = set()
        self._iter: Iterator[tuple[dict[Path, Any], dict[str, Any]]] | None = None
        self._tags: dict[str, str] = {}

    @property
    def seed(self) -> int:
        return self._seed

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        super().set_search_properties(metric, mode, config)
        self._space = dict(config)
        num_samples = spec.get("num_samples", 1)
        if num_samples is None:
            num_samples = 1
        self._num_samples = int(num_samples)
        return True

    def _num_batches(self) -> int | None:
        if self._num_samples < 0:
            return None  # Ray: num_samples=-1 means (virtually) infinite
        return len(self._points) + max(self._num_samples - len(self._points), 0)

    def total_samples(self) -> int | None:
        if self._space is None or self._num_samples < 0:
            return None
        total = sum(count_grid(apply_preset(self._space, p)) for p in self._points)
        rest = self._num_samples - len(self._points)
        if rest > 0:
            total += rest * count_grid(self._space)
        return total

    def _batch_iter(self, batch: int) -> Iterator[tuple[dict[Path, Any], dict[str, Any]]]:
        assert self._space is not None
        rng = random.Random(f"{self._seed}/{batch}")
        space = (
            apply_preset(self._space, self._points[batch])
            if batch < len(self._points)
            else (self._space)
        )
        return generate_variants(space, rng, self._constant_grid_search)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._space is None:
            raise ConfigError(
                "param_space", "BasicVariantGenerator has no search space (set_search_properties)"
            )
        if self._finished:
            return FINISHED_
        if self._max_concurrent and len(self._live) >= self._max_concurrent:
            return None
        while True:
            if self._iter is None:
                n = self._num_batches()
                if n is not None and self._batch >= n:
                    self._finished = True
                    return FINISHED_
                self._iter = self._batch_iter(self._batch)
                for _ in range(self._pos):  # after a restore: skip what was handed out
                    next(self._iter, None)
            item = next(self._iter, None)
            if item is not None:
                break
            self._iter = None
            self._batch += 1
            self._pos = 0
        self._pos += 1
        resolved_vars, config = item
        tag = str(self._counter)
        if resolved_vars:
            tag += "_" + format_vars(resolved_vars)
        self._counter += 1
        self._tags = {trial_id: tag}
        self._live.add(trial_id)
        return config

    def trial_tag(self, trial_id: str) -> str | None:
        return self._tags.get(trial_id)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        self._live.discard(trial_id)

    def is_finished(self) -> bool:
        return self._finished

    def get_state(self) -> dict[str, Any]:
        return {
            **super().get_state(),
            "seed": self._seed,
            "batch": self._batch,
            "pos": self._pos,
            "counter": self._counter,
            "finished": self._finished,
            "live": sorted(self._live),
            "num_samples": self._num_samples,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._seed = int(state["seed"])
        self._batch = int(state["batch"])
        self._pos = int(state["pos"])
        self._counter = int(state["counter"])
        self._finished = bool(state["finished"])
        self._live = set(state.get("live", []))
        self._num_samples = int(state.get("num_samples", self._num_samples))
        self._iter = None


FINISHED_ = Searcher.FINISHED
