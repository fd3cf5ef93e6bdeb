"""Population Based Training with checkpoints (Class API).

Four trials optimise a toy objective whose best learning rate changes over time; every 4
iterations PBT copies the state of a top trial into a bottom one (from its checkpoint) and
perturbs the learning rate.

Run: python examples/pbt.py
"""

from __future__ import annotations

import time

from kubetune import air, tune
from kubetune.tune.schedulers import PopulationBasedTraining


class Optimiser(tune.Trainable):
    def setup(self, config: dict) -> None:
        self.lr = config["lr"]
        self.position = 0.0

    def step(self) -> dict:
        # a little work, so that the population trains side by side
        time.sleep(self.config.get("step_s", 0.05))
        target = 10.0 if self.iteration < 12 else 20.0  # the best lr changes mid-run
        self.position += self.lr * (target - self.position)
        return {"score": -abs(target - self.position), "lr": self.lr}

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        return {"position": self.position}

    def load_checkpoint(self, checkpoint: dict) -> None:
        self.position = checkpoint["position"]

    def reset_config(self, new_config: dict) -> bool:
        self.lr = new_config["lr"]
        self.config = new_config
        return True


def main() -> None:
    pbt = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=4,
        hyperparam_mutations={"lr": tune.uniform(0.01, 0.5)},
        seed=3,
    )
    tuner = tune.Tuner(
        # half a CPU each: all four members of the population run at once on two cores
        tune.with_resources(Optimiser, {"cpu": 0.5}),
        param_space={"lr": tune.uniform(0.01, 0.5)},
        tune_config=tune.TuneConfig(
            metric="score", mode="max", num_samples=4, scheduler=pbt, seed=3
        ),
        run_config=air.RunConfig(
            name=f"pbt_{time.strftime('%Y-%m-%d_%H-%M-%S')}",
            stop={"training_iteration": 24},
            checkpoint_config=air.CheckpointConfig(num_to_keep=2),
        ),
    )
    results = tuner.fit()
    best = results.get_best_result()
    print(f"best final score: {best.metrics['score']:.4f} with lr={best.metrics['lr']:.3f}")
    exploited = sum(
        1 for r in results for row in r.history() if row.get("iterations_since_restore") == 1
    ) - len(results)
    print(f"restarts from another trial's checkpoint (exploits): {exploited}")


if __name__ == "__main__":
    main()
