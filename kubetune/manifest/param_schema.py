"""The schema of one ``paramSpace`` entry: constants, nested spaces and sampler objects."""

from __future__ import annotations

from kubetune.manifest.schema_builders import (
    Schema,
    _any,
    array,
    integer,
    number,
    obj,
    rule,
)


# -- the param space ------------------------------------------------------------------------
def _bounds(
    name: str,
    extra: dict[str, Schema] | None = None,
    *,
    integer_: bool = False,
    log: bool = False,
    required: tuple[str, ...] = ("lower", "upper"),
) -> Schema:
    kind = integer if integer_ else number
    props: dict[str, Schema] = {
        "lower": kind("Lower bound (inclusive)."),
        "upper": kind("Upper bound (exclusive for integer samplers, as in Ray)."),
    }
    if log:
        props["base"] = number("Logarithm base (default 10).", exclusiveMinimum=True, minimum=0)
    props.update(extra or {})
    rules = [rule("self.lower < self.upper", f"{name}: lower must be less than upper")]
    if log:
        rules.append(rule("self.lower > 0", f"{name}: a log domain needs lower > 0"))
    return obj(f"Sample with tune.{name}.", props, list(required), validations=rules)


def _q(description: str = "Round samples to a multiple of q (q > 0).") -> Schema:
    return number(description, exclusiveMinimum=True, minimum=0)


def param_schema() -> Schema:
    """One entry of paramSpace: a constant, a nested space, or a sampler object.

    Sampler keys are declared so that the API server checks their arguments (and CEL checks
    lower < upper); anything else is kept as given (nested spaces). CEL needs every node above
    a rule to have a type, so each top-level entry is an object: a scalar or list constant at
    the top is written ``{constant: VALUE}`` (nested spaces hold constants as they are).
    """
    props: dict[str, Schema] = {
        "uniform": _bounds("uniform"),
        "quniform": _bounds("quniform", {"q": _q()}, required=("lower", "upper", "q")),
        "loguniform": _bounds("loguniform", log=True),
        "qloguniform": _bounds(
            "qloguniform", {"q": _q()}, log=True, required=("lower", "upper", "q")
        ),
        "randint": _bounds("randint", integer_=True),
        "qrandint": _bounds(
            "qrandint", {"q": integer("Multiple to round to.", minimum=1)}, integer_=True
        ),
        "lograndint": _bounds("lograndint", integer_=True, log=True),
        "qlograndint": _bounds(
            "qlograndint",
            {"q": integer("Multiple to round to.", minimum=1)},
            integer_=True,
            log=True,
            required=("lower", "upper", "q"),
        ),
        "randn": obj(
            "Sample from a normal distribution (tune.randn).",
            {
                "mean": number("Mean (default 0)."),
                "sd": number("Standard deviation (default 1).", exclusiveMinimum=True, minimum=0),
            },
        ),
        "qrandn": obj(
            "Sample from a normal distribution, rounded (tune.qrandn).",
            {
                "mean": number("Mean."),
                "sd": number("Standard deviation.", exclusiveMinimum=True, minimum=0),
                "q": _q(),
            },
            ["mean", "sd", "q"],
        ),
        "choice": array(
            "Pick one of these values at random (tune.choice); values may be"
            " param spaces themselves.",
            _any("A candidate value."),
            minItems=1,
        ),
        "gridSearch": array(
            "Try every one of these values (tune.grid_search), times numSamples.",
            _any("A grid value."),
            minItems=1,
        ),
        "tuple": array("A Python tuple of param spaces.", _any("An element.")),
        "constant": _any(
            "A literal value taken verbatim: use it for a constant that looks like a sampler"
            " object, e.g. {constant: {choice: [1, 2]}} is the dict {choice: [1, 2]}."
        ),
    }
    return {
        "type": "object",
        "description": (
            "A sampler object with exactly one key (uniform, quniform, loguniform, qloguniform,"
            " randint, qrandint, lograndint, qlograndint, randn, qrandn, choice, gridSearch,"
            " tuple), a nested param space (an object), or {constant: VALUE} for any other"
            " value, e.g. epochs: {constant: 10}. Inside nested spaces constants are written"
            " as they are."
        ),
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": props,
        "x-kubernetes-validations": [
            rule(
                # CEL sees only typed fields: not choice, gridSearch, tuple, constant (any
                # values); the reader (kubetune validate, the operator) checks those as well
                "["
                + ", ".join(f"has(self.{k})" for k, v in props.items() if v.get("type") == "object")
                + "].filter(x, x).size() <= 1",
                ONE_KEY,
            )
        ],
    }


ONE_KEY = (
    "a sampler object has exactly one key (uniform, choice, gridSearch, ...); a dict that is a"
    " constant is written {constant: {...}}"
)
