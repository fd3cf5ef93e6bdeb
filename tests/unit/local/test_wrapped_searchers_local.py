"""The wrapped searchers run through local mode's Tuner, as Ray's examples use them (issue 14)."""

from __future__ import annotations

import pytest

from kubetune import tune
from kubetune.search import ConcurrencyLimiter

from .trainables import every_step


@pytest.mark.parametrize("name", ["hyperopt", "nevergrad"])
def test_tuner_with_a_wrapped_searcher(name: str) -> None:
    from kubetune.schedulers import HyperBandForBOHB
    from kubetune.search.bohb import TuneBOHB
    from kubetune.search.hyperopt import HyperOptSearch
    from kubetune.search.nevergrad import NevergradSearch

    searcher = {
        "hyperopt": lambda: HyperOptSearch(seed=0, n_initial_points=2),
        "nevergrad": lambda: NevergradSearch(optimizer="OnePlusOne", seed=0),
        "bohb": lambda: TuneBOHB(seed=0),
    }[name]()
    scheduler = HyperBandForBOHB(max_t=20, reduction_factor=3) if name == "bohb" else None
    tuner = tune.Tuner(
        every_step,
        param_space={"a": tune.uniform(0, 2), "b": tune.choice([0, 1]), "c": 5},
        tune_config=tune.TuneConfig(
            metric="score",
            mode="max",
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=2),
            scheduler=scheduler,
            num_samples=5,
        ),
    )
    results = tuner.fit()
    assert len(results) == 5
    assert results.num_errors == 0
    for r in results:
        assert 0 <= r.config["a"] <= 2 and r.config["b"] in (0, 1) and r.config["c"] == 5
