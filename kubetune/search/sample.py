"""Search-space domains with Ray Tune's names and semantics (``tune.uniform`` and friends).

A domain describes where one hyperparameter's values come from. Sampling uses the standard
library's :class:`random.Random`, so the core needs no numpy and every draw is reproducible
for a seed. Bounds follow Ray:

* ``uniform``/``loguniform``: floats in ``[lower, upper)``; quantized variants make ``upper``
  inclusive (values are multiples of ``q``).
* ``randint``/``lograndint``: integers in ``[lower, upper)``; ``qrandint``/``qlograndint``: the
  multiples of ``q`` in ``[lower, upper]`` (``upper`` exclusive again when ``q == 1``).
* ``randn``/``qrandn``: normal with ``mean`` and ``sd``.
* ``choice``: uniform over the categories; ``grid_search`` returns Ray's ``{"grid_search": [...]}``.
* ``sample_from(fn)``: ``fn()`` or ``fn(spec)``; ``spec`` gives the values sampled so far both as
  ``spec["a"]`` and, Ray's older style, as ``spec.config.a``.

``loguniform``'s ``base`` does not change the distribution (a log-uniform law is the same in
every base); it is kept so that code written for older Ray versions runs and round-trips.

Bad arguments raise :class:`SearchSpaceError` (a ``ValueError``) whose ``field`` names the
offending argument, e.g. ``lower``.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from kubetune.search.errors import ConfigError

__all__ = [
    "Categorical",
    "Domain",
    "Float",
    "Function",
    "Integer",
    "SearchSpaceError",
    "choice",
    "grid_search",
    "lograndint",
    "loguniform",
    "qlograndint",
    "qloguniform",
    "qrandint",
    "qrandn",
    "quniform",
    "randint",
    "randn",
    "sample_from",
    "uniform",
]

DEFAULT_LOG_BASE = 10


class SearchSpaceError(ConfigError):
    """A search space argument is invalid; ``field`` names it (``lower``, ``q``, ...)."""


RandomLike = random.Random | int | None


def _rng(random_state: RandomLike) -> random.Random:
    if isinstance(random_state, random.Random):
        return random_state
    return random.Random(random_state)


def _number(value: Any, field: str, sampler: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SearchSpaceError(field, f"{sampler}: must be a number, got {value!r}")
    if not math.isfinite(value):
        raise SearchSpaceError(field, f"{sampler}: must be finite, got {value!r}")
    return value


def _integer(value: Any, field: str, sampler: str) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SearchSpaceError(field, f"{sampler}: must be an integer, got {value!r}")
    return value


def _check_range(lower: float, upper: float, sampler: str) -> None:
    if lower >= upper:
        raise SearchSpaceError(
            "lower", f"{sampler}: `lower` ({lower!r}) must be less than `upper` ({upper!r})"
        )


def _check_log(lower: float, base: float, sampler: str) -> None:
    if lower <= 0:
        raise SearchSpaceError(
            "lower",
            f"{sampler}: a log domain needs `lower` > 0 (it cannot include 0 or negatives), "
            f"got {lower!r}",
        )
    if isinstance(base, bool) or not isinstance(base, (int, float)) or base <= 0 or base == 1:
        raise SearchSpaceError("base", f"{sampler}: `base` must be > 0 and != 1, got {base!r}")


def _check_q(q: Any, sampler: str, integer: bool) -> float:
    if integer:
        qv: float = _integer(q, "q", sampler)
    else:
        qv = _number(q, "q", sampler)
    if qv <= 0:
        raise SearchSpaceError("q", f"{sampler}: `q` must be > 0, got {q!r}")
    return qv


def _grid_index(bound: float, q: float, round_fn: Callable[[float], float]) -> int:
    """``bound``'s index on the grid of multiples of ``q``, rounded inwards."""
    scaled = bound / q
    nearest = round(scaled)
    if math.isclose(scaled, nearest):
        return int(nearest)
    return int(round_fn(scaled))


class Domain:
    """Base class: a source of values for one hyperparameter."""

    kind: str = "domain"  # the public constructor's name, e.g. "uniform"

    def sample(self, config: Any = None, size: int = 1, random_state: RandomLike = None) -> Any:
        rng = _rng(random_state)
        if size == 1:
            return self._sample_one(rng, config)
        return [self._sample_one(rng, config) for _ in range(size)]

    def _sample_one(self, rng: random.Random, config: Any) -> Any:
        raise NotImplementedError

    def is_grid(self) -> bool:
        return False

    def is_function(self) -> bool:
        return False

    def is_valid(self, value: Any) -> bool:
        return True

    def clip(self, value: Any) -> Any:
        """The nearest valid value (used by PBT to keep perturbed values inside the space)."""
        return value

    @property
    def domain_str(self) -> str:
        return repr(self)

    def params(self) -> dict[str, Any]:
        """The constructor arguments (used for equality, repr and the manifest form)."""
        return {}

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, Domain)
            and other.kind == self.kind
            and other.params() == self.params()
        )

    def __hash__(self) -> int:
        return hash((self.kind, repr(sorted(self.params().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"tune.{self.kind}({args})"


class Float(Domain):
    """A float range sampled uniformly, log-uniformly or normally, optionally quantized."""

    def __init__(
        self,
        lower: float | None,
        upper: float | None,
        *,
        kind: str = "uniform",
        q: float | None = None,
        base: float = DEFAULT_LOG_BASE,
        mean: float = 0.0,
        sd: float = 1.0,
    ) -> None:
        self.kind = kind
        self.q = q
        self.base = base
        self.mean = mean
        self.sd = sd
        if kind in ("randn", "qrandn"):
            self.lower = -math.inf
            self.upper = math.inf
            self.mean = _number(mean, "mean", kind)
            self.sd = _number(sd, "sd", kind)
            if self.sd <= 0:
                raise SearchSpaceError("sd", f"{kind}: `sd` must be > 0, got {sd!r}")
        else:
            self.lower = _number(lower, "lower", kind)
            self.upper = _number(upper, "upper", kind)
            _check_range(self.lower, self.upper, kind)
            if kind in ("loguniform", "qloguniform"):
                _check_log(self.lower, base, kind)
        if kind.startswith("q"):
            self.q = _check_q(q, kind, integer=False)
            if kind != "qrandn":
                for field, bound in (("lower", self.lower), ("upper", self.upper)):
                    if not math.isclose(bound / self.q, round(bound / self.q)):
                        raise SearchSpaceError(
                            field,
                            f"{kind}: `{field}` ({bound!r}) is not a multiple of `q` ({q!r})",
                        )

    def params(self) -> dict[str, Any]:
        if self.kind == "randn":
            return {"mean": self.mean, "sd": self.sd}
        if self.kind == "qrandn":
            return {"mean": self.mean, "sd": self.sd, "q": self.q}
        out: dict[str, Any] = {"lower": self.lower, "upper": self.upper}
        if self.q is not None:
            out["q"] = self.q
        if self.kind in ("loguniform", "qloguniform"):
            out["base"] = self.base
        return out

    def _raw(self, rng: random.Random, lower: float, upper: float) -> float:
        if self.kind in ("randn", "qrandn"):
            return rng.gauss(self.mean, self.sd)
        if self.kind in ("loguniform", "qloguniform"):
            return math.exp(rng.uniform(math.log(lower), math.log(upper)))
        return rng.uniform(lower, upper)

    def _sample_one(self, rng: random.Random, config: Any) -> float:
        if self.q is None:
            return float(self._raw(rng, self.lower, self.upper))
        q = self.q
        if self.kind == "qrandn":
            return float(round(self._raw(rng, 0, 0) / q) * q)
        lower = _grid_index(self.lower, q, math.ceil) * q
        upper = _grid_index(self.upper, q, math.floor) * q
        value = float(round(self._raw(rng, lower, upper) / q) * q)
        return min(max(value, self.lower), self.upper)

    def is_valid(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return bool(self.lower <= value <= self.upper)

    def clip(self, value: Any) -> Any:
        v = min(max(float(value), self.lower), self.upper)
        if self.q is not None:
            v = round(v / self.q) * self.q
            if v > self.upper:
                v -= self.q
            if v < self.lower:
                v += self.q
        return float(v)


class Integer(Domain):
    """An integer range sampled uniformly or log-uniformly, optionally quantized."""

    def __init__(
        self,
        lower: int,
        upper: int,
        *,
        kind: str = "randint",
        q: int | None = None,
        base: float = DEFAULT_LOG_BASE,
    ) -> None:
        self.kind = kind
        self.lower = _integer(lower, "lower", kind)
        self.upper = _integer(upper, "upper", kind)
        self.base = base
        self.q: int | None = None
        _check_range(self.lower, self.upper, kind)
        if kind in ("lograndint", "qlograndint"):
            _check_log(self.lower, base, kind)
        if kind.startswith("q"):
            self.q = int(_check_q(q, kind, integer=True))
            lo, hi = self._index_bounds()
            if hi < lo:
                raise SearchSpaceError(
                    "q", f"{kind}: no multiple of `q` ({q}) lies in [{lower}, {upper}]"
                )
            if kind == "qlograndint" and lo <= 0:
                raise SearchSpaceError(
                    "lower", f"{kind}: the smallest multiple of `q` must be > 0 for a log domain"
                )

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lower": self.lower, "upper": self.upper}
        if self.q is not None:
            out["q"] = self.q
        if self.kind in ("lograndint", "qlograndint"):
            out["base"] = self.base
        return out

    def _index_bounds(self) -> tuple[int, int]:
        """Inclusive index range [lo, hi] of the quantized grid (values are index * q)."""
        assert self.q is not None
        lo = _grid_index(self.lower, self.q, math.ceil)
        hi = _grid_index(self.upper, self.q, math.floor)
        if self.q == 1:
            hi -= 1  # Ray: with q == 1 the upper bound stays exclusive
        return lo, hi

    def _draw(self, rng: random.Random, lo: int, hi_exclusive: int) -> int:
        if self.kind in ("lograndint", "qlograndint"):
            v = math.floor(math.exp(rng.uniform(math.log(lo), math.log(hi_exclusive))))
            return min(max(v, lo), hi_exclusive - 1)
        return rng.randrange(lo, hi_exclusive)

    def _sample_one(self, rng: random.Random, config: Any) -> int:
        if self.q is None:
            return self._draw(rng, self.lower, self.upper)
        lo, hi = self._index_bounds()
        return self._draw(rng, lo, hi + 1) * self.q

    def _max(self) -> int:
        if self.q is None:
            return self.upper - 1
        return self._index_bounds()[1] * self.q

    def _min(self) -> int:
        if self.q is None:
            return self.lower
        return self._index_bounds()[0] * self.q

    def is_valid(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        if self.q is not None and value % self.q:
            return False
        return self._min() <= value <= self._max()

    def clip(self, value: Any) -> Any:
        v = int(value)
        if self.q is not None:
            v = round(v / self.q) * self.q
        return min(max(v, self._min()), self._max())


class Categorical(Domain):
    """A finite list of values; ``choice`` samples it, ``grid`` enumerates it."""

    def __init__(self, categories: Sequence[Any], *, grid: bool = False) -> None:
        self.kind = "grid_search" if grid else "choice"
        field = "values" if grid else "categories"
        if isinstance(categories, (str, bytes)) or not isinstance(categories, Sequence):
            raise SearchSpaceError(field, f"{self.kind}: must be a list, got {categories!r}")
        if len(categories) == 0:
            raise SearchSpaceError(field, f"{self.kind}: must not be empty")
        self.categories = list(categories)
        self._grid = grid

    def params(self) -> dict[str, Any]:
        return {"categories": self.categories}

    def uniform(self) -> Categorical:
        return Categorical(self.categories)

    def grid(self) -> Categorical:
        return Categorical(self.categories, grid=True)

    def is_grid(self) -> bool:
        return self._grid

    def _sample_one(self, rng: random.Random, config: Any) -> Any:
        return self.categories[rng.randrange(len(self.categories))]

    def is_valid(self, value: Any) -> bool:
        return value in self.categories

    def __len__(self) -> int:
        return len(self.categories)

    def __repr__(self) -> str:
        return f"tune.{self.kind}({self.categories!r})"


class _SpecView(dict[Any, Any]):
    """What a ``sample_from`` function receives: the config sampled so far.

    ``spec["a"]`` and ``spec.config.a`` / ``spec.config["a"]`` both work (Ray supports both
    styles); nested dicts are wrapped the same way.
    """

    def __getattr__(self, item: str) -> Any:
        if item == "config" and "config" not in self:
            return self
        try:
            return self[item]
        except KeyError as exc:
            raise AttributeError(item) from exc

    def __getitem__(self, key: Any) -> Any:
        if key == "config" and not dict.__contains__(self, "config"):
            return self
        value = dict.__getitem__(self, key)
        if isinstance(value, Domain) or (
            isinstance(value, dict) and len(value) == 1 and "grid_search" in value
        ):
            raise UnresolvedDependency(str(key))
        if isinstance(value, dict) and not isinstance(value, _SpecView):
            return _SpecView(value)
        return value


class UnresolvedDependency(Exception):
    """A ``sample_from`` function read a value that is not sampled yet (retried later)."""


class Function(Domain):
    """``sample_from(fn)``: a Python function, called with no argument or with the spec."""

    kind = "sample_from"

    def __init__(self, func: Callable[..., Any]) -> None:
        if not callable(func):
            raise SearchSpaceError("func", f"sample_from: must be callable, got {func!r}")
        self.func = func
        self.pass_config = True
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            return
        try:
            sig.bind({})
        except TypeError:
            self.pass_config = False
            try:
                sig.bind()
            except TypeError as exc:
                raise SearchSpaceError(
                    "func", "sample_from: the function must accept 0 or 1 arguments"
                ) from exc

    def is_function(self) -> bool:
        return True

    def params(self) -> dict[str, Any]:
        return {"func": self.func}

    def __hash__(self) -> int:
        return hash(self.func)

    def _sample_one(self, rng: random.Random, config: Any) -> Any:
        if not self.pass_config:
            return self.func()
        view = config if isinstance(config, _SpecView) else _SpecView(config or {})
        return self.func(view)


# ----------------------------------------------------------------------------- public API


def grid_search(values: Sequence[Any]) -> dict[str, list[Any]]:
    """Try every value (times ``num_samples``); returns Ray's ``{"grid_search": values}``."""
    Categorical(values, grid=True)  # validates: a list, not empty
    return {"grid_search": list(values)}


def choice(categories: Sequence[Any]) -> Categorical:
    return Categorical(categories)


def uniform(lower: float, upper: float) -> Float:
    return Float(lower, upper, kind="uniform")


def quniform(lower: float, upper: float, q: float) -> Float:
    return Float(lower, upper, kind="quniform", q=q)


def loguniform(lower: float, upper: float, base: float = DEFAULT_LOG_BASE) -> Float:
    return Float(lower, upper, kind="loguniform", base=base)


def qloguniform(lower: float, upper: float, q: float, base: float = DEFAULT_LOG_BASE) -> Float:
    return Float(lower, upper, kind="qloguniform", q=q, base=base)


def randn(mean: float = 0.0, sd: float = 1.0) -> Float:
    return Float(None, None, kind="randn", mean=mean, sd=sd)


def qrandn(mean: float, sd: float, q: float) -> Float:
    return Float(None, None, kind="qrandn", mean=mean, sd=sd, q=q)


def randint(lower: int, upper: int) -> Integer:
    return Integer(lower, upper, kind="randint")


def qrandint(lower: int, upper: int, q: int = 1) -> Integer:
    return Integer(lower, upper, kind="qrandint", q=q)


def lograndint(lower: int, upper: int, base: float = DEFAULT_LOG_BASE) -> Integer:
    return Integer(lower, upper, kind="lograndint", base=base)


def qlograndint(lower: int, upper: int, q: int, base: float = DEFAULT_LOG_BASE) -> Integer:
    return Integer(lower, upper, kind="qlograndint", q=q, base=base)


def sample_from(func: Callable[..., Any]) -> Function:
    return Function(func)


def is_grid_marker(value: Any) -> bool:
    """True for Ray's ``{"grid_search": [...]}`` marker."""
    return isinstance(value, dict) and len(value) == 1 and "grid_search" in value
