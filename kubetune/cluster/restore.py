"""``Tuner.restore`` of an experiment the operator wrote (applied with kubectl or submitted).

Its results read at once (``get_results()``). One that ``Tuner.fit()`` submitted comes back
with the Tuner's configs as submitted, so its callbacks follow it again when it is
reattached. ``fit()`` continues it on the cluster, as a new TuneExperiment whose
``spec.restoreFrom`` is the stored one, when cluster mode is on; this machine cannot run an
operator experiment's trials itself (their code is in an image).
"""

from __future__ import annotations

import sys
from typing import Any


def _placeholder_trainable(config: dict[str, Any]) -> None:
    raise RuntimeError("this Tuner only reads a cluster experiment's results")


def submitted_tuner(storage_uri: str) -> dict[str, Any]:
    """The param_space, tune_config and run_config (its callbacks included) that
    ``Tuner.fit()`` stored when it submitted the experiment; {} for one applied with kubectl.
    Unpickled here, in the user's process, from the user's own storage."""
    import cloudpickle

    from kubetune.cluster.ship import TUNER
    from kubetune.storage import open_storage

    try:
        data = open_storage(storage_uri).get_bytes(TUNER)
    except FileNotFoundError:
        return {}
    try:
        saved = cloudpickle.loads(data)
    except Exception as exc:  # a class that no longer imports
        print(
            f"kubetune: {storage_uri}/{TUNER} cannot be loaded ({type(exc).__name__}: {exc});"
            " the experiment's callbacks will not run",
            file=sys.stderr,
        )
        return {}
    keys = ("param_space", "tune_config", "run_config")
    return {k: saved[k] for k in keys if k in saved} if isinstance(saved, dict) else {}


def restore_operator_experiment(
    cls: Any, local_dir: str, storage_uri: str, trainable: Any, options: dict[str, Any]
) -> Any:
    saved = submitted_tuner(storage_uri) if storage_uri.startswith("s3://") else {}
    tuner = cls(trainable or _placeholder_trainable, **saved)
    tuner._restore = {
        "local_dir": local_dir,
        "storage_uri": storage_uri,
        "operator": True,
        **options,
    }
    return tuner
