"""kubetune.init / shutdown: Ray's ray.init for ported scripts (resource limits only)."""

from __future__ import annotations

import itertools

import pytest

import kubetune
from kubetune.local.resources import ResourcePool


@pytest.fixture(autouse=True)
def _clean():
    yield
    kubetune.shutdown()


def test_init_caps_local_mode_resources_and_shutdown_forgets():
    assert not kubetune.is_initialized()
    assert kubetune.init(num_cpus=1, num_gpus=0) == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert kubetune.is_initialized()
    pool = ResourcePool()
    assert pool.total_cpu == 1.0
    assert pool.gpu_ids == []
    kubetune.shutdown()
    assert not kubetune.is_initialized()
    import os

    assert ResourcePool().total_cpu == float(os.cpu_count() or 1)


def test_init_runs_trials_within_its_cpu_limit(tmp_path):
    from kubetune import air, tune
    from kubetune.air import session

    def trainable(config):
        import time

        start = time.time()
        time.sleep(0.3)
        session.report({"x": config["x"], "start": start, "end": time.time()})

    kubetune.init(num_cpus=1, ignore_reinit_error=True)
    grid = tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search([1, 2, 3])},
        run_config=air.RunConfig(storage_path=str(tmp_path), name="init", verbose=0),
    ).fit()
    assert grid.num_errors == 0 and len(grid) == 3
    # one CPU: the trials ran one after another, never two at once
    spans = sorted((r.metrics["start"], r.metrics["end"]) for r in grid)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans


def test_a_ray_cluster_address_is_refused_with_the_way_to_the_cluster():
    with pytest.raises(ValueError, match="kubetune submit"):
        kubetune.init(address="ray://head:10001")
    kubetune.init(address="auto")  # Ray's "this machine" forms are fine


def test_bad_counts_and_ray_only_settings():
    with pytest.raises(ValueError, match="num_cpus"):
        kubetune.init(num_cpus=-1)
    with pytest.warns(UserWarning, match="object_store_mem"):
        kubetune.init(object_store_mem=1)
