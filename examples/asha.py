"""ASHA: stop unpromising trials early (Ray's AsyncHyperBandScheduler).

Each trial is a noisy learning curve whose ceiling depends on its config; ASHA compares trials
at rungs (1, 3, 9, 27 iterations) and stops the bottom two thirds at each rung.

Run: python examples/asha.py
"""

from __future__ import annotations

import math
import time

from kubetune import air, tune
from kubetune.air import session
from kubetune.tune.schedulers import ASHAScheduler


def train(config: dict) -> None:
    ceiling = 1.0 - abs(math.log10(config["lr"]) + 2.5) / 4 - abs(config["momentum"] - 0.8)
    for epoch in range(1, 82):
        accuracy = ceiling * (1 - math.exp(-epoch / 10)) + 0.01 * math.sin(epoch)
        session.report({"accuracy": accuracy, "epoch": epoch})


def main() -> None:
    scheduler = ASHAScheduler(max_t=81, grace_period=1, reduction_factor=3)
    tuner = tune.Tuner(
        train,
        param_space={"lr": tune.loguniform(1e-5, 1e-1), "momentum": tune.uniform(0.1, 0.99)},
        tune_config=tune.TuneConfig(
            metric="accuracy", mode="max", num_samples=24, scheduler=scheduler, seed=1
        ),
        run_config=air.RunConfig(name=f"asha_{time.strftime('%Y-%m-%d_%H-%M-%S')}"),
    )
    results = tuner.fit()
    iterations = sorted(r.metrics["training_iteration"] for r in results)
    print(f"iterations per trial: {iterations}")
    print(f"stopped early: {sum(i < 81 for i in iterations)} of {len(results)}")
    print(f"best config: {results.get_best_result().config}")


if __name__ == "__main__":
    main()
