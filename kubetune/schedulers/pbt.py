"""Population based training (Ray's asynchronous ``PopulationBasedTraining``).

Every ``perturbation_interval`` of ``time_attr`` (after ``burn_in_period``) a trial's latest
score is ranked among the live trials. A trial in the top ``quantile_fraction`` remembers its
latest checkpoint as a donor checkpoint; a trial in the bottom quantile *exploits*: the verdict
is an :class:`~kubetune.schedulers.trial_scheduler.Exploit` — restart it from a random top
trial's donor checkpoint with that trial's config, *explored*:

* list/tuple (and ``tune.choice``) mutations: resample with ``resample_probability`` (or when the
  value is not in the list), else shift to a neighbouring entry;
* domain mutations: resample with ``resample_probability``, else multiply by a random entry of
  ``perturbation_factors`` (ints stay ints);
* callables: resample by calling; nested dicts recurse; ``custom_explore_fn(config)`` last.

Unlike Ray, a perturbed value is clipped back into a bounded domain (``tune.uniform(0, 1)``
never yields 1.2), so mutations stay inside the declared space. If other trials are waiting for
a slot the trial PAUSEs at a perturbation point to yield it (Ray's time sharing).

Randomness comes from ``random.Random(f"{seed}/{n}")`` with a counter ``n`` in the state, so a
restored scheduler makes the same choices.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

from kubetune._seed import fresh_seed
from kubetune.schedulers.trial_scheduler import (
    ERROR,
    TERMINATED,
    DecisionPoints,
    Exploit,
    TrialScheduler,
    result_value,
)
from kubetune.search.errors import ConfigError
from kubetune.search.sample import Categorical, Domain, Function

_FINISHED = (TERMINATED, ERROR)


def _validate_mutations(mutations: Mapping[str, Any], path: str) -> None:
    for key, value in mutations.items():
        where = f"{path}.{key}"
        if isinstance(value, Function):
            raise ConfigError(
                where, "sample_from is not supported here; use tune.uniform, tune.choice, ..."
            )
        if isinstance(value, Mapping):
            _validate_mutations(value, where)
        elif isinstance(value, (list, tuple)):
            if not value:
                raise ConfigError(where, "must not be an empty list")
        elif not isinstance(value, Domain) and not callable(value):
            raise ConfigError(
                where, f"must be a list, a dict, a tune domain or a callable, got {value!r}"
            )


def _fill(config: dict[str, Any], key: str, space: Any, rng: random.Random) -> None:
    if isinstance(space, Domain):
        config[key] = space.sample(random_state=rng)
    elif isinstance(space, Mapping):
        config[key] = {}
        for k, v in space.items():
            _fill(config[key], k, v, rng)
    elif isinstance(space, (list, tuple)):
        config[key] = rng.choice(list(space))
    elif callable(space):
        config[key] = space()


def explore(
    config: dict[str, Any],
    mutations: Mapping[str, Any],
    resample_probability: float,
    perturbation_factors: tuple[float, ...],
    rng: random.Random,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A mutated copy of ``config`` and the operation applied to each key."""
    new = copy.deepcopy(config)
    ops: dict[str, Any] = {}
    for key, space in mutations.items():
        if isinstance(space, Mapping):
            sub, sub_ops = explore(
                config.get(key, {}), space, resample_probability, perturbation_factors, rng
            )
            new[key] = sub
            ops[key] = sub_ops
            continue
        current = config.get(key)
        if isinstance(space, Categorical):
            space = space.categories
        if isinstance(space, (list, tuple)):
            values = list(space)
            if rng.random() < resample_probability or current not in values:
                new[key] = rng.choice(values)
                ops[key] = "resample"
            else:
                shift = rng.choice([-1, 1])
                old = values.index(current)
                idx = min(max(old + shift, 0), len(values) - 1)
                new[key] = values[idx]
                side = "left" if shift == -1 else "right"
                ops[key] = f"shift {side}{' (noop)' if idx == old else ''}"
        elif isinstance(space, Domain) or callable(space):
            if rng.random() < resample_probability or not isinstance(current, (int, float)):
                new[key] = space.sample(random_state=rng) if isinstance(space, Domain) else space()
                ops[key] = "resample"
            else:
                factor = rng.choice(list(perturbation_factors))
                value: Any = current * factor
                if isinstance(current, int) and not isinstance(current, bool):
                    value = int(value)
                if isinstance(space, Domain):
                    value = space.clip(value)
                new[key] = value
                ops[key] = f"* {factor}"
    return new, ops


class _TrialState:
    __slots__ = (
        "last_checkpoint",
        "last_perturbation_time",
        "last_score",
        "last_train_time",
        "orig_tag",
    )

    def __init__(self) -> None:
        self.last_score: float | None = None
        self.last_checkpoint: str | None = None
        self.last_perturbation_time: float = 0.0
        self.last_train_time: float = 0.0
        self.orig_tag: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {s: getattr(self, s) for s in self.__slots__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _TrialState:
        st = cls()
        for s in cls.__slots__:
            setattr(st, s, d.get(s, getattr(st, s)))
        return st


class PopulationBasedTraining(TrialScheduler):
    def __init__(
        self,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        perturbation_interval: float = 60.0,
        burn_in_period: float = 0.0,
        hyperparam_mutations: Mapping[str, Any] | None = None,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        perturbation_factors: tuple[float, float] = (1.2, 0.8),
        custom_explore_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        log_config: bool = True,
        require_attrs: bool = True,
        synch: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode, time_attr=time_attr)
        mutations = dict(hyperparam_mutations or {})
        _validate_mutations(mutations, "hyperparam_mutations")
        if not mutations and custom_explore_fn is None:
            raise ConfigError(
                "hyperparam_mutations",
                "PopulationBasedTraining needs `hyperparam_mutations` or `custom_explore_fn`",
            )
        if not 0 <= quantile_fraction <= 0.5:
            raise ConfigError(
                "quantile_fraction", f"must be between 0 and 0.5, got {quantile_fraction!r}"
            )
        if not 0 <= resample_probability <= 1:
            raise ConfigError(
                "resample_probability", f"must be between 0 and 1, got {resample_probability!r}"
            )
        if (
            isinstance(perturbation_interval, bool)
            or not isinstance(perturbation_interval, (int, float))
            or perturbation_interval <= 0
        ):
            raise ConfigError(
                "perturbation_interval", f"must be > 0, got {perturbation_interval!r}"
            )
        if burn_in_period < 0:
            raise ConfigError("burn_in_period", f"must be >= 0, got {burn_in_period!r}")
        if len(perturbation_factors) == 0:
            raise ConfigError("perturbation_factors", "must not be empty")
        if custom_explore_fn is not None and not callable(custom_explore_fn):
            raise ConfigError("custom_explore_fn", "must be callable")
        if synch:
            raise ConfigError("synch", "synchronous PBT is not supported yet; use synch=False")
        self._interval = perturbation_interval
        self._burn_in = burn_in_period
        self._mutations = mutations
        self._quantile_fraction = quantile_fraction
        self._resample_probability = resample_probability
        self._factors = tuple(perturbation_factors)
        self._custom_explore_fn = custom_explore_fn
        self._log_config = log_config
        self._require_attrs = require_attrs
        self._seed = seed if seed is not None else fresh_seed()
        self._draws = 0
        self._states: dict[str, _TrialState] = {}
        self._num_perturbations = 0
        self._num_checkpoints = 0
        # configs of live trials: PBT explores the donor's config
        self._donor_configs: dict[str, dict[str, Any]] = {}

    def _rng(self) -> random.Random:
        rng = random.Random(f"{self._seed}/{self._draws}")
        self._draws += 1
        return rng

    def on_trial_add(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any] | None:
        self.validate()
        self._states[trial_id] = _TrialState()
        missing = [k for k in self._mutations if k not in config]
        if not missing:
            self._donor_configs[trial_id] = copy.deepcopy(config)
            return None
        new = copy.deepcopy(config)
        rng = self._rng()
        for key in missing:
            _fill(new, key, self._mutations[key], rng)
        self._donor_configs[trial_id] = copy.deepcopy(new)
        return new

    def _quantiles(self) -> tuple[list[str], list[str]]:
        live = [
            tid
            for tid, st in self._states.items()
            if st.last_score is not None and self.context.trial_status(tid) not in _FINISHED
        ]
        live.sort(key=lambda tid: self._states[tid].last_score)  # type: ignore[arg-type,return-value]
        if len(live) <= 1:
            return [], []
        n = math.ceil(len(live) * self._quantile_fraction)
        if n > len(live) / 2:
            n = math.floor(len(live) / 2)
        if n == 0:
            return [], []
        return live[:n], live[-n:]

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> str | Exploit:
        assert self._time_attr is not None and self._metric is not None
        owner = type(self).__name__
        t = result_value(result, self._time_attr, trial_id, owner)
        value = result_value(result, self._metric, trial_id, owner)
        state = self._states.setdefault(trial_id, _TrialState())
        if t < self._burn_in:
            return self.CONTINUE
        if t - state.last_perturbation_time < self._interval:
            return self.CONTINUE
        state.last_score = self._score(value)
        state.last_train_time = t
        state.last_perturbation_time = t
        lower, upper = self._quantiles()
        decision = self.PAUSE if self.context.has_waiting_trials() else self.CONTINUE
        if trial_id in upper:
            state.last_checkpoint = self.context.latest_checkpoint(trial_id)
            self._num_checkpoints += 1
        else:
            state.last_checkpoint = None
        if trial_id in lower:
            rng = self._rng()
            donor = rng.choice(upper)
            exploit = self._exploit(trial_id, donor, result, rng)
            if exploit is not None:
                return exploit
        return decision

    def _exploit(
        self, trial_id: str, donor: str, result: dict[str, Any], rng: random.Random
    ) -> Exploit | None:
        donor_state = self._states[donor]
        if not donor_state.last_checkpoint:
            return None  # Ray: no checkpoint for the donor, skip the exploit
        base_config = self._donor_configs.get(donor)
        if base_config is None:
            return None
        new_config, ops = explore(
            base_config, self._mutations, self._resample_probability, self._factors, rng
        )
        if self._custom_explore_fn is not None:
            new_config = self._custom_explore_fn(new_config)
            if new_config is None:
                raise ConfigError("custom_explore_fn", "returned None instead of a config")
        state = self._states[trial_id]
        state.last_perturbation_time = donor_state.last_perturbation_time
        state.last_train_time = donor_state.last_train_time
        self._num_perturbations += 1
        info: dict[str, Any] = {}
        if self._log_config:
            info = {
                "target_trial_id": trial_id,
                "donor_trial_id": donor,
                "donor_time": donor_state.last_train_time,
                "target_time": result.get(self._time_attr or ""),
                "old_config": copy.deepcopy(self._donor_configs.get(trial_id)),
                "new_config": copy.deepcopy(new_config),
            }
        self._donor_configs[trial_id] = copy.deepcopy(new_config)
        return Exploit(
            donor_trial_id=donor,
            donor_checkpoint=donor_state.last_checkpoint,
            new_config=new_config,
            operations=ops,
            info=info,
        )

    def set_trial_config(self, trial_id: str, config: dict[str, Any]) -> None:
        """The trial's config changed outside the scheduler (kept for exploring it)."""
        self._donor_configs[trial_id] = copy.deepcopy(config)

    def _forget(self, trial_id: str) -> None:
        # finished trials can no longer donate (Ray ranks live trials only); keep their state
        # small: drop the config copy
        self._donor_configs.pop(trial_id, None)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None) -> None:
        self._forget(trial_id)

    def on_trial_error(self, trial_id: str) -> None:
        self._forget(trial_id)

    def on_trial_remove(self, trial_id: str) -> None:
        self._forget(trial_id)

    def choose_trial_to_resume(self, paused: list[str], more_trials_waiting: bool) -> str | None:
        # Ray: the waiting trial with the least training time runs next (a new trial has none)
        if more_trials_waiting or not paused:
            return None
        return min(
            paused, key=lambda t: self._states[t].last_train_time if t in self._states else 0
        )

    def decision_points(self, trial_id: str) -> DecisionPoints:
        state = self._states.get(trial_id)
        return DecisionPoints(
            time_attr=self._time_attr or "time_total_s",
            interval=self._interval,
            anchor=state.last_perturbation_time if state else 0.0,
            start=self._burn_in,
        )

    def referenced_checkpoints(self) -> set[tuple[str, str]]:
        return {
            (tid, st.last_checkpoint)
            for tid, st in self._states.items()
            if st.last_checkpoint and tid in self._donor_configs
        }

    def get_state(self) -> dict[str, Any]:
        return {
            **super().get_state(),
            "seed": self._seed,
            "draws": self._draws,
            "num_perturbations": self._num_perturbations,
            "num_checkpoints": self._num_checkpoints,
            "trials": {k: v.to_dict() for k, v in self._states.items()},
            "configs": copy.deepcopy(self._donor_configs),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._seed = int(state["seed"])
        self._draws = int(state["draws"])
        self._num_perturbations = int(state["num_perturbations"])
        self._num_checkpoints = int(state["num_checkpoints"])
        self._states = {k: _TrialState.from_dict(v) for k, v in state["trials"].items()}
        self._donor_configs = copy.deepcopy(state["configs"])
