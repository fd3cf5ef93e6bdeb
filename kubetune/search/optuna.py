"""``OptunaSearch``: model-based search backed by Optuna (Ray's ``OptunaSearch``).

Optuna is imported only when an ``OptunaSearch`` is built (``pip install kubetune[optuna]``).

* ``sampler``: ``"tpe"`` (default), ``"cmaes"``, ``"gp"``, ``"qmc"``, ``"nsga2"``,
  ``"random"``, or an Optuna sampler object. Several metrics (``metric=[...]``,
  ``mode=[...]``) make a multi-objective study (``"nsga2"`` is the usual choice).
* The space is the param space (Ray domains; nested keys become ``a/b`` parameters; constants
  pass through) or ``space=`` given here. ``grid_search``, ``randn`` and ``sample_from`` have no
  Optuna equivalent and are rejected with the parameter named.
* ``points_to_evaluate`` are tried first (partial points get the rest sampled);
  ``evaluated_rewards`` adds them as finished trials instead.

**State is never pickled.** ``get_state`` records every trial (parameters, state, values) and
``set_state`` replays them into a fresh in-memory study with the same seed; running trials are
re-asked with their parameters fixed. For the samplers without memory of their own (TPE, GP,
random) each ``suggest`` uses a sampler seeded from ``(seed, number of trials so far)``, so a
restored searcher proposes exactly what the original would have. CMA-ES, QMC and NSGA-II keep
internal search state that Optuna stores in pickled form; that is not carried over, so after a
restore they continue from the replayed trials with a fresh, deterministically seeded sampler.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from kubetune._seed import fresh_seed
from kubetune._util import flatten_dict
from kubetune.search._model_based import build_config
from kubetune.search.errors import ConfigError, check_mode
from kubetune.search.sample import Categorical, Domain, Float, Function, Integer, is_grid_marker
from kubetune.search.searcher import Searcher

SAMPLERS = ("tpe", "cmaes", "gp", "qmc", "nsga2", "random")
_STATELESS = ("tpe", "gp", "random")
_PRIMITIVE = (type(None), bool, int, float, str)


def _derive_seed(seed: int, n: int) -> int:
    return (seed * 1_000_003 + n * 7919) % (2**32)


class OptunaSearch(Searcher):
    def __init__(
        self,
        space: dict[str, Any] | None = None,
        metric: str | list[str] | None = None,
        mode: str | list[str] | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        sampler: Any = None,
        seed: int | None = None,
        evaluated_rewards: list[Any] | None = None,
    ) -> None:
        if isinstance(metric, list) or isinstance(mode, list):
            if not isinstance(metric, list) or not isinstance(mode, list):
                raise ConfigError("mode", "with several metrics, `mode` must be a list too")
            if len(metric) != len(mode):
                raise ConfigError(
                    "mode", f"needs one entry per metric ({len(metric)}), got {len(mode)}"
                )
            for m in mode:
                check_mode(m)
        super().__init__(metric=metric, mode=mode)
        if sampler is None:
            sampler = "tpe"
        if isinstance(sampler, str):
            if sampler.lower() not in SAMPLERS:
                raise ConfigError(
                    "sampler", f"unknown Optuna sampler {sampler!r} (known: {', '.join(SAMPLERS)})"
                )
            sampler = sampler.lower()
            needs = {"gp": ("torch", "scipy"), "cmaes": ("cmaes",), "qmc": ("scipy",)}
            _require(sampler, *needs.get(sampler, ()))
        if evaluated_rewards is not None and (
            points_to_evaluate is None or len(evaluated_rewards) != len(points_to_evaluate)
        ):
            raise ConfigError(
                "evaluated_rewards", "needs one reward per entry of `points_to_evaluate`"
            )
        import optuna  # the optional dependency, only now

        self._ot = optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._sampler_spec = sampler
        self._seed = seed if seed is not None else fresh_seed()
        self._points = [dict(p) for p in points_to_evaluate or []]
        self._evaluated_rewards = evaluated_rewards
        self._space_arg = space
        self._dists: dict[str, Any] = {}
        self._cat_maps: dict[str, list[Any]] = {}  # categorical parameters stored as indices
        self._constants: dict[tuple[Any, ...], Any] = {}
        self._round: dict[str, Domain] = {}  # quantized log domains: rounded after sampling
        self._paths: dict[str, tuple[Any, ...]] = {}
        self._study: Any = None
        self._live: dict[str, Any] = {}  # trial_id -> optuna Trial
        self._records: dict[str, dict[str, Any]] = {}  # trial_id -> {params, state, values}
        self._order: list[str] = []
        self._define_by_run: Any = None
        if callable(space):  # define-by-run: space(trial) asks Optuna for each parameter
            self._define_by_run = space
        elif space is not None:
            self._set_space(space)

    # ------------------------------------------------------------------------- space

    def _set_space(self, space: dict[str, Any]) -> None:
        dists: dict[str, Any] = {}
        self._cat_maps = {}
        self._round = {}
        self._constants = {}
        self._paths = {}

        def walk(path: tuple[Any, ...], value: Any) -> None:
            name = "/".join(str(p) for p in path)
            if is_grid_marker(value):
                raise ConfigError(name, "grid_search cannot be used with OptunaSearch")
            if isinstance(value, Domain):
                dists[name] = self._convert(name, value)
                self._paths[name] = path
            elif self._is_distribution(value):
                dists[name] = value
                self._paths[name] = path
            elif isinstance(value, dict) and value:
                for k, v in value.items():
                    walk((*path, k), v)
            else:
                self._constants[path] = value

        for k, v in space.items():
            walk((k,), v)
        self._dists = dists

    def _is_distribution(self, value: Any) -> bool:
        return isinstance(value, self._ot.distributions.BaseDistribution)

    def _convert(self, name: str, domain: Domain) -> Any:
        d = self._ot.distributions
        if isinstance(domain, Function):
            raise ConfigError(name, "sample_from cannot be used with OptunaSearch")
        if isinstance(domain, Categorical):
            cats = domain.categories
            if all(isinstance(c, _PRIMITIVE) for c in cats):
                return d.CategoricalDistribution(cats)
            self._cat_maps[name] = list(cats)
            return d.CategoricalDistribution(list(range(len(cats))))
        if isinstance(domain, Float):
            if domain.kind in ("randn", "qrandn"):
                raise ConfigError(name, "OptunaSearch cannot sample a normal distribution (randn)")
            log = domain.kind in ("loguniform", "qloguniform")
            if domain.q is not None and not log:
                low = math.ceil(domain.lower / domain.q - 1e-9) * domain.q
                high = math.floor(domain.upper / domain.q + 1e-9) * domain.q
                return d.FloatDistribution(low, high, step=domain.q)
            if domain.q is not None:
                # Optuna cannot quantize a log domain: sampled log-uniformly, rounded to q here
                self._round[name] = domain
            return d.FloatDistribution(domain.lower, domain.upper, log=log)
        if isinstance(domain, Integer):
            log = domain.kind in ("lograndint", "qlograndint")
            if domain.q is None:
                return d.IntDistribution(domain.lower, domain.upper - 1, log=log)
            low, high = domain._min(), domain._max()
            if log:
                self._round[name] = domain
                return d.IntDistribution(low, high, log=True)
            return d.IntDistribution(low, high, step=domain.q)
        raise ConfigError(name, f"{type(domain).__name__} has no Optuna equivalent")

    # ------------------------------------------------------------------------- study

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        if self._metric is None and metric:
            self._metric = metric
        if self._mode is None and mode:
            check_mode(mode)
            self._mode = mode
        if self._space_arg is None and config:
            self._set_space(config)
        if self._define_by_run is not None and _has_domains(config):
            raise ConfigError(
                "param_space",
                "OptunaSearch(space=function) defines the space itself: the param space "
                "may only hold constants",
            )
        return True

    def _directions(self) -> list[Any]:
        modes = self._mode if isinstance(self._mode, list) else [self._mode]
        return ["maximize" if m == "max" else "minimize" for m in modes]

    def _make_sampler(self, seed: int) -> Any:
        spec = self._sampler_spec
        s = self._ot.samplers
        if not isinstance(spec, str):
            return spec
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if spec == "tpe":
                return s.TPESampler(seed=seed)
            if spec == "cmaes":
                _require("cmaes", "cmaes")
                return s.CmaEsSampler(seed=seed, warn_independent_sampling=False)
            if spec == "gp":
                _require("gp", "torch", "scipy")
                return s.GPSampler(seed=seed, warn_independent_sampling=False)
            if spec == "qmc":
                _require("qmc", "scipy")
                return s.QMCSampler(seed=seed, warn_independent_sampling=False)
            if spec == "nsga2":
                return s.NSGAIISampler(seed=seed)
            return s.RandomSampler(seed=seed)

    def _ensure_study(self) -> None:
        if self._study is not None:
            return
        if not self._metric:
            raise ConfigError("metric", "OptunaSearch needs `metric` (here or in the tune config)")
        if self._mode is None:
            raise ConfigError("mode", "OptunaSearch needs `mode` ('min' or 'max')")
        if not self._dists and self._define_by_run is None:
            raise ConfigError("param_space", "OptunaSearch needs a search space with domains")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._study = self._ot.create_study(
                directions=self._directions(), sampler=self._make_sampler(self._seed)
            )
        if self._evaluated_rewards is not None:
            for point, reward in zip(self._points, self._evaluated_rewards):
                self.add_evaluated_point(point, reward)
            self._points = []
            self._evaluated_rewards = None

    def _to_internal(self, point: dict[str, Any]) -> dict[str, Any]:
        flat = flatten_dict(point)
        if self._define_by_run is not None:
            return flat
        out = {}
        for name, value in flat.items():
            if name not in self._dists:
                continue
            if name in self._cat_maps:
                cats = self._cat_maps[name]
                if value not in cats:
                    raise ConfigError(
                        "points_to_evaluate", f"`{name}`={value!r} is not one of its choices"
                    )
                value = cats.index(value)
            out[name] = value
        return out

    def _to_config(self, params: dict[str, Any]) -> dict[str, Any]:
        def value_of(name: str, value: Any) -> Any:
            if name in self._cat_maps:
                return self._cat_maps[name][value]
            if name in self._round:
                return self._round[name].clip(value)
            return value

        return build_config(
            self._constants,
            (
                (self._paths.get(name, tuple(name.split("/"))), value_of(name, value))
                for name, value in params.items()
            ),
        )

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        self._ensure_study()
        n = len(self._study.trials)
        if isinstance(self._sampler_spec, str) and self._sampler_spec in _STATELESS:
            self._study.sampler = self._make_sampler(_derive_seed(self._seed, n))
        if self._points:
            self._study.enqueue_trial(self._to_internal(self._points.pop(0)))
        if self._define_by_run is not None:
            return self._suggest_by_run(trial_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self._study.ask(fixed_distributions=self._dists)
        self._live[trial_id] = trial
        self._records[trial_id] = {"params": dict(trial.params), "state": "RUNNING"}
        self._order.append(trial_id)
        return self._to_config(trial.params)

    def _run_space_fn(self) -> tuple[Any, dict[str, Any]]:
        """Ask a trial and let the user's function define its parameters (define-by-run)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self._study.ask()
            extra = self._define_by_run(trial)
        if extra is not None and not isinstance(extra, dict):
            raise ConfigError(
                "space",
                f"the define-by-run function must return None or a dict of constants, "
                f"got {type(extra).__name__}",
            )
        return trial, dict(extra or {})

    def _suggest_by_run(self, trial_id: str) -> dict[str, Any]:
        from kubetune.search._optuna_by_run import by_run_config, dists_to_json

        trial, extra = self._run_space_fn()
        self._live[trial_id] = trial
        self._records[trial_id] = {
            "params": dict(trial.params),
            "dists": dists_to_json(self._ot, trial.distributions),
            "state": "RUNNING",
        }
        self._order.append(trial_id)
        return by_run_config(trial.params, extra)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if isinstance(self._metric, list) or trial_id not in self._live:
            return
        value = result.get(str(self._metric))
        step = result.get("training_iteration")
        if isinstance(value, (int, float)) and isinstance(step, int):
            self._live[trial_id].report(float(value), step)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        trial = self._live.pop(trial_id, None)
        if trial is None:
            return
        values: list[float] | None
        metrics = self._metric if isinstance(self._metric, list) else [self._metric]
        raw = [result.get(str(m)) if result else None for m in metrics]
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in raw):
            values = None
        else:
            values = [float(v) for v in raw]  # type: ignore[arg-type]
        TS = self._ot.trial.TrialState
        state = TS.COMPLETE if values is not None else TS.FAIL if error else TS.PRUNED
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._study.tell(trial, values, state=state)
        self._records[trial_id].update(state=state.name, values=values)

    def add_evaluated_point(
        self,
        parameters: dict[str, Any],
        value: Any,
        error: bool = False,
        pruned: bool = False,
        intermediate_values: list[float] | None = None,
    ) -> None:
        self._ensure_study()
        params = self._to_internal(parameters)
        missing = sorted(set(self._dists) - set(params))
        if missing:
            raise ConfigError("parameters", f"misses `{missing[0]}` of the search space")
        values = value if isinstance(value, list) else [value]
        TS = self._ot.trial.TrialState
        state = TS.FAIL if error else TS.PRUNED if pruned else TS.COMPLETE
        self._add_frozen(params, values if state == TS.COMPLETE else None, state.name)
        key = f"__evaluated_{len(self._records)}"
        self._records[key] = {"params": params, "state": state.name, "values": values}
        self._order.append(key)

    def _add_frozen(
        self,
        params: dict[str, Any],
        values: list[float] | None,
        state: str,
        dists: dict[str, str] | None = None,
    ) -> None:
        TS = self._ot.trial.TrialState
        if dists is not None:  # define-by-run: each trial has its own distributions
            from kubetune.search._optuna_by_run import dists_from_json

            distributions = dists_from_json(self._ot, dists)
        else:
            distributions = {k: self._dists[k] for k in params}
        frozen = self._ot.trial.create_trial(
            state=TS[state], values=values, params=params, distributions=distributions
        )
        self._study.add_trial(frozen)

    # ------------------------------------------------------------------------- state

    def get_state(self) -> dict[str, Any]:
        return {
            "metric": self._metric,
            "mode": self._mode,
            "seed": self._seed,
            "sampler": self._sampler_spec if isinstance(self._sampler_spec, str) else None,
            "points": list(self._points),
            "trials": [{"trial_id": t, **self._records[t]} for t in self._order],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._metric = state["metric"]
        self._mode = state["mode"]
        self._seed = int(state["seed"])
        if state.get("sampler"):
            self._sampler_spec = state["sampler"]
        self._study = None
        self._evaluated_rewards = None
        self._points = []
        self._live = {}
        self._records = {}
        self._order = []
        self._ensure_study()
        for rec in state["trials"]:  # in the original order
            tid = rec["trial_id"]
            self._records[tid] = {k: v for k, v in rec.items() if k != "trial_id"}
            self._order.append(tid)
            if rec["state"] == "RUNNING":
                self._study.enqueue_trial(rec["params"])
                if self._define_by_run is not None:
                    self._live[tid], _ = self._run_space_fn()
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._live[tid] = self._study.ask(fixed_distributions=self._dists)
            else:
                self._add_frozen(rec["params"], rec.get("values"), rec["state"], rec.get("dists"))
        if isinstance(self._sampler_spec, str) and self._sampler_spec not in _STATELESS:
            self._study.sampler = self._make_sampler(_derive_seed(self._seed, len(state["trials"])))
        self._points = [dict(p) for p in state.get("points", [])]


def _require(sampler: str, *modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            "sampler",
            f"Optuna's {sampler!r} sampler needs {', '.join(missing)}: pip install "
            + " ".join(missing),
        )


def _has_domains(config: Any) -> bool:
    if isinstance(config, Domain) or is_grid_marker(config):
        return True
    if isinstance(config, dict):
        return any(_has_domains(v) for v in config.values())
    return False
