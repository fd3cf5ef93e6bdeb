"""Small builders of OpenAPI v3 schema fragments for the CRDs (see ``crd.py``)."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


# -- small schema builders ------------------------------------------------------------------
def obj(
    description: str,
    properties: dict[str, Schema],
    required: list[str] | None = None,
    *,
    validations: list[Schema] | None = None,
) -> Schema:
    schema: Schema = {"type": "object", "description": description, "properties": properties}
    if required:
        schema["required"] = required
    if validations:
        schema["x-kubernetes-validations"] = validations
    return schema


def string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


# JSON's exact integers: a larger value is a typo or an attack, never a count or a seed
MAX_INTEGER = 2**53


def integer(
    description: str, minimum: int | None = None, maximum: int = MAX_INTEGER, **extra: Any
) -> Schema:
    schema: Schema = {"type": "integer", "description": description, **extra}
    if minimum is not None:
        schema["minimum"] = minimum
    schema["maximum"] = maximum
    return schema


def number(description: str, minimum: float | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "number", "description": description, **extra}
    if minimum is not None:
        schema["minimum"] = minimum
    return schema


def boolean(description: str, **extra: Any) -> Schema:
    return {"type": "boolean", "description": description, **extra}


def free(description: str, type_: str | None = "object") -> Schema:
    """A value whose shape is not ours to constrain (Kubernetes types, user data)."""
    schema: Schema = {"description": description, "x-kubernetes-preserve-unknown-fields": True}
    if type_:
        schema["type"] = type_
    return schema


def array(description: str, items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "description": description, "items": items, **extra}


def _any(description: str) -> Schema:
    # Any JSON value: preserve-unknown-fields without a type is the structural way to say so.
    return {"description": description, "x-kubernetes-preserve-unknown-fields": True}


def rule(expression: str, message: str, **extra: Any) -> Schema:
    return {"rule": expression, "message": message, **extra}
