"""``NevergradSearch``: the gradient-free optimisers of Nevergrad (Ray's ``NevergradSearch``).

``pip install 'kubetune[nevergrad]'``. ``optimizer`` is a Nevergrad optimiser class or
configured optimiser (``ng.optimizers.OnePlusOne``), its registry name (``"CMA"``), or an
optimiser instance built on its own parametrization (then ``space`` must be None);
``optimizer_kwargs`` go to its constructor (``budget``, ``num_workers``). The space is the param
space (Ray domains; categorical domains become a ``Choice`` over their indices so the state
stays JSON) or a native ``ng.p.Dict`` given as ``space=``. ``points_to_evaluate`` must be
complete configs.

State: the JSON event log of :mod:`kubetune.search._model_based`. Nevergrad optimisers keep
internal state, so restoring rebuilds the optimiser with the parametrization seeded as before
and replays every ask and tell in their original order, which reproduces it exactly.
"""

from __future__ import annotations

import copy
from typing import Any

from kubetune._util import flatten_dict
from kubetune.search._model_based import ModelBasedSearcher, build_config, decode, flatten_domains
from kubetune.search.errors import ConfigError
from kubetune.search.sample import Categorical, Domain, Float, Integer


class NevergradSearch(ModelBasedSearcher):
    _library = "nevergrad"
    _extra = "nevergrad"

    def __init__(
        self,
        space: dict[str, Any] | Any = None,
        metric: str | None = None,
        mode: str | None = None,
        optimizer: Any = None,
        optimizer_kwargs: dict[str, Any] | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        seed: int | None = None,
    ) -> None:
        self._domains: dict[str, tuple[tuple[Any, ...], Domain]] = {}
        self._native = False
        self._instance: Any = None
        self._opt_kwargs = dict(optimizer_kwargs or {})
        self._cands: dict[int, Any] = {}
        super().__init__(
            space=space,
            metric=metric,
            mode=mode,
            points_to_evaluate=points_to_evaluate,
            seed=seed,
        )
        ng = self.lib
        if optimizer is None:
            optimizer = "OnePlusOne"
        if isinstance(optimizer, str):
            if optimizer not in ng.optimizers.registry:
                raise ConfigError("optimizer", f"unknown Nevergrad optimizer {optimizer!r}")
            optimizer = ng.optimizers.registry[optimizer]
        if isinstance(optimizer, ng.optimizers.base.Optimizer):
            if space is not None:
                raise ConfigError("space", "give either an optimizer instance or a space, not both")
            self._instance = copy.deepcopy(optimizer)  # pristine, for restores
            self._native = True
            self._space = optimizer.parametrization
        elif not callable(optimizer):
            raise ConfigError("optimizer", f"not a Nevergrad optimizer: {optimizer!r}")
        self._factory = optimizer

    def _convert_space(self, space: Any) -> Any:
        ng = self.lib
        if isinstance(space, ng.p.Parameter):
            self._native = True
            return space
        self._domains, self._constants = flatten_domains(
            space, "NevergradSearch", "a dict of domains or an ng.p.Dict"
        )
        return {name: d for name, (_, d) in self._domains.items()}

    def _param(self, d: Domain, name: str) -> Any:
        p = self.lib.p
        if isinstance(d, Categorical):
            return p.Choice(list(range(len(d.categories))))
        if isinstance(d, Float):
            if d.kind in ("randn", "qrandn"):
                return p.Scalar(init=d.mean).set_mutation(sigma=d.sd)
            if d.kind in ("loguniform", "qloguniform"):
                return p.Log(lower=d.lower, upper=d.upper)
            return p.Scalar(lower=d.lower, upper=d.upper)
        if isinstance(d, Integer):
            lo, hi = d._min(), d._max()
            if hi <= lo:
                return p.Choice([lo])
            if d.kind in ("lograndint", "qlograndint"):
                return p.Log(lower=lo, upper=hi).set_integer_casting()
            return p.Scalar(lower=lo, upper=hi).set_integer_casting()
        raise ConfigError(name, f"{type(d).__name__} has no Nevergrad equivalent")

    def _setup(self) -> None:
        import numpy as np

        self._cands = {}
        if self._instance is not None:
            self._opt = copy.deepcopy(self._instance)
            return
        if self._native:
            param = copy.deepcopy(self._space)
        else:
            param = self.lib.p.Dict(**{n: self._param(d, n) for n, d in self._space.items()})
        param.random_state = np.random.RandomState(self._seed % (2**32))
        self._opt = self._factory(parametrization=param, **self._opt_kwargs)

    def _internal(self, point: dict[str, Any]) -> dict[str, Any]:
        if self._native:
            return dict(point)
        flat = flatten_dict(point)
        out = {}
        for name, (_, d) in self._domains.items():
            if name not in flat:
                raise ConfigError("points_to_evaluate", f"each point needs `{name}`")
            value = flat[name]
            if isinstance(d, Categorical):
                if value not in d.categories:
                    raise ConfigError(
                        "points_to_evaluate", f"`{name}`={value!r} is not one of its choices"
                    )
                value = d.categories.index(value)
            out[name] = value
        return out

    def _ask(self, n: int, point: dict[str, Any] | None) -> dict[str, Any]:
        if point:
            self._opt.suggest(self._internal(point))
        cand = self._opt.ask()
        self._cands[n] = cand
        return {"n": n, "value": cand.value}

    def _on_mismatch(self, n: int, params: dict[str, Any]) -> None:
        self._cands[n] = self._opt.parametrization.spawn_child(new_value=params["value"])

    def _tell(self, params: dict[str, Any], loss: float | None, error: bool) -> None:
        cand = self._cands.pop(int(params["n"]), None)
        if cand is None or error or loss is None:
            return
        self._opt.tell(cand, loss)

    def _to_config(self, params: dict[str, Any]) -> dict[str, Any]:
        value = params["value"]
        if self._native:
            return dict(value) if isinstance(value, dict) else {"value": value}
        return build_config(
            self._constants,
            ((path, decode(d, value[name])) for name, (path, d) in self._domains.items()),
        )
