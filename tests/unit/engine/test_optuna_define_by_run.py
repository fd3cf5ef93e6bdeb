"""``OptunaSearch(space=function)``: Ray's define-by-run spaces (issue 14)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubetune import tune
from kubetune.search.errors import ConfigError
from kubetune.search.optuna import OptunaSearch


def space_fn(trial: Any) -> dict[str, Any]:
    act = trial.suggest_categorical("activation", ["relu", "tanh"])
    trial.suggest_float("width", 0, 20)
    if act == "relu":
        trial.suggest_float("mult", 1, 2)
    trial.suggest_int("nested/depth", 1, 4)
    return {"steps": 100}


def make() -> OptunaSearch:
    s = OptunaSearch(space=space_fn, metric="loss", mode="min", seed=3)
    s.set_search_properties("loss", "min", {})
    return s


def run(s: OptunaSearch, start: int, n: int, complete: bool = True) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + n):
        cfg = s.suggest(f"t{i}")
        out.append(cfg)
        if complete:
            s.on_trial_complete(f"t{i}", {"loss": cfg["width"] * cfg.get("mult", 1)})
    return out


def test_the_function_defines_each_trials_parameters() -> None:
    configs = run(make(), 0, 30)
    for cfg in configs:
        assert cfg["steps"] == 100
        assert ("mult" in cfg) == (cfg["activation"] == "relu")
        assert 1 <= cfg["nested"]["depth"] <= 4
    assert {c["activation"] for c in configs} == {"relu", "tanh"}


def test_state_round_trip_with_a_running_trial() -> None:
    a = make()
    run(a, 0, 8)
    run(a, 8, 1, complete=False)  # t8 still running when the state is saved
    state = json.loads(json.dumps(a.get_state()))
    b = make()
    b.set_state(state)
    for s in (a, b):
        s.on_trial_complete("t8", {"loss": 1.0})
    assert run(a, 9, 4) == run(b, 9, 4)


def test_param_space_with_domains_is_refused() -> None:
    s = OptunaSearch(space=space_fn, metric="loss", mode="min")
    with pytest.raises(ConfigError, match="param_space"):
        s.set_search_properties("loss", "min", {"x": tune.uniform(0, 1)})


def test_function_must_return_none_or_a_dict() -> None:
    s = OptunaSearch(space=lambda t: [t.suggest_float("x", 0, 1)], metric="m", mode="min")
    s.set_search_properties("m", "min", {})
    with pytest.raises(ConfigError, match="None or a dict"):
        s.suggest("a")
