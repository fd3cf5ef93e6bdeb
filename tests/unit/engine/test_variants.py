"""Grid and random expansion: counts, order and tags equal Ray's.

The expected orders and tags below were produced by Ray 2.60.0's BasicVariantGenerator (run
once in a throwaway virtualenv; Ray is not a dependency of this project).
"""

from __future__ import annotations

import json

import pytest

from kubetune.search import sample as S
from kubetune.search.basic_variant import BasicVariantGenerator
from kubetune.search.errors import ConfigError


def expand(space, num_samples=1, points=None, seed=0):
    g = BasicVariantGenerator(points_to_evaluate=points, random_state=seed)
    g.set_search_properties(None, None, space, num_samples=num_samples)
    total = g.total_samples()
    out = []
    while True:
        tid = f"t{len(out)}"
        cfg = g.suggest(tid)
        if cfg == "FINISHED":
            break
        out.append((g.trial_tag(tid), cfg))
    return total, out


def test_two_grids_times_num_samples_first_key_fastest() -> None:
    total, out = expand({"a": S.grid_search([1, 2]), "b": S.grid_search(["x", "y", "z"])}, 2)
    # Ray 2.60: 12 trials, "a" varies fastest, the whole grid repeats per sample
    expected = [
        ("0_a=1,b=x", {"a": 1, "b": "x"}),
        ("1_a=2,b=x", {"a": 2, "b": "x"}),
        ("2_a=1,b=y", {"a": 1, "b": "y"}),
        ("3_a=2,b=y", {"a": 2, "b": "y"}),
        ("4_a=1,b=z", {"a": 1, "b": "z"}),
        ("5_a=2,b=z", {"a": 2, "b": "z"}),
        ("6_a=1,b=x", {"a": 1, "b": "x"}),
        ("7_a=2,b=x", {"a": 2, "b": "x"}),
        ("8_a=1,b=y", {"a": 1, "b": "y"}),
        ("9_a=2,b=y", {"a": 2, "b": "y"}),
        ("10_a=1,b=z", {"a": 1, "b": "z"}),
        ("11_a=2,b=z", {"a": 2, "b": "z"}),
    ]
    assert total == 12
    assert out == expected


def test_nested_grids_ordered_by_path() -> None:
    space = {
        "z": S.grid_search([1, 2]),
        "m": {"b": S.grid_search([3, 4]), "a": S.grid_search([5, 6])},
        "c": 7,
    }
    total, out = expand(space)
    # Ray 2.60: paths sorted -> m/a fastest, then m/b, then z
    tags = [t for t, _ in out]
    assert tags == [
        "0_a=5,b=3,z=1",
        "1_a=6,b=3,z=1",
        "2_a=5,b=4,z=1",
        "3_a=6,b=4,z=1",
        "4_a=5,b=3,z=2",
        "5_a=6,b=3,z=2",
        "6_a=5,b=4,z=2",
        "7_a=6,b=4,z=2",
    ]
    assert out[5][1] == {"z": 2, "m": {"b": 3, "a": 6}, "c": 7}
    assert total == 8


def test_grid_with_random_resamples_per_variant() -> None:
    total, out = expand({"lr": S.uniform(0, 1), "bs": S.grid_search([16, 32])}, 3)
    assert total == 6
    assert [c["bs"] for _, c in out] == [16, 32, 16, 32, 16, 32]
    assert len({c["lr"] for _, c in out}) == 6
    # tags list every resolved variable sorted by path (Ray: "0_bs=16,lr=0.6370")
    assert all(t.split("_", 1)[1].startswith(f"bs={c['bs']},lr=") for t, c in out)


def test_points_to_evaluate_count_and_order() -> None:
    space = {"a": S.grid_search([1, 2]), "b": S.choice([10, 20])}
    total, out = expand(space, 3, points=[{"b": 10}, {"a": 1, "b": 20}])
    # Ray 2.60: a point that leaves a grid open expands it; points replace samples
    assert total == 5
    assert [(t, c) for t, c in out[:3]] == [
        ("0_a=1", {"a": 1, "b": 10}),
        ("1_a=2", {"a": 2, "b": 10}),
        ("2", {"a": 1, "b": 20}),
    ]
    assert [t.split("_")[0] for t, _ in out[3:]] == ["3", "4"]
    assert [c["a"] for _, c in out[3:]] == [1, 2]


def test_points_only_random() -> None:
    total, out = expand({"a": S.randint(0, 5)}, 4, points=[{"a": 3}])
    assert total == 4
    assert out[0] == ("0", {"a": 3})
    assert [t.split("_")[1].startswith("a=") for t, _ in out[1:]] == [True] * 3


def test_grid_inside_list() -> None:
    _, out = expand({"layers": [S.grid_search([1, 2]), S.grid_search([3, 4])]})
    # Ray 2.60: tags use the list index as key
    assert out == [
        ("0_0=1,1=3", {"layers": [1, 3]}),
        ("1_0=2,1=3", {"layers": [2, 3]}),
        ("2_0=1,1=4", {"layers": [1, 4]}),
        ("3_0=2,1=4", {"layers": [2, 4]}),
    ]


def test_sample_from_depends_on_grid() -> None:
    space = {"a": S.grid_search([1, 2]), "b": S.sample_from(lambda spec: spec.config.a * 10)}
    _, out = expand(space)
    assert out == [("0_a=1,b=10", {"a": 1, "b": 10}), ("1_a=2,b=20", {"a": 2, "b": 20})]


def test_sample_from_chain_resolves_in_passes() -> None:
    space = {
        "c": S.sample_from(lambda cfg: cfg["b"] + 1),
        "b": S.sample_from(lambda cfg: cfg["a"] * 2),
        "a": S.randint(1, 3),
    }
    _, out = expand(space, 5)
    for _, c in out:
        assert c["b"] == c["a"] * 2 and c["c"] == c["b"] + 1


def test_circular_sample_from_is_an_error() -> None:
    space = {"a": S.sample_from(lambda c: c["b"]), "b": S.sample_from(lambda c: c["a"])}
    with pytest.raises(ConfigError) as info:
        expand(space)
    assert info.value.field == "a"


def test_float_tags_and_cleaning() -> None:
    _, out = expand({"a": S.grid_search([0.1, 1e-5]), "s": S.grid_search(["a b/c", "d"])})
    assert [t for t, _ in out] == [
        "0_a=0.1000,s=a_b_c",
        "1_a=0.0000,s=a_b_c",
        "2_a=0.1000,s=d",
        "3_a=0.0000,s=d",
    ]


def test_nested_domains_inside_grid_values_are_resolved() -> None:
    _, out = expand({"opt": S.grid_search([{"lr": S.uniform(0, 1)}, {"lr": 5}])})
    assert 0 <= out[0][1]["opt"]["lr"] < 1
    assert out[1][1] == {"opt": {"lr": 5}}


def test_seeded_and_restorable() -> None:
    space = {"x": S.uniform(0, 1), "g": S.grid_search([1, 2, 3])}
    _, a = expand(space, 4, seed=11)
    _, b = expand(space, 4, seed=11)
    assert a == b
    g = BasicVariantGenerator(random_state=11)
    g.set_search_properties(None, None, space, num_samples=4)
    first = [g.suggest(f"t{i}") for i in range(5)]
    state = json.loads(json.dumps(g.get_state()))
    g2 = BasicVariantGenerator()
    g2.set_search_properties(None, None, space, num_samples=4)
    g2.set_state(state)
    rest = []
    while (c := g2.suggest("x")) != "FINISHED":
        rest.append(c)
    assert first + rest == [c for _, c in a]


def test_infinite_samples() -> None:
    g = BasicVariantGenerator(random_state=0)
    g.set_search_properties(None, None, {"x": S.uniform(0, 1)}, num_samples=-1)
    assert g.total_samples() is None
    assert all(isinstance(g.suggest(str(i)), dict) for i in range(100))


def test_preset_key_not_in_space() -> None:
    with pytest.raises(ConfigError) as info:
        expand({"a": S.randint(0, 3)}, 1, points=[{"zz": 1}])
    assert info.value.field == "points_to_evaluate"
