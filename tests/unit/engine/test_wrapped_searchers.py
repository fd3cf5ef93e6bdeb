"""Searchers that wrap HyperOpt, BayesOpt, Nevergrad, ZOOpt, HpBandSter (issue 14): they beat
random search on the same budget, their JSON state restores exactly, and a missing library
names the extra to install."""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

import pytest

from kubetune import tune
from kubetune.search import create_searcher
from kubetune.search._model_based import MissingLibraryError
from kubetune.search.basic_variant import BasicVariantGenerator
from kubetune.search.errors import ConfigError

SPACE = {"x": tune.uniform(-5, 5), "y": tune.uniform(-5, 5), "const": 3}


def loss(c: dict[str, Any]) -> float:
    return (c["x"] - 1) ** 2 + (c["y"] + 2) ** 2


def make(name: str, seed: int, budget: int = 40) -> Any:
    if name == "random":
        return BasicVariantGenerator(random_state=seed)
    from kubetune.search.bayesopt import BayesOptSearch
    from kubetune.search.bohb import TuneBOHB
    from kubetune.search.hyperopt import HyperOptSearch
    from kubetune.search.nevergrad import NevergradSearch
    from kubetune.search.zoopt import ZOOptSearch

    return {
        "hyperopt": lambda: HyperOptSearch(seed=seed, n_initial_points=10),
        "bayesopt": lambda: BayesOptSearch(random_state=seed, random_search_steps=5),
        "nevergrad": lambda: NevergradSearch(seed=seed, optimizer="OnePlusOne"),
        "zoopt": lambda: ZOOptSearch(budget=budget, seed=seed),
        "bohb": lambda: TuneBOHB(seed=seed),
    }[name]()


def prepared(name: str, seed: int, budget: int = 40) -> Any:
    s = make(name, seed, budget)
    s.set_search_properties("loss", "min", SPACE, num_samples=budget)
    return s


def finish(s: Any, tid: str, cfg: dict[str, Any]) -> None:
    s.on_trial_result(tid, {"loss": loss(cfg), "training_iteration": 1})
    s.on_trial_complete(tid, {"loss": loss(cfg), "training_iteration": 1})


def best_of(name: str, seed: int, budget: int) -> float:
    s = prepared(name, seed, budget)
    best, done, calls = float("inf"), 0, 0
    while done < budget and calls < 5 * budget:
        calls += 1
        cfg = s.suggest(f"t{done}")
        if not isinstance(cfg, dict):
            continue
        assert cfg["const"] == 3 and -5 <= cfg["x"] <= 5 and -5 <= cfg["y"] <= 5
        finish(s, f"t{done}", cfg)
        best = min(best, loss(cfg))
        done += 1
    assert done == budget, f"{name} suggested only {done} of {budget}"
    return best


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "budget", "seeds"),
    [("hyperopt", 40, 8), ("nevergrad", 40, 8), ("zoopt", 40, 8), ("bayesopt", 15, 3)],
)
def test_beats_random_search_on_the_same_budget(name: str, budget: int, seeds: int) -> None:
    ours = statistics.mean(best_of(name, seed, budget) for seed in range(seeds))
    rand = statistics.mean(best_of("random", seed, budget) for seed in range(seeds))
    assert ours < rand, f"{name}: mean best {ours:.3f} vs random search {rand:.3f}"


def drive(s: Any, start: int, n: int) -> list[dict[str, Any]]:
    """n suggestions; each finishes one step later (two trials in flight)."""
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, dict[str, Any]]] = []
    i = start
    calls = 0
    while len(out) < n and calls < 10 * n:
        calls += 1
        cfg = s.suggest(f"t{i}")
        if isinstance(cfg, dict):
            out.append(cfg)
            pending.append((f"t{i}", cfg))
            i += 1
        if (len(pending) >= 2 or not isinstance(cfg, dict)) and pending:
            finish(s, *pending.pop(0))
    return out


@pytest.mark.parametrize("name", ["hyperopt", "bayesopt", "nevergrad", "zoopt", "bohb"])
def test_state_round_trip_continues_with_the_same_suggestions(name: str) -> None:
    a = prepared(name, seed=5, budget=30)
    drive(a, 0, 12 if name != "bayesopt" else 7)
    state = json.loads(json.dumps(a.get_state()))  # JSON, as the engine stores it
    b = prepared(name, seed=999, budget=30)  # the state's seed wins
    b.set_state(state)
    n0 = 100
    assert drive(a, n0, 4) == drive(b, n0, 4)


def test_points_to_evaluate_come_first_and_survive_a_restore() -> None:
    from kubetune.search.hyperopt import HyperOptSearch

    points = [{"x": 1.0, "y": -2.0}, {"x": 0.5, "y": 0.5}]
    s = HyperOptSearch(metric="loss", mode="min", points_to_evaluate=points, seed=1)
    s.set_search_properties("loss", "min", SPACE)
    first = s.suggest("a")
    assert (first["x"], first["y"]) == (1.0, -2.0)
    state = json.loads(json.dumps(s.get_state()))
    r = HyperOptSearch(metric="loss", mode="min", seed=1)
    r.set_search_properties("loss", "min", SPACE)
    r.set_state(state)
    assert (r.suggest("b")["x"], s.suggest("b")["x"]) == (0.5, 0.5)


def test_hyperopt_native_conditional_space() -> None:
    from hyperopt import hp

    from kubetune.search.hyperopt import HyperOptSearch

    space = {
        "activation": hp.choice(
            "activation", [{"name": "relu", "mult": hp.uniform("mult", 1, 2)}, {"name": "tanh"}]
        ),
        "width": hp.uniform("width", 0, 20),
        "steps": 10,
    }
    s = HyperOptSearch(space=space, metric="m", mode="min", seed=0)
    s.set_search_properties("m", "min", {})
    seen = set()
    for i in range(20):
        cfg = s.suggest(str(i))
        act = cfg["activation"]
        seen.add(act["name"])
        assert ("mult" in act) == (act["name"] == "relu")
        assert cfg["steps"] == 10
        s.on_trial_complete(str(i), {"m": cfg["width"]})
    assert seen == {"relu", "tanh"}


def test_bayesopt_rejects_discrete_domains_naming_the_parameter() -> None:
    from kubetune.search.bayesopt import BayesOptSearch

    with pytest.raises(ConfigError, match="n"):
        BayesOptSearch(space={"n": tune.randint(1, 5)}, metric="m", mode="min")


def test_create_searcher_by_name_and_ray_import_paths() -> None:
    from kubetune.tune.search.bayesopt import BayesOptSearch
    from kubetune.tune.search.bohb import TuneBOHB
    from kubetune.tune.search.hyperopt import HyperOptSearch
    from kubetune.tune.search.nevergrad import NevergradSearch
    from kubetune.tune.search.zoopt import ZOOptSearch

    assert isinstance(create_searcher("hyperopt", metric="m", mode="min"), HyperOptSearch)
    assert isinstance(create_searcher("nevergrad"), NevergradSearch)
    assert {BayesOptSearch, TuneBOHB, ZOOptSearch}  # importable under Ray's module names


@pytest.mark.parametrize(
    ("module", "cls", "lib", "extra", "kwargs"),
    [
        ("hyperopt", "HyperOptSearch", "hyperopt", "hyperopt", {}),
        ("bayesopt", "BayesOptSearch", "bayes_opt", "bayesopt", {}),
        ("nevergrad", "NevergradSearch", "nevergrad", "nevergrad", {}),
        ("zoopt", "ZOOptSearch", "zoopt", "zoopt", {"budget": 5}),
        ("bohb", "TuneBOHB", "hpbandster", "bohb", {}),
        ("hebo", "HEBOSearch", "hebo", "hebo", {}),
        ("ax", "AxSearch", "ax", "ax", {}),
    ],
)
def test_missing_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, cls: str, lib: str, extra: str, kwargs: Any
) -> None:
    import importlib

    monkeypatch.setitem(sys.modules, lib, None)  # makes `import lib` raise ImportError
    if lib == "hpbandster":
        monkeypatch.setitem(sys.modules, "ConfigSpace", None)
    searcher_cls = getattr(importlib.import_module(f"kubetune.search.{module}"), cls)
    with pytest.raises(MissingLibraryError, match=rf"pip install 'kubetune\[{extra}\]'"):
        searcher_cls(**kwargs)


def test_zoopt_needs_a_budget() -> None:
    from kubetune.search.zoopt import ZOOptSearch

    with pytest.raises(ConfigError, match="budget"):
        ZOOptSearch()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_bohb_with_a_concurrency_limiter_finishes_whatever_the_order_of_results(seed: int) -> None:
    """Ray's bohb_example: TuneBOHB behind ConcurrencyLimiter(4), HyperBandForBOHB pausing
    trials at its milestones, 32 samples, room for 8. The limiter counts paused trials, so
    brackets that cannot fill must be halved with what they have, or nothing runs again."""
    pytest.importorskip("hpbandster", reason="needs kubetune[bohb]")
    import math
    import random

    from kubetune.engine import EngineConfig, ExperimentEngine
    from kubetune.schedulers import HyperBandForBOHB
    from kubetune.search import ConcurrencyLimiter
    from kubetune.search.bohb import TuneBOHB
    from tests.unit.engine.sim import Sim

    class ShuffledSim(Sim):
        def run_round(self) -> None:
            rng.shuffle(self.order)  # trials report in a different order each round
            super().run_round()

    def curve(config: dict[str, Any], tid: str, it: int) -> dict[str, Any]:
        return {"reward": math.tanh(it / max(config["width"], 1e-3)) * config["height"]}

    rng = random.Random(seed)
    space = {"width": tune.uniform(0, 20), "height": tune.uniform(-100, 100)}
    engine = ExperimentEngine(
        EngineConfig(param_space=space, metric="reward", mode="max", num_samples=32),
        search_alg=ConcurrencyLimiter(TuneBOHB(seed=seed), max_concurrent=4),
        scheduler=HyperBandForBOHB(max_t=10, reduction_factor=2, stop_last_trials=False),
        stopper={"training_iteration": 10},
        seed=seed,
    )
    sim = ShuffledSim(engine, curve, max_iter=10, max_rounds=400, capacity=8, checkpoint_every=1)
    sim.run()  # asserts that the experiment finished
    assert len(sim.order) == 32 and sim.max_active_seen <= 4
