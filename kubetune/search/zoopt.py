"""``ZOOptSearch``: ZOOpt's sequential RACOS for parallel trials (Ray's ``ZOOptSearch``).

``pip install 'kubetune[zoopt]'``. ``budget`` (the number of trials) is required. The space is
the param space (float domains are continuous, integer domains discrete, ``choice`` a grid over
its indices so the state stays JSON) or a native ``dim_dict`` of ZOOpt dimension tuples
(``(ValueType.CONTINUOUS, [low, high], precision)``...). ``parallel_num`` is how many trials the
algorithm keeps running at once; while it waits for its initial samples it suggests nothing.

ZOOpt draws from Python's and NumPy's *global* generators. Every call into it runs under a seed
derived from ``(seed, calls so far)`` and the global generators are put back afterwards, so the
user's own random streams are untouched and a restore (the JSON event log of
:mod:`kubetune.search._model_based`, replayed) reproduces the search exactly.
"""

from __future__ import annotations

from typing import Any

from kubetune._util import flatten_dict
from kubetune.search._model_based import (
    WAIT,
    ModelBasedSearcher,
    build_config,
    decode,
    derive_seed,
    flatten_space,
    global_seed,
)
from kubetune.search.errors import ConfigError
from kubetune.search.sample import Categorical, Domain, Float, Integer
from kubetune.search.searcher import FINISHED


class ZOOptSearch(ModelBasedSearcher):
    _library = "zoopt"
    _extra = "zoopt"

    def __init__(
        self,
        algo: str = "asracos",
        budget: int | None = None,
        dim_dict: dict[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        parallel_num: int = 1,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if str(algo).lower() not in ("asracos", "sracos"):
            raise ConfigError("algo", f"ZOOptSearch supports 'asracos' and 'sracos', not {algo!r}")
        if not isinstance(budget, int) or budget < 1:
            raise ConfigError("budget", "ZOOptSearch needs `budget`, the number of trials (>= 1)")
        if not isinstance(parallel_num, int) or parallel_num < 1:
            raise ConfigError("parallel_num", "must be an integer >= 1")
        self._budget = budget
        self._parallel = parallel_num
        self._kwargs = kwargs
        self._keys: list[str] = []
        self._domains: dict[str, Domain] = {}
        self._paths: dict[str, tuple[Any, ...]] = {}
        self._tells = 0
        super().__init__(
            space=dim_dict,
            metric=metric,
            mode=mode,
            points_to_evaluate=points_to_evaluate,
            seed=seed,
        )
        self._init, self._points = self._points, []  # given to ZOOpt as its initial samples

    def _convert_space(self, space: Any) -> Any:
        if not isinstance(space, dict):
            raise ConfigError("dim_dict", "must be a dict of ZOOpt dimensions or domains")
        vt = self.lib.ValueType
        domains, constants = flatten_space(space, "ZOOptSearch")
        dims: dict[str, Any] = {}
        paths: dict[str, tuple[Any, ...]] = {}
        for path, value in list(constants.items()):  # native dimension tuples
            if isinstance(value, tuple) and value and isinstance(value[0], vt):
                name = "/".join(str(p) for p in path)
                dims[name] = value
                paths[name] = path
                del constants[path]
        for name, (path, d) in domains.items():
            paths[name] = path
            if isinstance(d, Categorical):
                dims[name] = (vt.GRID, list(range(len(d.categories))))
            elif isinstance(d, Float) and d.kind not in ("randn", "qrandn"):
                dims[name] = (vt.CONTINUOUS, [d.lower, d.upper], 1e-10)
            elif isinstance(d, Integer):
                dims[name] = (vt.DISCRETE, [d._min(), d._max()], True)
            else:
                raise ConfigError(name, f"ZOOptSearch cannot sample {d.kind}")
            self._domains[name] = d
        if not dims:
            raise ConfigError("param_space", "ZOOptSearch needs at least one domain")
        self._keys = list(dims)
        self._paths, self._constants = paths, constants
        return dims

    def _setup(self) -> None:
        z = self.lib
        from zoopt.algos.opt_algorithms.racos.sracos import SRacosTune

        self._tells = 0
        init = [self._x(p) for p in self._init] if self._init else None
        with global_seed(derive_seed(self._seed, 0)):
            dim = z.Dimension2([self._space[k] for k in self._keys])
            par = z.Parameter(budget=self._budget, init_samples=init)
            self._opt = SRacosTune(
                dimension=dim, parameter=par, parallel_num=self._parallel, **self._kwargs
            )
        self._live: dict[int, Any] = {}

    def _x(self, point: dict[str, Any]) -> list[Any]:
        flat = flatten_dict(point)
        x = []
        for k in self._keys:
            if k not in flat:
                raise ConfigError("points_to_evaluate", f"each point needs `{k}`")
            v = flat[k]
            d = self._domains.get(k)
            if isinstance(d, Categorical):
                v = d.categories.index(v)
            x.append(v)
        return x

    def _ask(self, n: int, point: dict[str, Any] | None) -> Any:
        opt = self._opt
        init_done = opt.complete_num >= opt._parameter.get_train_size()
        if opt.semaphore == 0:
            if not init_done:
                return None  # waiting for the initial samples: nothing changes
            # ZOOpt misses this when the last initial sample finished before it started
            # waiting for them (sequential trials): resume sampling
            opt.semaphore = 1
        with global_seed(derive_seed(self._seed, n + 1)):
            sol = opt.suggest()
            if sol is None and opt.complete_num >= opt._parameter.get_train_size():
                opt.semaphore = 1
                sol = opt.suggest()
        if sol is None:
            return WAIT
        if isinstance(sol, str):
            return FINISHED
        self._live[n] = sol
        return {"n": n, "x": list(sol.get_x())}

    def _on_mismatch(self, n: int, params: dict[str, Any]) -> None:
        self._live[n] = self.lib.Solution(x=list(params["x"]))

    def _tell(self, params: dict[str, Any], loss: float | None, error: bool) -> None:
        sol = self._live.pop(int(params["n"]), None)
        if sol is None:
            return
        self._tells += 1
        value = loss if loss is not None and not error else float("inf")
        with global_seed(derive_seed(self._seed, 10_000_019 + self._tells)):
            self._opt.complete(sol, value)

    def _to_config(self, params: dict[str, Any]) -> dict[str, Any]:
        return build_config(
            self._constants,
            (
                (
                    self._paths[k],
                    v if k not in self._domains else decode(self._domains[k], v, False),
                )
                for k, v in zip(self._keys, params["x"])
            ),
        )
