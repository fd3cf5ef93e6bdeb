"""``Tuner.restore`` of an experiment the operator wrote (applied with kubectl or submitted).

Its results read at once (``get_results()``). ``fit()`` continues it on the cluster, as a new
TuneExperiment whose ``spec.restoreFrom`` is the stored one, when cluster mode is on; this
machine cannot run an operator experiment's trials itself (their code is in an image).
"""

from __future__ import annotations

from typing import Any


def _placeholder_trainable(config: dict[str, Any]) -> None:
    raise RuntimeError("this Tuner only reads a cluster experiment's results")


def restore_operator_experiment(
    cls: Any, local_dir: str, storage_uri: str, trainable: Any, options: dict[str, Any]
) -> Any:
    tuner = cls(trainable or _placeholder_trainable)
    tuner._restore = {
        "local_dir": local_dir,
        "storage_uri": storage_uri,
        "operator": True,
        **options,
    }
    return tuner
