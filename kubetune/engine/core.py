"""The engine's core: its configuration, slots and checkpoint bookkeeping.

:class:`EngineCore` holds the state every part of :class:`~kubetune.engine.ExperimentEngine`
shares (the trial records, the slot counters, the searcher, scheduler and stopper) and the
small predicates on it; it is also the context the scheduler sees (``trial_status``,
``has_waiting_trials``, ...). The engine itself is assembled from this and the modules
``queries``, ``transitions``, ``state`` and ``engine`` (the events).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from kubetune._decision import DecisionPoints
from kubetune._seed import fresh_seed
from kubetune.engine.actions import Action, CheckpointRef, DeleteCheckpoint, ExperimentFinished
from kubetune.engine.checkpoints import register_checkpoint
from kubetune.engine.config import CheckpointSettings, EngineConfig
from kubetune.engine.result_check import add_experiment_metric
from kubetune.engine.trial import PENDING, TERMINATED, TrialRecord
from kubetune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler
from kubetune.search.basic_variant import BasicVariantGenerator
from kubetune.search.concurrency_limiter import ConcurrencyLimiter
from kubetune.search.errors import ConfigError
from kubetune.search.searcher import Searcher
from kubetune.stoppers import DictStopper, NoopStopper, Stopper, StopSpec, to_stopper

TrialNamer = Callable[[str, str, dict[str, Any], str], tuple[str, str | None]]


class EngineCore:
    """Shared state and predicates (see the module docstring)."""

    def __init__(
        self,
        config: EngineConfig,
        search_alg: Searcher | None = None,
        scheduler: TrialScheduler | None = None,
        stopper: StopSpec | list[StopSpec] = None,
        seed: int | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.seed = seed if seed is not None else fresh_seed()
        if search_alg is None:
            search_alg = BasicVariantGenerator(random_state=self.seed)
        if not isinstance(search_alg, Searcher):
            raise ConfigError("search_alg", f"must be a Searcher, got {type(search_alg).__name__}")
        if scheduler is None:
            scheduler = FIFOScheduler()
        if not isinstance(scheduler, TrialScheduler):
            raise ConfigError(
                "scheduler", f"must be a TrialScheduler, got {type(scheduler).__name__}"
            )
        self.searcher = search_alg
        self.scheduler = scheduler
        self.stopper: Stopper = to_stopper(stopper)
        self._has_stopper = not isinstance(self.stopper, NoopStopper)
        # dict criteria are evaluated by the trial runner itself; any other stopper (a
        # function, a Stopper, stop_all) only here, so the trial waits for the verdict after
        # every result and stops on the very one that meets it, as in Ray
        self._stopper_gates = self._has_stopper and not isinstance(self.stopper, DictStopper)

        self._grid_searcher = _is_grid_searcher(search_alg)
        if not self._grid_searcher and _has_grid(config.param_space):
            raise ConfigError(
                "param_space",
                f"grid_search is only supported by the default searcher, not by "
                f"{type(search_alg).__name__}",
            )
        self.searcher.set_search_properties(
            config.metric, config.mode, config.param_space, num_samples=config.num_samples
        )
        scheduler.set_search_properties(config.metric, config.mode)
        scheduler.set_context(self)
        scheduler.validate()
        if not self._grid_searcher and _searcher_uses_metric(search_alg):
            if not search_alg.metric:
                raise ConfigError(
                    "metric",
                    f"{type(search_alg).__name__} needs `metric` (tune config or searcher)",
                )
            if search_alg.mode is None:
                raise ConfigError("mode", f"{type(search_alg).__name__} needs `mode` ('min'/'max')")

        self._required: list[tuple[str, str]] = [
            (k, type(scheduler).__name__) for k in scheduler.required_result_keys()
        ]
        if not self._grid_searcher and _searcher_uses_metric(search_alg):
            metrics = search_alg.metric
            for m in metrics if isinstance(metrics, list) else [metrics]:
                if all(m != k for k, _ in self._required):
                    self._required.append((m, type(search_alg).__name__))
        add_experiment_metric(self._required, config.metric)

        self._prefix = config.id_prefix()
        self._max_concurrent = config.max_concurrent_trials or 0
        if (
            config.num_samples == -1
            and not self._max_concurrent
            and not isinstance(search_alg, ConcurrencyLimiter)
        ):
            raise ConfigError(
                "max_concurrent_trials",
                "num_samples=-1 (no limit) needs max_concurrent_trials (or a ConcurrencyLimiter)",
            )
        self._cap = None if (self._grid_searcher or config.num_samples < 0) else config.num_samples
        self._ckpt: CheckpointSettings = config.checkpoint
        self._score_sign = 1.0 if self._ckpt.checkpoint_score_order == "max" else -1.0

        self.trials: dict[str, TrialRecord] = {}
        self._order: list[str] = []
        self._num_active = 0
        self._num_paused = 0
        self._created = 0
        self._preemptions = 0
        self._searcher_done = False
        self._started = False
        self._stopping = False
        self._finished: ExperimentFinished | None = None
        self._start_time: float | None = None
        self._restore_pins: dict[str, list[str]] = {}  # target trial -> [donor, checkpoint]
        # trials created or resumed that have not started yet: they wait for resources (a
        # process slot, a node for their pod); derived from the records, not saved
        self._pending: set[str] = set()
        # names new trials (trial_id, tag, config, default name) -> (name, dirname or None);
        # Python code the caller re-supplies on restore, like a function stopper
        self.trial_namer: TrialNamer | None = None
        # what the backend schedules trials on ({"CPU": 8, "GPU": 0}), if it knows: for
        # schedulers that share it out (ResourceChangingScheduler); not saved
        self.resource_totals: dict[str, float] | None = None

    # ----------------------------------------------------------------- context for schedulers

    def trial_status(self, trial_id: str) -> str:
        rec = self.trials.get(trial_id)
        return rec.status if rec else TERMINATED

    def trial_resources(self, trial_id: str) -> dict[str, Any] | None:
        """The resources the trial runs with (CreateTrial's form: bundles and strategy)."""
        rec = self.trials.get(trial_id)
        return dict(rec.resources) if rec else None

    def has_waiting_trials(self) -> bool:
        """Ray's rule for PBT's time sharing: another trial is PAUSED or PENDING (created or
        resumed but not started: it waits for resources the asking trial holds), or a new one
        waits for a slot."""
        if self._num_paused or self._pending:
            return True
        return self._slots_full() and self._may_have_more()

    def more_trials_expected(self) -> bool:
        return self._may_have_more()

    def latest_checkpoint(self, trial_id: str) -> str | None:
        rec = self.trials.get(trial_id)
        return rec.latest_checkpoint if rec else None

    # ------------------------------------------------------------------------- internals

    def _get(self, trial_id: str) -> TrialRecord:
        rec = self.trials.get(trial_id)
        if rec is None:
            raise KeyError(f"unknown trial {trial_id!r}")
        return rec

    def _slots_full(self) -> bool:
        return bool(self._max_concurrent) and self._num_active >= self._max_concurrent

    def _may_have_more(self) -> bool:
        if self._searcher_done or self._stopping:
            return False
        return self._cap is None or self._created < self._cap

    def _fill_needed(self) -> bool:
        return not self._slots_full() and (self._may_have_more() or self._num_paused > 0)

    def _budget_exhausted(self, now: float) -> bool:
        budget = self.config.time_budget_s
        return (
            budget is not None
            and self._start_time is not None
            and not self._stopping
            and now - self._start_time >= budget
        )

    def _decision_points(self, trial_id: str) -> DecisionPoints:
        points = self.scheduler.decision_points(trial_id)
        if self._stopper_gates:
            points = replace(points, every_result=True, start=min(points.start, 0.0))
        return points

    def _set_status(self, rec: TrialRecord, status: str) -> None:
        rec.status = status
        if status == PENDING:
            self._pending.add(rec.trial_id)
        else:
            self._pending.discard(rec.trial_id)

    def _restore_source(self, rec: TrialRecord) -> CheckpointRef | None:
        if rec.pending_restore is not None:
            return CheckpointRef(rec.pending_restore["trial_id"], rec.pending_restore["name"])
        if rec.latest_checkpoint:
            return CheckpointRef(rec.trial_id, rec.latest_checkpoint)
        return None

    def _pin(self, target: str, ref: CheckpointRef) -> None:
        self._restore_pins[target] = [ref.trial_id, ref.checkpoint_dir_name]

    # ------------------------------------------------------------------------ checkpoints

    def _register_checkpoint(
        self, rec: TrialRecord, name: str, result: Mapping[str, Any], out: list[Action]
    ) -> None:
        if name == rec.latest_checkpoint:
            return
        rec.seq += 1
        keep = self._ckpt.num_to_keep
        pinned: set[str] = set()
        if keep is not None and len(rec.checkpoints) + 1 > keep:
            pinned = {c for t, c in self._pinned() if t == rec.trial_id}
        rec.checkpoints, deleted = register_checkpoint(
            rec.checkpoints,
            name,
            result,
            rec.seq,
            num_to_keep=keep,
            score_attribute=self._ckpt.checkpoint_score_attribute,
            score_order=self._ckpt.checkpoint_score_order,
            pinned=pinned,
        )
        rec.latest_checkpoint = name
        for cname in deleted:
            out.append(DeleteCheckpoint(rec.trial_id, cname))

    def _pinned(self) -> set[tuple[str, str]]:
        pinned = set(self.scheduler.referenced_checkpoints())
        for donor, name in self._restore_pins.values():
            pinned.add((donor, name))
        for rec in self.trials.values():
            if rec.pending_restore is not None:
                pinned.add((rec.pending_restore["trial_id"], rec.pending_restore["name"]))
        return pinned


def _unwrap(searcher: Searcher) -> Searcher:
    while hasattr(searcher, "searcher") and isinstance(searcher.searcher, Searcher):
        searcher = searcher.searcher
    return searcher


def _is_grid_searcher(searcher: Searcher) -> bool:
    return isinstance(_unwrap(searcher), BasicVariantGenerator)


def _searcher_uses_metric(searcher: Searcher) -> bool:
    return not _is_grid_searcher(searcher)


def _has_grid(space: Any) -> bool:
    from kubetune.search.variant_generator import parse_space

    return bool(parse_space(space)[1]) if isinstance(space, Mapping) else False
