"""Trial pods of experiments whose code ``kubetune submit`` shipped (``spec.trainable.codeFrom``).

The sidecar fetches the code tree into ``/kubetune/code`` (trainable.pkl, workdir/,
requirements.txt); the trial container unpickles the trainable there. The operator only names
paths: it never reads, let alone unpickles, the user's code.
"""

from __future__ import annotations

from typing import Any

CODE_DIR = "/kubetune/code"


def shipped_code_spec(trainable: dict[str, Any]) -> dict[str, Any]:
    """TrialSpec fields that replace the entrypoint when the code was shipped."""
    if not trainable.get("codeFrom"):
        return {}
    return {
        "trainable": None,
        "trainable_pickle": f"{CODE_DIR}/trainable.pkl",
        "python_path": [f"{CODE_DIR}/workdir", *(trainable.get("pythonPath") or [])],
    }
