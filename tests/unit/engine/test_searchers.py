"""Searchers: ConcurrencyLimiter, Repeater, OptunaSearch (replayed state), names and errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kubetune.engine import EngineConfig, ExperimentEngine
from kubetune.search import (
    BasicVariantGenerator,
    ConcurrencyLimiter,
    Repeater,
    Searcher,
    create_searcher,
)
from kubetune.search import sample as S
from kubetune.search.errors import ConfigError

from .sim import Sim


def test_import_kubetune_does_not_import_optuna() -> None:
    code = (
        "import sys, kubetune, kubetune.engine, kubetune.search, kubetune.schedulers, "
        "kubetune.stoppers; from kubetune import tune; tune.uniform(0, 1); "
        "import kubetune.tune.search, kubetune.tune.schedulers, kubetune.tune.stopper; "
        "assert 'optuna' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class Counting(Searcher):
    def __init__(self) -> None:
        super().__init__(metric="acc", mode="max")
        self.n = 0
        self.completed: list[tuple[str, dict | None]] = []

    def suggest(self, trial_id):
        self.n += 1
        return {"i": self.n} if self.n <= 6 else Searcher.FINISHED

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append((trial_id, result))


def test_concurrency_limiter() -> None:
    inner = Counting()
    lim = ConcurrencyLimiter(inner, max_concurrent=2)
    assert lim.suggest("a") == {"i": 1} and lim.suggest("b") == {"i": 2}
    assert lim.suggest("c") is None
    lim.on_trial_complete("a", {"acc": 1})
    assert lim.suggest("c") == {"i": 3}
    state = json.loads(json.dumps(lim.get_state()))
    lim2 = ConcurrencyLimiter(Counting(), max_concurrent=2)
    lim2.set_state(state)
    assert lim2.suggest("d") is None


def test_concurrency_limiter_batch() -> None:
    lim = ConcurrencyLimiter(Counting(), max_concurrent=2, batch=True)
    lim.suggest("a"), lim.suggest("b")
    lim.on_trial_complete("a", {"acc": 1})
    assert lim.suggest("c") is None  # waits for the whole batch
    lim.on_trial_complete("b", {"acc": 1})
    assert lim.suggest("c") == {"i": 3}


def test_limiter_in_engine_bounds_concurrency() -> None:
    searcher = ConcurrencyLimiter(BasicVariantGenerator(random_state=0), max_concurrent=2)
    e = ExperimentEngine(
        EngineConfig(param_space={"x": S.uniform(0, 1)}, num_samples=7), search_alg=searcher
    )
    sim = Sim(e, lambda c, t, it: {"acc": it}, max_iter=3).run()
    assert sim.max_active_seen == 2 and len(sim.engine.trials) == 7


def test_repeater_groups_and_means() -> None:
    inner = Counting()
    rep = Repeater(inner, repeat=3)
    configs = [rep.suggest(f"t{i}") for i in range(6)]
    assert [c["i"] for c in configs] == [1, 1, 1, 2, 2, 2]
    assert [c["__trial_index__"] for c in configs] == [0, 1, 2, 0, 1, 2]
    for i, v in enumerate([1.0, 2.0, float("nan")]):
        rep.on_trial_complete(f"t{i}", {"acc": v})
    assert inner.completed == [("t0", {"acc": 1.5})]
    state = json.loads(json.dumps(rep.get_state()))
    rep2 = Repeater(Counting(), repeat=3)
    rep2.set_state(state)
    for i in (3, 4, 5):
        rep2.on_trial_complete(f"t{i}", {"acc": 3.0})
    assert rep2.searcher.completed == [("t3", {"acc": 3.0})]


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: ConcurrencyLimiter(Counting(), 0), "max_concurrent"),
        (lambda: ConcurrencyLimiter("x", 1), "searcher"),
        (lambda: Repeater(Counting(), 0), "repeat"),
        (lambda: create_searcher("no_such_searcher"), "search_alg"),
        (lambda: BasicVariantGenerator(random_state="x"), "random_state"),
    ],
)
def test_bad_searcher_arguments(make, field) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field


optuna = pytest.importorskip("optuna")
from kubetune.search.optuna import OptunaSearch  # noqa: E402

SPACE = {
    "lr": S.loguniform(1e-4, 1e-1),
    "opt": S.choice(["adam", "sgd"]),
    "net": {"width": S.qrandint(8, 64, 8), "depth": 3},
    "shape": S.choice([[1, 1], [2, 2]]),
    "wd": S.qloguniform(1e-4, 1e-1, 1e-4),
    "units": S.qlograndint(8, 64, 8),
}


def drive(searcher: Searcher, start: int, stop: int) -> list[dict]:
    out = []
    for i in range(start, stop):
        cfg = searcher.suggest(f"t{i}")
        out.append(cfg)
        if i % 4 != 3:  # leave some running across the snapshot
            searcher.on_trial_result(f"t{i}", {"training_iteration": 1, "loss": cfg["lr"]})
            searcher.on_trial_complete(f"t{i}", {"loss": cfg["lr"] * cfg["net"]["width"]})
    return out


def new(sampler: str = "tpe", **kw) -> OptunaSearch:
    s = OptunaSearch(metric="loss", mode="min", seed=7, sampler=sampler, **kw)
    s.set_search_properties(None, None, SPACE)
    return s


def test_optuna_configs_are_in_the_space() -> None:
    for cfg in drive(new(), 0, 25):
        assert SPACE["lr"].is_valid(cfg["lr"]) and cfg["opt"] in ("adam", "sgd")
        assert SPACE["net"]["width"].is_valid(cfg["net"]["width"]) and cfg["net"]["depth"] == 3
        assert cfg["shape"] in ([1, 1], [2, 2])
        assert SPACE["wd"].is_valid(cfg["wd"]) and SPACE["units"].is_valid(cfg["units"])


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "qmc", "nsga2"])
def test_optuna_state_is_replayed(sampler: str) -> None:
    if sampler == "cmaes":
        pytest.importorskip("cmaes")
    if sampler == "qmc":
        pytest.importorskip("scipy")
    a = new(sampler)
    whole = drive(a, 0, 16)
    b = new(sampler)
    first = drive(b, 0, 8)
    state = json.loads(json.dumps(b.get_state()))
    c = new(sampler)
    c.set_state(state)
    rest = drive(c, 8, 16)
    assert first == whole[:8]
    if sampler in ("tpe", "random"):  # samplers without internal memory: exact continuation
        assert rest == whole[8:]
    assert len(c._study.trials) == 16
    assert "params" in json.dumps(state) and "pickle" not in json.dumps(state)


def test_optuna_points_to_evaluate_and_rewards() -> None:
    s = new(points_to_evaluate=[{"lr": 0.01, "opt": "sgd"}])
    cfg = s.suggest("a")
    assert cfg["lr"] == 0.01 and cfg["opt"] == "sgd"
    s2 = new(
        points_to_evaluate=[
            {
                "lr": 0.01,
                "opt": "sgd",
                "net": {"width": 8},
                "shape": [1, 1],
                "wd": 0.001,
                "units": 16,
            }
        ],
        evaluated_rewards=[0.5],
    )
    s2.suggest("b")
    assert len(s2._study.trials) == 2


def test_optuna_multi_objective() -> None:
    s = OptunaSearch(metric=["loss", "time"], mode=["min", "min"], sampler="nsga2", seed=1)
    s.set_search_properties(None, None, {"x": S.uniform(0, 1)})
    for i in range(6):
        cfg = s.suggest(str(i))
        s.on_trial_complete(str(i), {"loss": cfg["x"], "time": 1 - cfg["x"]})
    assert len(s._study.best_trials) >= 1


def test_optuna_in_engine_needs_metric_and_rejects_grid() -> None:
    with pytest.raises(ConfigError) as info:
        ExperimentEngine(
            EngineConfig(param_space={"x": S.uniform(0, 1)}), search_alg=OptunaSearch()
        )
    assert info.value.field == "metric"
    with pytest.raises(ConfigError) as info:
        ExperimentEngine(
            EngineConfig(param_space={"x": S.uniform(0, 1)}, metric="m"), search_alg=OptunaSearch()
        )
    assert info.value.field == "mode"
    with pytest.raises(ConfigError) as info:
        ExperimentEngine(
            EngineConfig(param_space={"x": S.grid_search([1])}, metric="m", mode="max"),
            search_alg=OptunaSearch(),
        )
    assert info.value.field == "param_space"
    sim = Sim(
        ExperimentEngine(
            EngineConfig(
                param_space={"x": S.uniform(0, 1)},
                metric="acc",
                mode="max",
                num_samples=5,
                max_concurrent_trials=2,
            ),
            search_alg=OptunaSearch(seed=0),
        ),
        lambda c, t, it: {"acc": c["x"]},
        max_iter=2,
    ).run()
    assert len(sim.engine.trials) == 5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sampler": "bohb"}, "sampler"),
        ({"metric": ["a", "b"], "mode": "min"}, "mode"),
        ({"metric": ["a", "b"], "mode": ["min"]}, "mode"),
        ({"mode": "minimize"}, "mode"),
        ({"points_to_evaluate": [{}], "evaluated_rewards": [1, 2]}, "evaluated_rewards"),
    ],
)
def test_optuna_bad_arguments(kwargs, field) -> None:
    with pytest.raises(ConfigError) as info:
        OptunaSearch(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("space", "field"),
    [
        ({"a": {"b": S.randn()}}, "a/b"),
        ({"f": S.sample_from(lambda: 1)}, "f"),
        ({"g": S.grid_search([1, 2])}, "g"),
    ],
)
def test_optuna_unsupported_domains(space, field) -> None:
    s = OptunaSearch(metric="m", mode="max")
    with pytest.raises(ConfigError) as info:
        s.set_search_properties(None, None, space)
    assert info.value.field == field


def test_create_searcher_optuna() -> None:
    assert isinstance(create_searcher("optuna", metric="m", mode="max"), OptunaSearch)
    assert isinstance(create_searcher("variant_generator"), BasicVariantGenerator)


def test_repeater_state_stays_small() -> None:
    rep = Repeater(Counting(), repeat=2)
    for i in range(6):
        rep.suggest(f"t{i}")
        rep.on_trial_complete(f"t{i}", {"acc": 1.0})
    assert len(rep.get_state()["groups"]) == 1


def test_unbounded_samples_need_a_concurrency_limit() -> None:
    with pytest.raises(ConfigError) as info:
        ExperimentEngine(EngineConfig(param_space={"x": S.uniform(0, 1)}, num_samples=-1))
    assert info.value.field == "max_concurrent_trials"
    e = ExperimentEngine(
        EngineConfig(param_space={"x": S.uniform(0, 1)}, num_samples=-1, max_concurrent_trials=3)
    )
    assert len(e.start(0)) == 3
