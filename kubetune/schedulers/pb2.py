"""``PB2``: Population Based Bandits (Ray's ``PB2``; Parker-Holder et al., 2020).

PBT (:mod:`kubetune.schedulers.pbt`) in which a bottom-quantile trial still copies a top trial's
checkpoint, but its new hyperparameters are *chosen* instead of perturbed: a Gaussian process
models how fast the metric improved per unit of ``time_attr`` as a function of (time,
hyperparameters), from every trial's progress between perturbation points, and the new config
maximises an upper confidence bound on that improvement at the current time. Configs that other
live trials are running count as observations at their predicted mean, so a batch of exploits
spreads out instead of piling up on one point.

``hyperparam_bounds`` is ``{key: [low, high]}`` (continuous, top-level keys). The GP is
scikit-learn's ``GaussianProcessRegressor`` (Matern 5/2 kernel plus white noise) rather than
Ray's GPy time-varying kernel: ``pip install 'kubetune[pb2]'``. The UCB's candidates are drawn
from a generator seeded from the scheduler's seed and counter, so a restored PB2 chooses the
same; all its data is in the JSON state.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Mapping
from typing import Any

from kubetune.schedulers.pbt import PopulationBasedTraining
from kubetune.schedulers.trial_scheduler import ERROR, TERMINATED, Exploit, result_value
from kubetune.search.errors import ConfigError

_MAX_DATA = 500  # newest observations the GP is fitted on
_CANDIDATES = 1000


class PB2(PopulationBasedTraining):
    def __init__(
        self,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        perturbation_interval: float = 60.0,
        hyperparam_bounds: Mapping[str, Any] | None = None,
        quantile_fraction: float = 0.25,
        log_config: bool = True,
        require_attrs: bool = True,
        synch: bool = False,
        custom_explore_fn: Any = None,
        seed: int | None = None,
    ) -> None:
        bounds = dict(hyperparam_bounds or {})
        if not bounds:
            raise ConfigError("hyperparam_bounds", "PB2 needs `hyperparam_bounds`")
        for key, b in bounds.items():
            if (
                not isinstance(b, (list, tuple))
                or len(b) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
                or not b[0] < b[1]
            ):
                raise ConfigError(
                    f"hyperparam_bounds.{key}", f"must be [low, high] with low < high, got {b!r}"
                )
        try:
            import sklearn.gaussian_process  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "PB2 needs scikit-learn, which is not installed: pip install 'kubetune[pb2]'"
            ) from exc
        self._bounds = {k: (float(v[0]), float(v[1])) for k, v in bounds.items()}
        self._user_explore = custom_explore_fn
        super().__init__(
            time_attr=time_attr,
            metric=metric,
            mode=mode,
            perturbation_interval=perturbation_interval,
            hyperparam_mutations={},
            quantile_fraction=quantile_fraction,
            resample_probability=0.0,
            custom_explore_fn=self._select,
            log_config=log_config,
            require_attrs=require_attrs,
            synch=synch,
            seed=seed,
        )
        self._data: list[list[float]] = []  # [t, *hyperparams, improvement per unit time]
        self._last: dict[str, list[float]] = {}  # trial -> [time, score] at its last point
        self._now = 0.0
        self._target: str | None = None

    # ----------------------------------------------------------------- PBT hooks

    def on_trial_add(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any] | None:
        changed = super().on_trial_add(trial_id, config)
        base = changed if changed is not None else config
        missing = [k for k in self._bounds if k not in base]
        if not missing:
            return changed
        new = dict(base)
        rng = self._rng()
        for k in missing:
            lo, hi = self._bounds[k]
            new[k] = rng.uniform(lo, hi)
        self._donor_configs[trial_id] = dict(new)
        return new

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> str | Exploit:
        assert self._time_attr is not None and self._metric is not None
        owner = type(self).__name__
        t = float(result_value(result, self._time_attr, trial_id, owner))
        score = self._score(result_value(result, self._metric, trial_id, owner))
        state = self._states.get(trial_id)
        at_point = (
            t >= self._burn_in
            and state is not None
            and t - state.last_perturbation_time >= self._interval
        )
        if at_point:
            self._observe(trial_id, t, score)
        self._now, self._target = t, trial_id
        decision = super().on_trial_result(trial_id, result)
        if isinstance(decision, Exploit):
            donor = self._states[decision.donor_trial_id]
            donor_score = donor.last_score if donor.last_score is not None else score
            self._last[trial_id] = [donor.last_train_time, donor_score]
        return decision

    def _observe(self, trial_id: str, t: float, score: float) -> None:
        config = self._donor_configs.get(trial_id)
        prev = self._last.get(trial_id)
        self._last[trial_id] = [t, score]
        if config is None or prev is None or t <= prev[0]:
            return
        x = [float(config.get(k, self._bounds[k][0])) for k in self._bounds]
        self._data.append([t, *x, (score - prev[1]) / (t - prev[0])])
        del self._data[:-_MAX_DATA]

    # ----------------------------------------------------------------- the bandit

    def _unit(self, x: list[float]) -> list[float]:
        return [(v - lo) / (hi - lo) for v, (lo, hi) in zip(x, self._bounds.values(), strict=False)]

    def _select(self, config: dict[str, Any]) -> dict[str, Any]:
        """The new config for an exploiting trial: the donor's, with the bounded keys chosen
        by GP-UCB (random within the bounds while there are too few observations)."""
        import numpy as np

        rng = random.Random(f"{self._seed}/pb2/{self._draws}")
        self._draws += 1
        np_rng = np.random.RandomState(rng.randrange(2**32))
        new = dict(config)
        keys = list(self._bounds)
        if len(self._data) < 2:
            for k in keys:
                lo, hi = self._bounds[k]
                new[k] = rng.uniform(lo, hi)
        else:
            best = self._ucb(np_rng, rng)
            for k, u in zip(keys, best, strict=False):
                lo, hi = self._bounds[k]
                new[k] = float(min(max(lo + u * (hi - lo), lo), hi))
        if self._user_explore is not None:
            new = self._user_explore(new)
        return new

    def _ucb(self, np_rng: Any, rng: random.Random) -> list[float]:
        import numpy as np
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        data = np.asarray(self._data, dtype=float)
        t_max = max(float(data[:, 0].max()), self._now, 1e-12)
        X = np.column_stack([data[:, 0] / t_max, [self._unit(list(r[1:-1])) for r in data]])
        y = data[:, -1]
        y = (y - y.mean()) / (y.std() or 1.0)
        kernel = ConstantKernel(1.0) * Matern(nu=2.5) + WhiteKernel(0.1)
        gp = GaussianProcessRegressor(kernel=kernel, normalize_y=False, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # kernel bounds reached on tiny data sets
            gp.fit(X, y)
        t_now = self._now / t_max
        running = []
        for tid, cfg in self._donor_configs.items():
            if tid == self._target or self.context.trial_status(tid) in (TERMINATED, ERROR):
                continue
            running.append([t_now, *self._unit([float(cfg.get(k, 0.0)) for k in self._bounds])])
        if running:  # pending points at their predicted mean (kriging believer)
            R = np.asarray(running, dtype=float)
            X2, y2 = np.vstack([X, R]), np.concatenate([y, gp.predict(R)])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gp = GaussianProcessRegressor(kernel=gp.kernel_, optimizer=None).fit(X2, y2)
        cands = np_rng.uniform(size=(_CANDIDATES, len(self._bounds)))
        grid = np.column_stack([np.full(len(cands), t_now), cands])
        mu, sd = gp.predict(grid, return_std=True)
        kappa = math.sqrt(max(0.2 * len(self._bounds) * math.log(2 * len(X) + 1), 0.1))
        return [float(v) for v in cands[int(np.argmax(mu + kappa * sd))]]

    # ----------------------------------------------------------------- state

    def get_state(self) -> dict[str, Any]:
        return {
            **super().get_state(),
            "pb2_data": [list(r) for r in self._data],
            "pb2_last": {k: list(v) for k, v in self._last.items()},
            "pb2_now": self._now,
            "pb2_target": self._target,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._data = [list(map(float, r)) for r in state.get("pb2_data", [])]
        self._last = {k: [float(v[0]), float(v[1])] for k, v in state.get("pb2_last", {}).items()}
        self._now = float(state.get("pb2_now", 0.0))
        self._target = state.get("pb2_target")
