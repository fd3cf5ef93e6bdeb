"""Common machinery of the searchers that wrap an optimisation library (HyperOpt, BayesOpt, ...).

Each wrapped searcher keeps a **JSON event log** instead of pickling the library's objects:
every ``suggest`` is logged as ``["ask", trial_id, params]`` and every completion as
``["tell", trial_id, loss, error]`` (the loss is the metric, negated for ``mode="max"``, so the
libraries always minimise). ``set_state`` builds the library's optimiser afresh with the same
seed and replays the log in its order; because every call into a library is seeded from
``(seed, number of asks so far)``, a restored searcher proposes exactly what the original would
have proposed next. If a replayed ask ever came out different from the logged one (a library
that is not deterministic), the logged parameters are used: nothing already run is lost.

Subclasses implement ``_setup`` (a fresh optimiser), ``_ask`` (returns internal parameters:
a JSON-able dict), ``_tell`` and ``_to_config``; stateless libraries (the model is rebuilt from
the observations on every ask) set ``_replay_asks = False`` so that restoring does not re-run
their asks.
"""

from __future__ import annotations

import importlib
import math
import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from kubetune.search.errors import ConfigError, check_mode
from kubetune.search.sample import Categorical, Domain, Function, Integer, is_grid_marker
from kubetune.search.searcher import Searcher
from kubetune.search.variant_generator import assign_value

WAIT = "WAIT"  # from ``_ask``: no suggestion now, but the library's state changed


class MissingLibraryError(ImportError):
    """An optional library is not installed; the message says which extra installs it."""


def require(module: str, extra: str, searcher: str) -> Any:
    """Import ``module`` or raise MissingLibraryError with the pip command for ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingLibraryError(
            f"{searcher} needs the `{module}` library, which is not installed: "
            f"pip install 'kubetune[{extra}]'"
        ) from exc


def derive_seed(seed: int, n: int) -> int:
    """A seed for the n-th call into a library, from the searcher's seed."""
    return (seed * 1_000_003 + n * 7919 + 17) % (2**31 - 1)


@contextmanager
def global_seed(seed: int) -> Iterator[None]:
    """Seed Python's and NumPy's global generators for one library call, then put them back.

    Some libraries (ZOOpt, HpBandSter) draw from the global generators only; this keeps the
    user's own random streams untouched by the search.
    """
    import numpy as np

    py_state = random.getstate()
    np_state = np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def flatten_space(
    space: dict[str, Any], owner: str
) -> tuple[dict[str, tuple[tuple[Any, ...], Domain]], dict[tuple[Any, ...], Any]]:
    """``{name: (path, domain)}`` for each Ray domain (nested keys -> ``a/b``) and the constants.

    ``grid_search`` and ``sample_from`` have no equivalent in a model-based searcher and are
    rejected with the parameter named.
    """
    domains: dict[str, tuple[tuple[Any, ...], Domain]] = {}
    constants: dict[tuple[Any, ...], Any] = {}

    def walk(path: tuple[Any, ...], value: Any) -> None:
        name = "/".join(str(p) for p in path)
        if is_grid_marker(value):
            raise ConfigError(name, f"grid_search cannot be used with {owner}")
        if isinstance(value, Function):
            raise ConfigError(name, f"sample_from cannot be used with {owner}")
        if isinstance(value, Domain):
            domains[name] = (path, value)
        elif isinstance(value, dict) and value:
            for k, v in value.items():
                walk((*path, k), v)
        else:
            constants[path] = value

    for k, v in space.items():
        walk((k,), v)
    return domains, constants


def flatten_domains(
    space: Any, owner: str, takes: str = "a dict of domains"
) -> tuple[dict[str, tuple[tuple[Any, ...], Domain]], dict[tuple[Any, ...], Any]]:
    """:func:`flatten_space` of a searcher's dict space, which must hold at least one domain
    (``takes`` says in the error what else ``owner`` would take)."""
    if not isinstance(space, dict):
        raise ConfigError("space", f"{owner} takes {takes}")
    domains, constants = flatten_space(space, owner)
    if not domains:
        raise ConfigError("param_space", f"{owner} needs at least one domain")
    return domains, constants


def assign_path(config: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node = config
    for k in path[:-1]:
        node = node.setdefault(k, {})
    assign_value(node, (path[-1],), value)


def decode(domain: Domain, raw: Any, clip: bool = True) -> Any:
    """A library's value for ``domain`` as the config holds it: an index picks the category,
    an integer domain gets an int; with ``clip``, bounded numbers are put back inside."""
    if isinstance(domain, Categorical):
        return domain.categories[int(raw)]
    if isinstance(domain, Integer):
        value = int(round(raw))  # noqa: RUF046 (a NumPy float rounds to a NumPy float)
        return int(domain.clip(value)) if clip else value
    if clip and domain.kind not in ("randn", "qrandn"):  # normals have no bounds
        return domain.clip(float(raw))
    return raw


def build_config(
    constants: dict[tuple[Any, ...], Any], values: Iterable[tuple[tuple[Any, ...], Any]]
) -> dict[str, Any]:
    """The trial's config: the space's constants, then each (path, value) in its place."""
    config: dict[str, Any] = {}
    for path, const in constants.items():
        assign_path(config, path, const)
    for path, value in values:
        assign_path(config, path, value)
    return config


def jsonable(value: Any) -> Any:
    """NumPy scalars and arrays as plain Python values (for the JSON state)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


class ModelBasedSearcher(Searcher):
    """Base class; see the module docstring."""

    _library = ""  # the module imported (for the error message)
    _extra = ""  # the kubetune extra that installs it
    _replay_asks = True

    def __init__(
        self,
        space: Any = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.lib = require(self._library, self._extra, type(self).__name__)
        if points_to_evaluate is not None and not isinstance(points_to_evaluate, list):
            raise ConfigError("points_to_evaluate", "must be a list of config dicts")
        self._seed = int(seed) if seed is not None else random.SystemRandom().randrange(2**31)
        self._points = [dict(p) for p in points_to_evaluate or []]
        self._space_arg = space
        self._space: Any = None
        self._ready = False
        self._events: list[list[Any]] = []
        self._params: dict[str, dict[str, Any]] = {}  # trial_id -> internal params (live)
        self._asks = 0
        # the constants of the param space (path -> value), set by ``_convert_space``
        self._constants: dict[tuple[Any, ...], Any] = {}
        if space is not None:
            self._space = self._convert_space(space)

    # -------------------------------------------------------------- for subclasses

    def _convert_space(self, space: Any) -> Any:
        raise NotImplementedError

    def _setup(self) -> None:
        """Build a fresh optimiser for ``self._space`` seeded from ``self._seed``."""
        raise NotImplementedError

    def _ask(self, n: int, point: dict[str, Any] | None) -> Any:
        """Internal parameters for the n-th ask; ``point`` is a (partial) config to try.

        May also return None (nothing to suggest now, no state changed: not logged), WAIT
        (nothing now, but the library's state changed: logged and replayed) or FINISHED.
        """
        raise NotImplementedError

    def _register(self, n: int, params: dict[str, Any]) -> None:
        """Replay of a logged ask that is not re-run (``_replay_asks = False``)."""

    def _tell(self, params: dict[str, Any], loss: float | None, error: bool) -> None:
        raise NotImplementedError

    def _to_config(self, params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _result(self, params: dict[str, Any], budget: float, loss: float) -> None:
        """An intermediate result at ``budget`` (logged by ``_log_result``; BOHB uses it)."""

    def _log_result(self, trial_id: str, budget: float, loss: float) -> None:
        params = self._params.get(trial_id)
        if params is None:
            return
        self._result(params, budget, loss)
        self._events.append(["result", trial_id, budget, loss])

    # -------------------------------------------------------------- Searcher

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        if self._metric is None and metric:
            self._metric = metric
        if self._mode is None and mode:
            check_mode(mode)
            self._mode = mode
        if self._space is None and config:
            self._space = self._convert_space(config)
        return True

    def _ensure(self) -> None:
        if self._ready:
            return
        name = type(self).__name__
        if not self._metric:
            raise ConfigError("metric", f"{name} needs `metric` (here or in the tune config)")
        if self._mode is None:
            raise ConfigError("mode", f"{name} needs `mode` ('min' or 'max')")
        if self._space is None:
            raise ConfigError("param_space", f"{name} needs a search space with domains")
        self._setup()
        self._ready = True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        self._ensure()
        point = self._points[0] if self._points else None
        params = self._ask(self._asks, point)
        if params is None:  # nothing right now, nothing changed
            return None
        self._asks += 1
        if isinstance(params, str):  # WAIT (nothing now, the library moved on) or FINISHED
            self._events.append(["ask", None, params])
            return None if params == WAIT else Searcher.FINISHED
        if point is not None:
            self._points.pop(0)
        params = jsonable(params)
        self._params[trial_id] = params
        self._events.append(["ask", trial_id, params, jsonable(point)])
        return self._to_config(params)

    def _loss(self, result: dict[str, Any] | None) -> float | None:
        if not result:
            return None
        value = result.get(str(self._metric))
        if value is None and "/" in str(self._metric):
            from kubetune._util import unflattened_lookup

            try:
                value = unflattened_lookup(str(self._metric), result)
            except KeyError:
                value = None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if math.isnan(value):
            return None
        return -float(value) if self._mode == "max" else float(value)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        params = self._params.pop(trial_id, None)
        if params is None:
            return
        loss = self._loss(result)
        self._tell(params, loss, error or loss is None)
        self._events.append(["tell", trial_id, loss, bool(error or loss is None)])

    # -------------------------------------------------------------- state

    def get_state(self) -> dict[str, Any]:
        return {
            "metric": self._metric,
            "mode": self._mode,
            "seed": self._seed,
            "points": jsonable(self._points),
            "events": [list(e) for e in self._events],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._metric = state["metric"]
        self._mode = state["mode"]
        self._seed = int(state["seed"])
        self._ready = False
        self._events = []
        self._params = {}
        self._asks = 0
        self._points = []
        self._ensure()
        asked: dict[str, dict[str, Any]] = {}
        for event in state["events"]:
            if event[0] == "ask":
                tid, params, point = event[1], event[2], event[3] if len(event) > 3 else None
                if isinstance(params, str):
                    if self._replay_asks:
                        self._ask(self._asks, None)
                    self._asks += 1
                    self._events.append(list(event))
                    continue
                if self._replay_asks:
                    again = jsonable(self._ask(self._asks, point))
                    if again != params:  # not deterministic: keep what was run
                        self._on_mismatch(self._asks, params)
                else:
                    self._register(self._asks, params)
                self._asks += 1
                asked[tid] = params
                self._params[tid] = params
            elif event[0] == "result":
                _, tid, budget, loss = event
                self._result(asked[tid], budget, loss)
            else:
                _, tid, loss, error = event
                self._params.pop(tid, None)
                self._tell(asked[tid], loss, bool(error))
            self._events.append(list(event))
        self._points = [dict(p) for p in state.get("points", [])]

    def _on_mismatch(self, n: int, params: dict[str, Any]) -> None:
        """A replayed ask came out different from the logged ``params``: make the library's
        pending ask be the logged one (default: nothing to do)."""
