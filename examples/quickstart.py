"""Quickstart: the reference page's objective, tuned on this machine (no cluster needed).

Run: make demo   (or: python examples/quickstart.py)
The same experiment as a manifest: kubetune run examples/quickstart.yaml
"""

from __future__ import annotations

import os
import time

from kubetune import air, tune
from kubetune.air import session


def objective(x: float, a: float, b: float) -> float:
    return a * (x**0.5) + b


def trainable(config: dict) -> None:
    intermediate_score = 0.0
    for x in range(20):
        intermediate_score = objective(x, config["a"], config["b"])
        session.report({"score": intermediate_score})  # This sends the score to kubetune.


def main() -> None:
    tuner = tune.Tuner(
        trainable,
        param_space={"a": tune.grid_search([1, 2, 3]), "b": tune.uniform(0, 4)},
        tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=2, seed=7),
        # each run gets its own directory: quickstart_<date>
        run_config=air.RunConfig(
            name=f"quickstart_{time.strftime('%Y-%m-%d_%H-%M-%S')}",
            storage_path=os.environ.get("KUBETUNE_RESULTS_DIR", "~/kubetune_results"),
        ),
    )
    results = tuner.fit()
    best = results.get_best_result()
    print(f"best config: {best.config}  score: {best.metrics['score']:.3f}")
    print(f"results: {results.experiment_path}")


if __name__ == "__main__":
    main()
