"""``TuneBOHB``: BOHB's kernel-density model from HpBandSter (Ray's ``TuneBOHB``).

``pip install 'kubetune[bohb]'``; use it with
:class:`kubetune.schedulers.HyperBandForBOHB` (HyperBand's early stopping supplies the
budgets). The space is the param space (Ray domains, converted to a ConfigSpace; ``choice``
becomes a categorical over its indices so the state stays JSON) or a native
``ConfigSpace.ConfigurationSpace`` given as ``space=``. Every result a trial reports is an
observation at the budget ``time_attr`` (``training_iteration`` by default) has reached; the
model samples at the largest budget with enough observations, as BOHB does.

State: the JSON event log of :mod:`kubetune.search._model_based`. HpBandSter draws from
NumPy's global generator and ConfigSpace's own: both are seeded from ``(seed, calls so far)``
for every call (the global generator is put back afterwards), so a restore continues exactly.
"""

from __future__ import annotations

import warnings
from typing import Any

from kubetune._util import flatten_dict
from kubetune.search._model_based import (
    ModelBasedSearcher,
    build_config,
    decode,
    derive_seed,
    flatten_domains,
    global_seed,
    require,
)
from kubetune.search.errors import ConfigError
from kubetune.search.sample import Categorical, Domain, Float, Integer


class _Job:
    """What HpBandSter's ``new_result`` reads from a finished job."""

    def __init__(self, config: dict[str, Any], budget: float, loss: float | None) -> None:
        self.kwargs = {"budget": budget, "config": config}
        self.result = None if loss is None else {"loss": loss}
        self.exception = None if loss is not None else "failed"


class TuneBOHB(ModelBasedSearcher):
    _library = "hpbandster"
    _extra = "bohb"
    _replay_asks = False  # get_config reads the models, which only results change

    def __init__(
        self,
        space: Any = None,
        bohb_config: dict[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        seed: int | None = None,
        max_concurrent: int = 0,
        time_attr: str = "training_iteration",
    ) -> None:
        self._cs_lib = require("ConfigSpace", "bohb", "TuneBOHB")
        self._bohb_config = dict(bohb_config or {})
        self._max_concurrent = int(max_concurrent or 0)
        self._time_attr = time_attr
        self._domains: dict[str, tuple[tuple[Any, ...], Domain]] = {}
        self._native = False
        super().__init__(
            space=space,
            metric=metric,
            mode=mode,
            points_to_evaluate=points_to_evaluate,
            seed=seed,
        )

    def _convert_space(self, space: Any) -> Any:
        cs = self._cs_lib
        if isinstance(space, cs.ConfigurationSpace):
            self._native = True
            return space
        self._domains, self._constants = flatten_domains(
            space, "TuneBOHB", "a dict of domains or a ConfigurationSpace"
        )
        out = cs.ConfigurationSpace()
        for name, (_, d) in self._domains.items():
            out.add(self._hyperparameter(name, d))
        return out

    def _hyperparameter(self, name: str, d: Domain) -> Any:
        cs = self._cs_lib
        if isinstance(d, Categorical):
            return cs.CategoricalHyperparameter(name, [str(i) for i in range(len(d.categories))])
        if isinstance(d, Float) and d.kind not in ("randn", "qrandn"):
            log = d.kind in ("loguniform", "qloguniform")
            return cs.UniformFloatHyperparameter(name, lower=d.lower, upper=d.upper, log=log)
        if isinstance(d, Integer):
            log = d.kind in ("lograndint", "qlograndint")
            return cs.UniformIntegerHyperparameter(name, lower=d._min(), upper=d._max(), log=log)
        raise ConfigError(name, f"TuneBOHB cannot sample {d.kind}")

    def _setup(self) -> None:
        from hpbandster.optimizers.config_generators.bohb import BOHB

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._bohber = BOHB(self._space, **self._bohb_config)
        self._n_results = 0

    def _ask(self, n: int, point: dict[str, Any] | None) -> Any:
        if self._max_concurrent and len(self._params) >= self._max_concurrent:
            return None
        seed = derive_seed(self._seed, n)
        self._space.seed(seed)
        with global_seed(seed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config, _info = self._bohber.get_config(None)
        config = dict(config)
        if point:
            config.update(self._internal(point))
        return config

    def _internal(self, point: dict[str, Any]) -> dict[str, Any]:
        flat = flatten_dict(point)
        if self._native:
            return flat
        out = {}
        for name, (_, d) in self._domains.items():
            if name not in flat:
                continue
            value = flat[name]
            if isinstance(d, Categorical):
                if value not in d.categories:
                    raise ConfigError(
                        "points_to_evaluate", f"`{name}`={value!r} is not one of its choices"
                    )
                value = str(d.categories.index(value))
            out[name] = value
        return out

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        loss = self._loss(result)
        budget = result.get(self._time_attr)
        if loss is None or not isinstance(budget, (int, float)):
            return
        self._log_result(trial_id, float(budget), loss)

    def _result(self, params: dict[str, Any], budget: float, loss: float | None) -> None:
        self._n_results += 1
        seed = derive_seed(self._seed, 20_000_003 + self._n_results)
        with global_seed(seed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._bohber.new_result(_Job(params, budget, loss))

    def _tell(self, params: dict[str, Any], loss: float | None, error: bool) -> None:
        """Every result was already an observation at its budget: nothing more to learn."""

    def _to_config(self, params: dict[str, Any]) -> dict[str, Any]:
        if self._native:
            return dict(params)
        return build_config(
            self._constants,
            (
                (path, decode(d, params[name]))
                for name, (path, d) in self._domains.items()
                if name in params
            ),
        )
