"""``AxSearch``: Meta's Ax (Ray's ``AxSearch``), on Ax's ``Client`` API. Not tested in this
project's CI.

``pip install 'kubetune[ax]'`` (Ax pulls BoTorch and torch, which is why it is not in the
``all`` extra). The space is the param space (``uniform``/``loguniform`` -> float range,
``randint`` -> int range, ``choice`` -> choice over the indices, so the state stays JSON).
The state is the JSON event log of :mod:`kubetune.search._model_based`: a restore builds a
client with the same ``random_seed`` and replays every ask and completion in order; if Ax ever
proposes something else on replay, the logged parameters are attached as that trial instead.
"""

from __future__ import annotations

from typing import Any

from kubetune.search._model_based import ModelBasedSearcher, build_config, decode, flatten_domains
from kubetune.search.errors import ConfigError
from kubetune.search.sample import Categorical, Domain, Float, Integer


class AxSearch(ModelBasedSearcher):
    _library = "ax"
    _extra = "ax"

    def __init__(
        self,
        space: dict[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        parameter_constraints: list[str] | None = None,
        outcome_constraints: list[str] | None = None,
        seed: int | None = None,
    ) -> None:
        self._param_constraints = list(parameter_constraints or [])
        self._outcome_constraints = list(outcome_constraints or [])
        self._domains: dict[str, tuple[tuple[Any, ...], Domain]] = {}
        self._index: dict[int, int] = {}
        super().__init__(
            space=space, metric=metric, mode=mode, points_to_evaluate=points_to_evaluate, seed=seed
        )

    def _convert_space(self, space: Any) -> Any:
        ax = self.lib
        self._domains, self._constants = flatten_domains(space, "AxSearch")
        out = []
        for name, (_, d) in self._domains.items():
            if isinstance(d, Categorical):
                values = [str(i) for i in range(len(d.categories))]
                out.append(ax.ChoiceParameterConfig(name=name, values=values, parameter_type="str"))
            elif isinstance(d, Float) and d.kind in ("uniform", "loguniform"):
                scaling = "log" if d.kind == "loguniform" else "linear"
                out.append(
                    ax.RangeParameterConfig(
                        name=name,
                        parameter_type="float",
                        bounds=(d.lower, d.upper),
                        scaling=scaling,
                    )
                )
            elif isinstance(d, Integer) and d.kind in ("randint", "lograndint"):
                scaling = "log" if d.kind == "lograndint" else "linear"
                out.append(
                    ax.RangeParameterConfig(
                        name=name,
                        parameter_type="int",
                        bounds=(d._min(), d._max()),
                        scaling=scaling,
                    )
                )
            else:
                raise ConfigError(name, f"AxSearch cannot sample {d.kind}")
        return out

    def _setup(self) -> None:
        ax = self.lib
        self._client = ax.Client(random_seed=self._seed)
        self._client.configure_experiment(
            parameters=self._space, parameter_constraints=self._param_constraints or None
        )
        sign = "-" if self._mode == "min" else ""
        self._client.configure_optimization(
            objective=f"{sign}{self._metric}",
            outcome_constraints=self._outcome_constraints or None,
        )
        self._index = {}

    def _ask(self, n: int, point: dict[str, Any] | None) -> Any:
        if point:
            from kubetune._util import flatten_dict

            params = {}
            for name, value in flatten_dict(point).items():
                if name in self._domains:
                    d = self._domains[name][1]
                    params[name] = (
                        str(d.categories.index(value)) if isinstance(d, Categorical) else value
                    )
            self._index[n] = self._client.attach_trial(parameters=params)
            return {"n": n, "params": params}
        trials = self._client.get_next_trials(max_trials=1)
        if not trials:
            return None
        index, params = next(iter(trials.items()))
        self._index[n] = index
        return {"n": n, "params": dict(params)}

    def _on_mismatch(self, n: int, params: dict[str, Any]) -> None:
        self._client.mark_trial_abandoned(self._index[n])
        self._index[n] = self._client.attach_trial(parameters=params["params"])

    def _tell(self, params: dict[str, Any], loss: float | None, error: bool) -> None:
        index = self._index.pop(int(params["n"]), None)
        if index is None:
            return
        if error or loss is None:
            self._client.mark_trial_failed(index)
            return
        value = -loss if self._mode == "max" else loss
        self._client.complete_trial(index, raw_data={str(self._metric): value})

    def _to_config(self, params: dict[str, Any]) -> dict[str, Any]:
        values = params["params"]
        return build_config(
            self._constants,
            (
                (
                    path,
                    values.get(name)
                    if values.get(name) is None
                    else decode(d, values[name], False),
                )
                for name, (path, d) in self._domains.items()
            ),
        )
