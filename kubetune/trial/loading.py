"""Loading the trainable a trial spec names: a pickled object, or ``module:attribute``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from kubetune.trial.spec import TrialSpec


class TrainableLoadError(RuntimeError):
    """The trainable named in the spec cannot be imported or unpickled."""


def load_trainable(spec: TrialSpec) -> Any:
    for entry in reversed(spec.python_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if spec.trainable_pickle is not None:
        try:
            import cloudpickle

            with open(spec.trainable_pickle, "rb") as f:
                return cloudpickle.load(f)
        except Exception as exc:
            raise TrainableLoadError(
                f"cannot unpickle the trainable from {spec.trainable_pickle}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    assert spec.trainable is not None
    module_name, _, attr = spec.trainable.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise TrainableLoadError(
            f"cannot import the trainable {spec.trainable!r}: module {module_name!r} failed"
            f" to import: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TrainableLoadError(
                f"cannot import the trainable {spec.trainable!r}: module {module_name!r} has no"
                f" attribute {attr!r}"
            ) from None
    return obj
