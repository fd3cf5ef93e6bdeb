"""Quickstart: the reference page's objective, tuned on this machine (no cluster needed).

Run: make demo   (or: python examples/quickstart.py)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from kubetune.air import session


def objective(x: float, a: float, b: float) -> float:
    return a * (x**0.5) + b


def trainable(config: dict) -> None:
    intermediate_score = 0.0
    for x in range(20):
        intermediate_score = objective(x, config["a"], config["b"])
        session.report({"score": intermediate_score})  # This sends the score to kubetune.


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    out = tempfile.mkdtemp(prefix="kubetune_quickstart_")
    best: tuple[float, dict] | None = None
    for i, config in enumerate([{"a": 1, "b": 1}, {"a": 2, "b": 4}, {"a": 3, "b": 0}]):
        trial_dir = os.path.join(out, f"trial_{i}")
        spec = {
            "trial_id": f"trial_{i}",
            "out_dir": trial_dir,
            "trainable": "quickstart:trainable",
            "config": config,
            "python_path": [here],
        }
        code = subprocess.call(
            [sys.executable, "-m", "kubetune.trial", "--spec-json", json.dumps(spec)]
        )
        with open(os.path.join(trial_dir, "result.json")) as f:
            last = json.loads(f.readlines()[-1])
        print(
            f"trial_{i} config={config} exit={code}"
            f" iterations={last['training_iteration']} score={last['score']:.3f}"
        )
        if best is None or last["score"] > best[0]:
            best = (last["score"], config)
    assert best is not None
    print(f"best: score={best[0]:.3f} config={best[1]}  (results in {out})")


if __name__ == "__main__":
    main()
