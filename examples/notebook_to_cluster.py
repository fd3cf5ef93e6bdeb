"""The same Tuner, on the cluster: run this as it is here, or with its trials as pods.

    python examples/notebook_to_cluster.py                      # local mode, this machine
    kubetune submit examples/notebook_to_cluster.py             # trials as pods on the cluster

In a notebook, set once (or put the same keys in ~/.config/kubetune/config.toml):

    %env KUBETUNE_MODE=cluster
    %env KUBETUNE_STORAGE=s3://my-bucket/experiments
    %env KUBETUNE_STORAGE_SECRET=s3-credentials

and run the cells unchanged. The cluster is your kubeconfig's current context; trials run the
operator's trial base image, and the code below travels with the experiment (cloudpickled,
through its storage), so nothing is built or pushed. The live table and the callback below run
here, in this process, in both modes (on the cluster, fed from the experiment's storage).
"""

from __future__ import annotations

from kubetune import air, tune
from kubetune.air import session
from kubetune.schedulers import ASHAScheduler


def objective(step: int, lr: float, width: int) -> float:
    return (0.1 + lr * step) ** 0.5 * width / 100


class Finished(tune.Callback):
    """Runs where fit() was called, in local and in cluster mode alike."""

    def on_trial_complete(self, iteration, trials, trial, **info):  # type: ignore[no-untyped-def]
        last = trial.last_result
        print(f"{trial}: score {last['score']:.3f} after {last['training_iteration']} steps")


def train(config: dict) -> None:
    for step in range(1, 21):
        session.report({"score": objective(step, config["lr"], config["width"])})


tuner = tune.Tuner(
    train,
    param_space={"lr": tune.loguniform(1e-3, 1e-1), "width": tune.choice([32, 64, 128])},
    tune_config=tune.TuneConfig(
        metric="score",
        mode="max",
        num_samples=8,
        seed=3,
        scheduler=ASHAScheduler(max_t=20, grace_period=5),
    ),
    run_config=air.RunConfig(
        name="notebook-to-cluster", stop={"training_iteration": 20}, callbacks=[Finished()]
    ),
)
results = tuner.fit()  # Ctrl-C on the cluster detaches; Tuner.restore(uri).fit() reattaches
best = results.get_best_result()
print(
    f"best config: {best.config}  score: {best.metrics['score']:.3f}  ({results.experiment_path})"
)
