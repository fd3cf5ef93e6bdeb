"""``HEBOSearch``: Huawei's HEBO (Ray's ``HEBOSearch``). Not tested in this project's CI.

``pip install 'kubetune[hebo]'`` (HEBO pulls torch, and pins ``numpy<1.25``, which is why it
is not in the ``all`` extra). The space is the param space: ``uniform`` -> ``num``,
``loguniform`` -> ``pow``, ``randint`` -> ``int``, ``choice`` -> ``cat`` over the indices (the
state stays JSON). HEBO suggests from the observations it holds, so the state is the JSON event
log of :mod:`kubetune.search._model_based`; every suggestion runs under seeds derived from
``(random_state_seed, asks so far)`` for NumPy's and torch's global generators (put back
afterwards), so a restore continues exactly.
"""

from __future__ import annotations

from typing import Any

from kubetune.search._model_based import (
    ModelBasedSearcher,
    build_config,
    decode,
    derive_seed,
    flatten_domains,
    global_seed,
)
from kubetune.search.errors import ConfigError
from kubetune.search.sample import Categorical, Domain, Float, Integer


class HEBOSearch(ModelBasedSearcher):
    _library = "hebo"
    _extra = "hebo"
    _replay_asks = False  # suggestions come from the observations alone

    def __init__(
        self,
        space: dict[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        random_state_seed: int | None = None,
        max_concurrent: int = 8,
        **kwargs: Any,
    ) -> None:
        self._kwargs = kwargs
        self._max_concurrent = int(max_concurrent or 0)
        self._domains: dict[str, tuple[tuple[Any, ...], Domain]] = {}
        super().__init__(
            space=space,
            metric=metric,
            mode=mode,
            points_to_evaluate=points_to_evaluate,
            seed=random_state_seed,
        )

    def _convert_space(self, space: Any) -> Any:
        self._domains, self._constants = flatten_domains(space, "HEBOSearch")
        out: list[dict[str, Any]] = []
        for name, (_, d) in self._domains.items():
            if isinstance(d, Categorical):
                cats = [str(i) for i in range(len(d.categories))]
                out.append({"name": name, "type": "cat", "categories": cats})
            elif isinstance(d, Float) and d.kind == "uniform":
                out.append({"name": name, "type": "num", "lb": d.lower, "ub": d.upper})
            elif isinstance(d, Float) and d.kind == "loguniform":
                out.append({"name": name, "type": "pow", "lb": d.lower, "ub": d.upper})
            elif isinstance(d, Integer) and d.kind == "randint":
                out.append({"name": name, "type": "int", "lb": d._min(), "ub": d._max()})
            else:
                raise ConfigError(name, f"HEBOSearch cannot sample {d.kind}")
        return out

    def _setup(self) -> None:
        from hebo.design_space.design_space import DesignSpace
        from hebo.optimizers.hebo import HEBO

        with _torch_seed(derive_seed(self._seed, 0)), global_seed(derive_seed(self._seed, 0)):
            self._opt = HEBO(DesignSpace().parse(self._space), **self._kwargs)

    def _ask(self, n: int, point: dict[str, Any] | None) -> Any:
        if self._max_concurrent and len(self._params) >= self._max_concurrent:
            return None
        seed = derive_seed(self._seed, n + 1)
        with _torch_seed(seed), global_seed(seed):
            rec = self._opt.suggest(n_suggestions=1)
        params = {k: _plain(v) for k, v in rec.iloc[0].to_dict().items()}
        if point:
            from kubetune._util import flatten_dict

            for name, value in flatten_dict(point).items():
                if name in self._domains:
                    d = self._domains[name][1]
                    if isinstance(d, Categorical):
                        value = str(d.categories.index(value))
                    params[name] = value
        return params

    def _tell(self, params: dict[str, Any], loss: float | None, error: bool) -> None:
        if loss is None or error:
            return
        import numpy as np
        import pandas as pd

        self._opt.observe(pd.DataFrame([params]), np.array([[loss]]))

    def _to_config(self, params: dict[str, Any]) -> dict[str, Any]:
        return build_config(
            self._constants,
            ((path, decode(d, params[name], False)) for name, (path, d) in self._domains.items()),
        )


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


class _torch_seed:  # a context manager
    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        import torch

        self.state = torch.get_rng_state()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        import torch

        torch.set_rng_state(self.state)
