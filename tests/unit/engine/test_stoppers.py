"""Stoppers: Ray's rules, JSON state, the ``stop`` argument helper."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from kubetune import tune
from kubetune.search.errors import ConfigError
from kubetune.stoppers import (
    CombinedStopper,
    DictStopper,
    ExperimentPlateauStopper,
    FunctionStopper,
    MaximumIterationStopper,
    NoopStopper,
    Stopper,
    TimeoutStopper,
    TrialPlateauStopper,
    to_stopper,
)


def test_to_stopper() -> None:
    assert isinstance(to_stopper(None), NoopStopper)
    assert isinstance(to_stopper({"a": 1}), DictStopper)
    assert isinstance(to_stopper(lambda t, r: False), FunctionStopper)
    s = MaximumIterationStopper(2)
    assert to_stopper(s) is s
    assert isinstance(to_stopper([{"a": 1}, s]), CombinedStopper)
    assert tune.Stopper is Stopper
    with pytest.raises(ConfigError) as info:
        to_stopper(3)
    assert info.value.field == "stop"


def test_dict_criteria_any_key_ge() -> None:
    s = to_stopper({"training_iteration": 5, "eval/acc": 0.9})
    assert not s("t", {"training_iteration": 4, "eval": {"acc": 0.5}})
    assert s("t", {"training_iteration": 5})
    assert s("t", {"training_iteration": 1, "eval": {"acc": 0.95}})
    assert s("t", {"training_iteration": 1, "eval/acc": 0.95})


def test_maximum_iteration_counts_results_per_trial() -> None:
    s = MaximumIterationStopper(2)
    assert [s("a", {}), s("b", {}), s("a", {})] == [False, False, True]
    s2 = MaximumIterationStopper(2)
    s2.set_state(json.loads(json.dumps(s.get_state())))
    assert s2("b", {})


def test_trial_plateau() -> None:
    s = TrialPlateauStopper("loss", std=0.01, num_results=3, grace_period=3)
    assert [s("t", {"loss": v}) for v in [5.0, 1.0, 1.0, 1.0]] == [False, False, False, True]
    s = TrialPlateauStopper(
        "loss", std=0.01, num_results=2, grace_period=1, metric_threshold=0.5, mode="min"
    )
    assert [s("t", {"loss": v}) for v in [1.0, 1.0, 0.4, 0.4]] == [False, False, False, True]
    with pytest.raises(ConfigError) as info:
        TrialPlateauStopper("loss", metric_threshold=1.0)
    assert info.value.field == "mode"


def test_experiment_plateau() -> None:
    s = ExperimentPlateauStopper("acc", std=0.001, top=3, mode="max", patience=1)
    out = [s("t", {"acc": v}) for v in [0.5, 0.9, 0.9, 0.9, 0.9]]
    assert out == [False, False, False, True, True]  # top 3 equal at the 4th result, patience 1
    s2 = ExperimentPlateauStopper("acc", std=0.001, top=3, mode="max", patience=1)
    s2.set_state(json.loads(json.dumps(s.get_state())))
    assert s2.stop_all()
    with pytest.raises(ConfigError) as info:
        ExperimentPlateauStopper("acc", mode="best")
    assert info.value.field == "mode"


def test_timeout_uses_the_engine_clock() -> None:
    s = TimeoutStopper(timedelta(seconds=10))
    s.set_clock(100.0)
    assert not s.stop_all()
    s.set_clock(109.0)
    assert not s("t", {})
    s.set_clock(110.0)
    assert s.stop_all()
    with pytest.raises(ConfigError) as info:
        TimeoutStopper(0)
    assert info.value.field == "timeout"


def test_combined_feeds_every_stopper() -> None:
    a, b = MaximumIterationStopper(3), MaximumIterationStopper(2)
    c = CombinedStopper(a, b)
    assert [c("t", {}), c("t", {})] == [False, True]
    assert a.get_state() == {"iter": {"t": 2}}
    with pytest.raises(ConfigError) as info:
        CombinedStopper(a, "x")
    assert info.value.field == "stoppers[1]"
