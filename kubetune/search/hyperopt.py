"""``HyperOptSearch``: Tree-structured Parzen Estimators from HyperOpt (Ray's ``HyperOptSearch``).

``pip install 'kubetune[hyperopt]'``. The space is the param space (Ray domains, converted to
``hp.*`` expressions labelled ``a/b`` for nested keys; a ``choice`` among dicts with domains in
them is a conditional space) or a native HyperOpt space given as ``space=``. The first
``n_initial_points`` suggestions are random, then TPE. ``points_to_evaluate`` are tried first;
for a native space, give ``hp.choice`` values as indices (HyperOpt's own convention).

State: the JSON event log of :mod:`kubetune.search._model_based`. TPE keeps nothing between
calls but the trials, and each call gets a seed derived from ``(seed, asks so far)``, so a
restored searcher continues exactly.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

from kubetune.search._model_based import (
    ModelBasedSearcher,
    derive_seed,
    flatten_space,
)
from kubetune.search.errors import ConfigError
from kubetune.search.sample import Categorical, Domain, Float, Integer


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


class HyperOptSearch(ModelBasedSearcher):
    _library = "hyperopt"
    _extra = "hyperopt"
    _replay_asks = False  # TPE is rebuilt from the trials on every ask

    def __init__(
        self,
        space: dict[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        n_initial_points: int = 20,
        random_state_seed: int | None = None,
        gamma: float = 0.25,
        seed: int | None = None,
    ) -> None:
        if not isinstance(n_initial_points, int) or n_initial_points < 0:
            raise ConfigError(
                "n_initial_points", f"must be an integer >= 0, got {n_initial_points}"
            )
        self._n_initial = n_initial_points
        self._gamma = float(gamma)
        self._domains: dict[str, Domain] = {}
        self._cats: dict[str, list[Any]] = {}
        super().__init__(
            space=space,
            metric=metric,
            mode=mode,
            points_to_evaluate=points_to_evaluate,
            seed=random_state_seed if random_state_seed is not None else seed,
        )

    # ------------------------------------------------------------------ space

    def _convert_space(self, space: Any) -> Any:
        if not isinstance(space, dict):
            return space  # a native hp expression
        domains, _ = flatten_space(space, "HyperOptSearch")
        if not domains:
            return space  # native: hp expressions only (or constants)
        return self._to_hp(space, ())

    def _to_hp(self, value: Any, path: tuple[Any, ...]) -> Any:
        if isinstance(value, dict):
            return {k: self._to_hp(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, Domain):
            return self._domain(value, "/".join(str(p) for p in path))
        return value

    def _domain(self, d: Domain, label: str) -> Any:
        hp = self.lib.hp
        scope = self.lib.pyll.scope
        self._domains[label] = d
        if isinstance(d, Categorical):
            self._cats[label] = list(d.categories)
            options = [self._to_hp(c, (label, str(i))) for i, c in enumerate(d.categories)]
            return hp.choice(label, options)
        if isinstance(d, Float):
            if d.kind == "uniform":
                return hp.uniform(label, d.lower, d.upper)
            if d.kind == "quniform":
                return hp.quniform(label, d.lower, d.upper, d.q)
            if d.kind == "loguniform":
                return hp.loguniform(label, math.log(d.lower), math.log(d.upper))
            if d.kind == "qloguniform":
                return hp.qloguniform(label, math.log(d.lower), math.log(d.upper), d.q)
            if d.kind == "randn":
                return hp.normal(label, d.mean, d.sd)
            if d.kind == "qrandn":
                return hp.qnormal(label, d.mean, d.sd, d.q)
        if isinstance(d, Integer):
            if d.kind == "randint":
                return hp.randint(label, d.lower, d.upper)
            lo, hi = d._min(), d._max()
            q = d.q or 1
            if d.kind == "qrandint":
                return scope.int(hp.quniform(label, lo, hi, q))
            return scope.int(hp.qloguniform(label, math.log(lo), math.log(hi), q))
        raise ConfigError(label, f"{type(d).__name__} ({d.kind}) has no HyperOpt equivalent")

    # ------------------------------------------------------------------ library

    def _setup(self) -> None:
        h = self.lib
        self._trials = h.Trials()
        self._hp_domain = h.Domain(lambda spc: spc, self._space)
        self._algo = partial(h.tpe.suggest, n_startup_jobs=self._n_initial, gamma=self._gamma)

    def _point_vals(self, point: dict[str, Any]) -> dict[str, Any]:
        from kubetune._util import flatten_dict

        flat = flatten_dict(point) if self._domains else dict(point)
        out = {}
        for label, value in flat.items():
            if label in self._cats:
                if value not in self._cats[label]:
                    raise ConfigError(
                        "points_to_evaluate", f"`{label}`={value!r} is not one of its choices"
                    )
                value = self._cats[label].index(value)
            out[label] = value
        return out

    def _ask(self, n: int, point: dict[str, Any] | None) -> dict[str, Any]:
        tid = len(self._trials.trials)
        self._trials.refresh()
        docs = self._algo([tid], self._hp_domain, self._trials, derive_seed(self._seed, n))
        vals = {k: list(v) for k, v in docs[0]["misc"]["vals"].items()}
        if point:
            for label, value in self._point_vals(point).items():
                vals[label] = [value]
        self._insert(tid, vals)
        return {"tid": tid, "vals": vals}

    def _register(self, n: int, params: dict[str, Any]) -> None:
        self._insert(int(params["tid"]), params["vals"])

    def _insert(self, tid: int, vals: dict[str, Any]) -> None:
        h = self.lib
        idxs = {k: ([tid] if v else []) for k, v in vals.items()}
        misc = {"tid": tid, "cmd": self._hp_domain.cmd, "workdir": None, "idxs": idxs, "vals": vals}
        docs = self._trials.new_trial_docs([tid], [None], [{"status": h.STATUS_NEW}], [misc])
        docs[0]["state"] = h.JOB_STATE_RUNNING
        self._trials.insert_trial_docs(docs)
        self._trials.refresh()

    def _tell(self, params: dict[str, Any], loss: float | None, error: bool) -> None:
        h = self.lib
        for doc in self._trials._dynamic_trials:
            if doc["tid"] == params["tid"]:
                if error or loss is None:
                    doc["state"] = h.JOB_STATE_ERROR
                    doc["result"] = {"status": h.STATUS_FAIL}
                else:
                    doc["state"] = h.JOB_STATE_DONE
                    doc["result"] = {"loss": loss, "status": h.STATUS_OK}
                break
        self._trials.refresh()

    def _to_config(self, params: dict[str, Any]) -> dict[str, Any]:
        flat = {k: v[0] for k, v in params["vals"].items() if v}
        config = _plain(self.lib.space_eval(self._space, flat))
        if not isinstance(config, dict):
            raise ConfigError("space", "a HyperOpt space must evaluate to a dict")
        return config
