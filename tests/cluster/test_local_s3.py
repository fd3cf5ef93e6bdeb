"""Local mode with storage_path=s3://...: the experiment lands in the real S3 server, and
Tuner.restore continues it from there."""

from __future__ import annotations

import json

import pytest

from kubetune import air, tune
from tests.unit.local import trainables as T


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBETUNE_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("KUBETUNE_S3_REGION", s3_server.region)
    monkeypatch.setenv("KUBETUNE_S3_ADDRESSING_STYLE", "path")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("HOME", str(tmp_path))  # the local staging copy goes under ~
    return s3_server


def test_experiment_is_stored_in_s3(s3_env, s3_bucket):
    results = tune.Tuner(
        T.train_func,
        param_space={"epochs": 3, "k": tune.grid_search([1, 2])},
        run_config=air.RunConfig(storage_path=f"s3://{s3_bucket}/runs", name="s3exp", verbose=0),
    ).fit()
    assert results.experiment_path == f"s3://{s3_bucket}/runs/s3exp"
    assert results[0].path.startswith(f"s3://{s3_bucket}/runs/s3exp/")
    client = s3_env.client()
    keys = {
        o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="runs/s3exp/")["Contents"]
    }
    trial = results[0].path.rsplit("/", 1)[-1]
    for name in ("result.json", "progress.csv", "params.json"):
        assert f"runs/s3exp/{trial}/{name}" in keys
    assert f"runs/s3exp/{trial}/checkpoint_000002/_dict_checkpoint.pkl" in keys
    assert "runs/s3exp/experiment_state.json" in keys
    body = client.get_object(Bucket=s3_bucket, Key=f"runs/s3exp/{trial}/result.json")["Body"]
    lines = body.read().decode().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 1, 2]
    assert tune.Tuner.can_restore(f"s3://{s3_bucket}/runs/s3exp")


def test_a_second_run_under_the_same_name_sets_the_first_aside_in_the_bucket(
    s3_env, s3_bucket, monkeypatch, tmp_path
):
    """From another machine (no staging copy here), a run under an earlier run's name: the
    bucket's state of the first run is moved under .kubetune/earlier/, not overwritten, and
    the first run's trial objects are left as they were."""
    run = air.RunConfig(storage_path=f"s3://{s3_bucket}/runs", name="again", verbose=0)
    first = tune.Tuner(T.train_func, param_space={"epochs": 2, "k": 1}, run_config=run).fit()
    client = s3_env.client()

    def objects() -> dict[str, bytes]:
        listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="runs/again/")["Contents"]
        return {
            o["Key"]: client.get_object(Bucket=s3_bucket, Key=o["Key"])["Body"].read()
            for o in listed
        }

    before = objects()
    monkeypatch.setenv("HOME", str(tmp_path / "other-machine"))
    second = tune.Tuner(T.train_func, param_space={"epochs": 2, "k": 2}, run_config=run).fit()
    after = objects()
    assert [r.config["k"] for r in second] == [2]
    assert second[0].path != first[0].path
    for key, data in before.items():
        if key != "runs/again/experiment_state.json":
            assert after[key] == data, key  # the first run's trial objects, untouched
    (kept,) = [k for k in after if k.endswith("/experiment_state.json") and "/earlier/" in k]
    assert kept.startswith("runs/again/.kubetune/earlier/")
    assert after[kept] == before["runs/again/experiment_state.json"]
    restored = tune.Tuner.restore(f"s3://{s3_bucket}/runs/again", T.train_func).get_results()
    assert [r.config["k"] for r in restored] == [2]
