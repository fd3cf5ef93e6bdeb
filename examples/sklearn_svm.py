"""A real (small) training job: tune an SVM on scikit-learn's bundled digits data set.

Needs scikit-learn (pip install 'kubetune[examples]'); the data ships with it, nothing is
downloaded. Run: python examples/sklearn_svm.py
"""

from __future__ import annotations

import time

from kubetune import air, tune
from kubetune.air import session


def train_svm(config: dict) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import cross_val_score
    from sklearn.svm import SVC

    x, y = load_digits(return_X_y=True)
    model = SVC(C=config["C"], gamma=config["gamma"])
    scores = cross_val_score(model, x, y, cv=3)
    session.report({"accuracy": float(scores.mean()), "std": float(scores.std())})


def main() -> None:
    tuner = tune.Tuner(
        train_svm,
        param_space={"C": tune.loguniform(1e-2, 1e2), "gamma": tune.loguniform(1e-4, 1e-2)},
        tune_config=tune.TuneConfig(metric="accuracy", mode="max", num_samples=8, seed=0),
        run_config=air.RunConfig(name=f"svm_{time.strftime('%Y-%m-%d_%H-%M-%S')}"),
    )
    results = tuner.fit()
    best = results.get_best_result()
    print(f"best accuracy {best.metrics['accuracy']:.4f} with {best.config}")


if __name__ == "__main__":
    main()
