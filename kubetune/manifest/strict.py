"""What kubectl's strict field validation refuses, and what the schema cannot say.

The API server prunes fields a structural schema does not declare, and with strict field
validation (kubectl's default) refuses a manifest that has any: :func:`unknown_fields` finds
the same fields from the CRD's own schema, so ``kubetune validate`` agrees with ``kubectl
apply``. :func:`param_space_issues` checks what a param space's open encoding leaves to us
(one key per sampler object, sampler-looking typos in nested spaces); :func:`name_issue` the
experiment's name (a DNS-1123 label: it names folders, objects and label values);
:func:`non_finite` the numbers JSON cannot carry.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator
from typing import Any

Path_ = tuple[Any, ...]
Issue = tuple[Path_, str]

# ObjectMeta's fields: the API server validates metadata itself and refuses others
OBJECT_META = {
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
}
NAME_MAX = 63
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NAME_RULE = (
    f"a DNS-1123 label: at most {NAME_MAX} lowercase letters, digits and '-', starting and"
    " ending with a letter or digit"
)


def _suggest(key: Any, choices: Any) -> str:
    if not isinstance(key, str):
        return ""
    close = difflib.get_close_matches(key, sorted(choices), n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower().replace("_", ""): c for c in choices}
        hit = lowered.get(key.lower().replace("_", ""))
        close = [hit] if hit else []
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_fields(value: Any, schema: dict[str, Any], path: Path_ = ()) -> Iterator[Issue]:
    """Fields the schema does not declare, where the API server would prune them."""
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                yield from unknown_fields(item, items, (*path, i))
        return
    if not isinstance(value, dict):
        return
    if path == ("metadata",):
        for key in value:
            if key not in OBJECT_META:
                yield (*path, key), "unknown field" + _suggest(key, OBJECT_META)
        return
    props = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    for key, item in value.items():
        if key in props:
            yield from unknown_fields(item, props[key], (*path, key))
        elif isinstance(extra, dict):
            yield from unknown_fields(item, extra, (*path, key))
        elif not preserve and extra is not True:
            yield (*path, key), "unknown field" + _suggest(key, props)


def name_issue(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"must be a string ({NAME_RULE}), got {type(name).__name__} {name!r}"
    if len(name) > NAME_MAX or not _DNS_LABEL.match(name):
        return f"{name!r} is not {NAME_RULE}"
    return None


def non_finite(value: Any, path: Path_ = ()) -> Iterator[Issue]:
    if isinstance(value, float) and not math.isfinite(value):
        yield path, f"{value} is not a finite number (JSON and the API server have none)"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from non_finite(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from non_finite(item, (*path, i))


# sampler name -> the shape of its argument: "args" (an object of these keys) or "list"
_ARGS = {"lower", "upper", "q", "base", "mean", "sd"}
SAMPLERS: dict[str, str] = {
    **{
        s: "args"
        for s in (
            "uniform",
            "quniform",
            "loguniform",
            "qloguniform",
            "randint",
            "qrandint",
            "lograndint",
            "qlograndint",
            "randn",
            "qrandn",
        )
    },
    "choice": "list",
    "gridSearch": "list",
    "tuple": "list",
}
CONSTANT = "constant"
_SAMPLER_ALIASES = {"grid_search": "gridSearch", "grid": "gridSearch", "sample_from": ""}


def _looks_like(key: str, value: Any) -> str | None:
    """The sampler a nested space's key was probably meant to be (a typo), else None."""
    if key in _SAMPLER_ALIASES:
        return _SAMPLER_ALIASES[key] or "nothing: sample_from has no manifest form"
    close = difflib.get_close_matches(key, list(SAMPLERS), n=1, cutoff=0.75)
    if not close and key.lower() in {s.lower() for s in SAMPLERS}:
        close = [s for s in SAMPLERS if s.lower() == key.lower()]
    if not close:
        return None
    shape = SAMPLERS[close[0]]
    if shape == "args" and isinstance(value, dict) and value and set(value) <= _ARGS:
        return close[0]
    if shape == "list" and isinstance(value, list):
        return close[0]
    return None


def stop_issues(stop: Any, path: Path_) -> Iterator[Issue]:
    """runConfig.stop values: numbers or booleans (the CRD leaves them open, see spec_schema)."""
    if isinstance(stop, dict):
        for key, value in stop.items():
            if not isinstance(value, (bool, int, float)):
                yield (
                    (*path, key),
                    f"must be a number or a boolean, got {type(value).__name__} {value!r}",
                )


def param_space_issues(space: Any, path: Path_) -> Iterator[Issue]:
    """One key per sampler object, and no sampler-looking typo as a nested space's key."""
    if isinstance(space, dict):
        for key, item in space.items():
            yield from _param_node(item, (*path, key))


def _param_node(value: Any, path: Path_) -> Iterator[Issue]:
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _param_node(item, (*path, i))
        return
    if not isinstance(value, dict):
        return
    special = [k for k in value if k in SAMPLERS or k == CONSTANT]
    if special and len(value) > 1:
        keys = ", ".join(str(k) for k in value)
        yield (
            path,
            f"a sampler object has exactly one key, this one has {keys}; a dict that is a"
            " constant is written {constant: {...}}",
        )
        return
    if special:
        kind = special[0]
        if SAMPLERS.get(kind) == "list" and isinstance(value[kind], list):
            for i, item in enumerate(value[kind]):  # candidates may be param spaces
                yield from _param_node(item, (*path, kind, i))
        return
    for key, item in value.items():
        meant = _looks_like(key, item) if isinstance(key, str) else None
        if meant:
            yield (
                (*path, key),
                f"not a sampler (did you mean {meant}?); a config key that looks like one is"
                " written inside a constant: {constant: {...}}",
            )
            continue
        yield from _param_node(item, (*path, key))
