"""``BayesOptSearch``: Gaussian-process Bayesian optimisation from ``bayesian-optimization``.

``pip install 'kubetune[bayesopt]'``. Continuous parameters only (``tune.uniform`` and other
float domains, taken as their bounds; Ray's rule): integer and categorical domains are rejected
with the parameter named. The first ``random_search_steps`` suggestions are random, then the
GP's acquisition maximum (``utility_kwargs``: ``kind`` ``"ucb"``/``"ei"``/``"poi"``, ``kappa``,
``xi``). ``random_state`` seeds everything (42 by default, as Ray).

State: the JSON event log of :mod:`kubetune.search._model_based`; the GP is refitted from the
observations for every suggestion with a seed derived from ``(random_state, asks so far)``, so a
restored searcher continues exactly.
"""

from __future__ import annotations

import warnings
from typing import Any

from kubetune._util import flatten_dict
from kubetune.search._model_based import (
    ModelBasedSearcher,
    build_config,
    derive_seed,
    flatten_space,
)
from kubetune.search.errors import ConfigError
from kubetune.search.sample import Float

_KINDS = ("ucb", "ei", "poi")


class BayesOptSearch(ModelBasedSearcher):
    _library = "bayes_opt"
    _extra = "bayesopt"
    _replay_asks = False  # the GP is rebuilt from the observations on every ask

    def __init__(
        self,
        space: dict[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        utility_kwargs: dict[str, Any] | None = None,
        random_state: int = 42,
        random_search_steps: int = 10,
        verbose: int = 0,
        patience: int = 5,
        skip_duplicate: bool = True,
    ) -> None:
        utility = {"kind": "ucb", "kappa": 2.576, "xi": 0.0, **(utility_kwargs or {})}
        if utility["kind"] not in _KINDS:
            raise ConfigError(
                "utility_kwargs",
                f"kind must be one of {', '.join(_KINDS)}, got {utility['kind']!r}",
            )
        if not isinstance(random_search_steps, int) or random_search_steps < 0:
            raise ConfigError("random_search_steps", "must be an integer >= 0")
        self._utility = utility
        self._random_steps = random_search_steps
        self._bounds: dict[str, tuple[float, float]] = {}
        self._paths: dict[str, tuple[Any, ...]] = {}
        super().__init__(
            space=space,
            metric=metric,
            mode=mode,
            points_to_evaluate=points_to_evaluate,
            seed=random_state,
        )

    def _convert_space(self, space: Any) -> Any:
        if not isinstance(space, dict):
            raise ConfigError("space", "BayesOptSearch takes a dict of domains or (low, high)")
        domains, constants = flatten_space(space, "BayesOptSearch")
        bounds: dict[str, tuple[float, float]] = {}
        paths: dict[str, tuple[Any, ...]] = {}
        for name, (path, domain) in domains.items():
            if not isinstance(domain, Float) or domain.kind in ("randn", "qrandn"):
                raise ConfigError(
                    name,
                    f"BayesOptSearch takes continuous bounded parameters only, not {domain.kind}",
                )
            bounds[name] = (float(domain.lower), float(domain.upper))
            paths[name] = path
        for path, value in list(constants.items()):  # native (low, high) tuples
            if isinstance(value, tuple) and len(value) == 2:
                name = "/".join(str(p) for p in path)
                bounds[name] = (float(value[0]), float(value[1]))
                paths[name] = path
                del constants[path]
        if not bounds:
            raise ConfigError("param_space", "BayesOptSearch needs at least one float domain")
        self._bounds, self._paths, self._constants = bounds, paths, constants
        return bounds

    def _setup(self) -> None:
        self._observed: list[tuple[dict[str, float], float]] = []

    def _optimizer(self, seed: int) -> Any:
        kwargs: dict[str, Any] = {"f": None, "pbounds": self._bounds, "random_state": seed}
        kwargs["verbose"] = 0
        kwargs["allow_duplicate_points"] = True
        try:
            opt = self.lib.BayesianOptimization(**kwargs)
        except TypeError:  # versions before allow_duplicate_points
            del kwargs["allow_duplicate_points"]
            opt = self.lib.BayesianOptimization(**kwargs)
        for params, target in self._observed:
            try:
                opt.register(params=params, target=target)
            except (KeyError, ValueError):  # a duplicate point
                pass
        return opt

    def _ask(self, n: int, point: dict[str, Any] | None) -> dict[str, Any]:
        opt = self._optimizer(derive_seed(self._seed, n))
        if n < self._random_steps or not self._observed:
            params = opt.space.array_to_params(opt.space.random_sample())
        else:
            util = self.lib.UtilityFunction(**self._utility)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params = opt.suggest(util)
        if point:
            flat = flatten_dict(point)
            params.update({k: float(v) for k, v in flat.items() if k in self._bounds})
        return {k: float(v) for k, v in params.items()}

    def _tell(self, params: dict[str, Any], loss: float | None, error: bool) -> None:
        if loss is not None and not error:
            self._observed.append((dict(params), -loss))  # bayes_opt maximises

    def _to_config(self, params: dict[str, Any]) -> dict[str, Any]:
        return build_config(self._constants, ((self._paths[n], v) for n, v in params.items()))
