"""Cluster mode's switch: KUBETUNE_* variables over the config file, key by key."""

from __future__ import annotations

import pytest

from kubetune.cluster import mode


@pytest.fixture(autouse=True)
def clean(monkeypatch, tmp_path):
    for var in [*mode.ENV.values(), "KUBETUNE_CONFIG"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_local_unless_told(monkeypatch):
    assert mode.settings() is None
    monkeypatch.setenv("KUBETUNE_MODE", "local")
    assert mode.settings() is None


def test_the_config_file_and_the_environment(monkeypatch, tmp_path):
    path = tmp_path / ".config" / "kubetune" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('mode = "cluster"\nstorage = "s3://b/p"\nnamespace = "ml"\n')
    got = mode.settings()
    assert got is not None and got.storage == "s3://b/p" and got.namespace == "ml"
    monkeypatch.setenv("KUBETUNE_NAMESPACE", "other")
    got = mode.settings()
    assert got is not None and got.namespace == "other" and got.storage == "s3://b/p"
    monkeypatch.setenv("KUBETUNE_MODE", "local")  # the variable wins over the file
    assert mode.settings() is None


def test_bad_settings_name_the_setting(monkeypatch, tmp_path):
    path = tmp_path / "k.toml"
    path.write_text('mode = "cluster"\nstorge = "s3://b"\n')
    monkeypatch.setenv("KUBETUNE_CONFIG", str(path))
    with pytest.raises(ValueError, match="unknown setting"):
        mode.settings()
    monkeypatch.setenv("KUBETUNE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError, match="KUBETUNE_CONFIG"):
        mode.settings()
    monkeypatch.delenv("KUBETUNE_CONFIG")
    monkeypatch.setenv("KUBETUNE_MODE", "cloud")
    with pytest.raises(ValueError, match="KUBETUNE_MODE"):
        mode.settings()


def test_the_storage_is_the_settings_or_an_s3_storage_path(monkeypatch):
    from kubetune.cluster.mode import ClusterSettings
    from kubetune.cluster.submit import storage_spec

    monkeypatch.setenv("KUBETUNE_S3_ENDPOINT_URL", "http://127.0.0.1:8333")
    root, spec = storage_spec(ClusterSettings(storage="s3://b/p/q", storage_secret="s3"))
    assert root == "s3://b/p/q"
    assert spec == {
        "bucket": "b",
        "prefix": "p/q",
        "endpoint": "http://127.0.0.1:8333",
        "secretName": "s3",
    }
    root, spec = storage_spec(ClusterSettings(), "s3://other/runs")
    assert root == "s3://other/runs" and spec["bucket"] == "other"
    with pytest.raises(ValueError, match="KUBETUNE_STORAGE"):
        storage_spec(ClusterSettings(), "~/kubetune_results")


def test_the_pods_endpoint_may_differ_from_this_machines(monkeypatch):
    """A port-forward here, the in-cluster Service in the pods: spec.storage gets the pods'."""
    monkeypatch.setenv("KUBETUNE_MODE", "cluster")
    monkeypatch.setenv("KUBETUNE_STORAGE", "s3://b/p")
    monkeypatch.setenv("KUBETUNE_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("KUBETUNE_POD_S3_ENDPOINT_URL", "http://minio.minio.svc:9000")
    from kubetune.cluster.submit import storage_spec

    settings = mode.settings()
    assert settings is not None
    assert settings.storage_endpoint == "http://127.0.0.1:9000"
    _, spec = storage_spec(settings)
    assert spec["endpoint"] == "http://minio.minio.svc:9000"
