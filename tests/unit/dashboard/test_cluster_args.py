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


def test_this_machines_s3_endpoint_wins_over_the_one_the_pods_use():
    """An experiment names the endpoint its pods reach (an in-cluster Service); the dashboard
    on a laptop reads through its own (a port-forward) when --s3-endpoint says so."""
    from kubetune.dashboard.cluster import ClusterDashboard

    obj = {"spec": {"storage": {"endpoint": "http://minio.minio.svc:9000", "region": "r"}}}
    pods_view = ClusterDashboard(object(), None)._storage("s3://b/p", obj)
    assert pods_view.config.endpoint_url == "http://minio.minio.svc:9000"  # type: ignore[attr-defined]
    mine = ClusterDashboard(object(), None, s3_endpoint="http://127.0.0.1:9000")
    storage = mine._storage("s3://b/p", obj)
    assert storage.config.endpoint_url == "http://127.0.0.1:9000"  # type: ignore[attr-defined]
    assert storage.config.region == "r"  # type: ignore[attr-defined]
    assert main(["dashboard", "--s3-endpoint", "http://x", "/tmp"]) == 2
