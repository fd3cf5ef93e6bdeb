"""Local mode packs fractional-GPU trials onto one GPU, as Ray does."""

from __future__ import annotations

import pytest

from kubetune import tune
from kubetune.local.resources import ResourceError, ResourcePool
from kubetune.tune.resources import PlacementGroupFactory

from . import trainables as T
from .test_tuner import fit


def pgf(gpu: float, cpu: float = 0.0) -> PlacementGroupFactory:
    return PlacementGroupFactory([{"CPU": cpu, "GPU": gpu}])


def test_shares_pack_onto_the_first_gpu_with_room_and_whole_gpus_need_an_idle_one():
    pool = ResourcePool(cpus=8, gpus=[0, 1])
    assert pool.try_acquire(pgf(0.5)) == [0]
    assert pool.try_acquire(pgf(0.25)) == [0]
    assert pool.try_acquire(pgf(1)) == [1]  # GPU 0 is partly taken: not whole any more
    assert pool.try_acquire(pgf(0.5)) is None  # 0.25 left on 0, nothing on 1
    assert pool.try_acquire(pgf(0.25)) == [0]
    assert pool.free_gpus == []
    pool.release(pgf(0.5), [0])
    assert pool.free_share[0] == pytest.approx(0.5)
    assert pool.try_acquire(pgf(1)) is None
    pool.release(pgf(0.25), [0])
    pool.release(pgf(0.25), [0])
    assert pool.free_gpus == [0]
    assert pool.try_acquire(pgf(1)) == [0]


def test_half_bundles_that_sum_to_one_take_a_whole_gpu_and_above_one_gpus_are_whole():
    pool = ResourcePool(cpus=8, gpus=[0, 1])
    two_halves = PlacementGroupFactory([{"CPU": 1, "GPU": 0.5}, {"GPU": 0.5}])
    assert pool.try_acquire(two_halves) == [0]
    assert pool.free_gpus == [1]
    with pytest.raises(ResourceError, match=r"needs 1\.5 GPUs: above one, GPUs must be whole"):
        pool.check_fits(pgf(1.5), "the trial")
    pool.check_fits(pgf(0.5), "the trial")
    with pytest.raises(ResourceError, match=r"needs 0\.5 GPUs but this machine has 0"):
        ResourcePool(cpus=1, gpus=[]).check_fits(pgf(0.5), "the trial")


def test_two_half_gpu_trials_share_gpu_0_at_the_same_time(two_gpus):
    results = fit(
        tune.with_resources(T.reports_gpu_and_time, {"cpu": 0.5, "gpu": 0.5}),
        param_space={"k": tune.grid_search([1, 2])},
    )
    rows = [r.metrics for r in results]
    assert [r["cuda"] for r in rows] == ["0", "0"]  # packed, GPU 1 left idle
    first, second = sorted(rows, key=lambda r: r["began"])
    assert second["began"] < first["ended"]  # at the same time, not one after the other
