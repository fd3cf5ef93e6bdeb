"""Fractional GPUs: mapped to a shared GPU resource (time-slicing/MPS units), never rounded."""

from __future__ import annotations

import copy

import pytest
from kubetune_operator.config import ConfigError, load
from kubetune_operator.gpu_share import SharedGpu, gpu_limit
from kubetune_operator.pod import PodSettings, build_trial_pod

from .test_pod import EXPERIMENT, TRIAL

WHOLE = "nvidia.com/gpu"
SHARED = SharedGpu("nvidia.com/gpu.shared", 2)


@pytest.mark.parametrize(
    ("bundles", "shared", "expected"),
    [
        ([{"CPU": 1}], SHARED, None),
        ([{"GPU": 1}], None, (WHOLE, 1)),
        ([{"GPU": 2}], SHARED, (WHOLE, 2)),  # whole GPUs stay whole devices
        ([{"GPU": 0.5}, {"GPU": 0.5}], None, (WHOLE, 1)),  # summed into one pod
        ([{"GPU": 0.5}], SHARED, ("nvidia.com/gpu.shared", 1)),
        ([{"GPU": 0.5}], SharedGpu("nvidia.com/gpu.shared", 4), ("nvidia.com/gpu.shared", 2)),
        ([{"GPU": 0.25}], SharedGpu("nvidia.com/gpu.shared", 4), ("nvidia.com/gpu.shared", 1)),
        ([{"GPU": 1}, {"GPU": 0.5}], SHARED, ("nvidia.com/gpu.shared", 3)),
        ([{"GPU": 0.1}] * 3, SharedGpu("x/gpu", 10), ("x/gpu", 3)),  # 0.30000000000000004
        # time-slicing without renaming: one resource, every GPU counts N units
        ([{"GPU": 1}], SharedGpu(WHOLE, 4), (WHOLE, 4)),
        ([{"GPU": 0.25}], SharedGpu(WHOLE, 4), (WHOLE, 1)),
    ],
)
def test_gpu_totals_map_to_whole_or_shared_units(bundles, shared, expected):
    assert gpu_limit(bundles, WHOLE, shared) == expected


def test_a_share_without_a_shared_resource_is_refused_naming_the_bundle():
    with pytest.raises(ValueError) as info:
        gpu_limit([{"CPU": 1}, {"GPU": 0.5}], WHOLE, None)
    assert str(info.value).startswith("spec.resources.bundles[1].GPU: 0.5 is a share of a GPU")


def test_a_share_that_is_no_whole_number_of_units_is_refused_not_rounded():
    with pytest.raises(ValueError) as info:
        gpu_limit([{"GPU": 0.3}], WHOLE, SHARED)
    message = str(info.value)
    assert message.startswith("spec.resources.bundles[0].GPU: the trial's 0.3 GPU is 0.6 units")
    assert "use a multiple of 0.5" in message


def test_the_pod_asks_for_the_shared_units_on_the_trial_container_with_the_gpu_toleration():
    trial = copy.deepcopy(TRIAL)
    trial["spec"]["resources"] = {"bundles": [{"CPU": 1, "GPU": 0.5}]}
    settings = PodSettings(shared_gpu_resource_name="nvidia.com/gpu.shared", shared_gpu_replicas=2)
    pod = build_trial_pod(EXPERIMENT, trial, 1, settings)
    sidecar = pod["spec"]["initContainers"][0]
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu.shared": "1"}
    assert "limits" not in sidecar["resources"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["KUBETUNE_SIDECAR_GPUS"] == "1"  # a share shows one device


def test_the_operator_takes_the_shared_resource_from_its_environment():
    env = {"KUBETUNE_SHARED_GPU_RESOURCE": "nvidia.com/gpu.shared"}
    with pytest.raises(ConfigError, match="KUBETUNE_SHARED_GPU_REPLICAS"):
        load([], env)
    config = load([], {**env, "KUBETUNE_SHARED_GPU_REPLICAS": "4"})
    settings = config.pod_settings()
    assert settings.shared_gpu() == SharedGpu("nvidia.com/gpu.shared", 4)
    assert load([], {}).pod_settings().shared_gpu() is None
