"""`kubetune dashboard --cluster`'s arguments (pure: no cluster)."""

from __future__ import annotations

import pytest

from kubetune.cli import main
from kubetune.dashboard.cluster import parse_target


def test_target_names_one_experiment_and_its_namespace():
    assert parse_target("team-a/pbt", []) == (["team-a"], "pbt")
    assert parse_target("pbt", ["team-a"]) == (["team-a"], "pbt")
    assert parse_target("pbt", []) == ([], "pbt")  # the context's namespace
    assert parse_target(None, ["a", "b"]) == (["a", "b"], None)
    assert parse_target(None, []) == ([], None)


@pytest.mark.parametrize(
    ("target", "namespaces", "words"),
    [
        ("team-a/", [], "[NAMESPACE/]NAME"),
        ("team-a/pbt", ["team-b"], "team-b"),
        ("pbt", ["a", "b"], "one namespace"),
    ],
)
def test_contradicting_targets_are_refused_naming_them(target, namespaces, words):
    with pytest.raises(ValueError, match="--cluster") as info:
        parse_target(target, namespaces)
    assert words in str(info.value)


def test_cli_refuses_cluster_flags_without_cluster_and_a_missing_path(capsys):
    assert main(["dashboard", "-n", "team-a", "/tmp"]) == 2
    assert "go with --cluster" in capsys.readouterr().err
    assert main(["dashboard"]) == 2
    assert "needs a PATH" in capsys.readouterr().err
    assert main(["dashboard", "--cluster", "--all-namespaces", "ns/exp"]) == 2
    assert "--all-namespaces takes no" in capsys.readouterr().err
