"""CUDA_VISIBLE_DEVICES in a trial container, from the device plugin's NVIDIA_VISIBLE_DEVICES."""

from __future__ import annotations

import pytest

from kubetune.trial.devices import plugin_devices, set_cuda_visible_devices


@pytest.mark.parametrize(
    ("nvidia", "cuda"),
    [
        ("GPU-8d2f,GPU-11aa", "0,1"),  # UUID strategy
        ("2,3", "0,1"),  # host indices: the container numbers its own devices from 0
        ("GPU-3", "0"),
    ],
)
def test_the_plugins_devices_become_the_containers_own_indices(nvidia: str, cuda: str) -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": nvidia}
    assert set_cuda_visible_devices(env) == cuda
    assert env == {"NVIDIA_VISIBLE_DEVICES": nvidia, "CUDA_VISIBLE_DEVICES": cuda}


@pytest.mark.parametrize("nvidia", [None, "", "all", "none", "void", " all "])
def test_no_list_from_a_plugin_sets_nothing(nvidia: str | None) -> None:
    env = {} if nvidia is None else {"NVIDIA_VISIBLE_DEVICES": nvidia}
    assert set_cuda_visible_devices(env) is None and "CUDA_VISIBLE_DEVICES" not in env
    assert plugin_devices(env) == []


@pytest.mark.parametrize("given", ["1", "", "GPU-8d2f"])
def test_a_value_already_set_is_kept(given: str) -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": "GPU-8d2f,GPU-11aa", "CUDA_VISIBLE_DEVICES": given}
    assert set_cuda_visible_devices(env) is None and env["CUDA_VISIBLE_DEVICES"] == given
