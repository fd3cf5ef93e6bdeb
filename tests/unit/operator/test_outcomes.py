"""What a finished experiment reports when trials errored, and specs no pod can be built for."""

from __future__ import annotations

from typing import Any

import pytest
from kubetune_operator.controller import ExperimentRuntime, Observed
from kubetune_operator.loop import probe_pod
from kubetune_operator.plan import BadSpec, build_engine
from kubetune_operator.pod import PodSettings, build_trial_pod, pod_resources

from kubetune.storage import open_storage

from .test_controller import RecordingApi, build_pod, experiment, pod, report


def run_to_the_end(tmp_path: Any, fails: Any) -> tuple[ExperimentRuntime, RecordingApi]:
    """Each attempt reports one result, then its pod ends (exit 1 where ``fails(x)``)."""
    api = RecordingApi()
    exp = experiment()
    exp["spec"]["runConfig"] = {"failureConfig": {"maxFailures": 0}}
    rt = ExperimentRuntime(exp, build_engine(exp), open_storage(str(tmp_path)), api, build_pod)
    rt.start(0.0)
    rt.step(Observed({}, {}), 1.0)
    for i in range(6):
        trials, pods = {}, {}
        for name in list(api.trials):
            tr = rt.tracks[rt.by_object[name]]
            if not tr.pod_name or not tr.pod_live:
                continue
            x = api.trials[name]["spec"]["config"]["x"]
            trials[name] = report(name, tr.attempt, [{"training_iteration": 1, "loss": x}])
            failed = fails(x)
            pods[tr.pod_name] = pod(
                api, tr.pod_name, "Failed" if failed else "Succeeded", int(failed)
            )
        rt.step(Observed(trials, pods), 2.0 + i)
    assert rt.engine.is_finished()
    return rt, api


def test_an_experiment_whose_every_trial_errored_is_failed_not_succeeded(tmp_path):
    rt, _ = run_to_the_end(tmp_path, lambda x: True)
    status = rt.status(1)
    assert status["trials"]["error"] == 3 and status["trials"]["terminated"] == 0
    assert status["phase"] == "Failed"
    assert status["_reason"] == "AllTrialsErrored"
    assert status["message"].startswith("all 3 trials ended in ERROR; exp-")
    # Ray's semantics stay in the engine: fit() would return a ResultGrid with 3 errors
    assert rt.engine.finished.status == "SUCCEEDED"


def test_some_errored_trials_still_succeed_and_say_how_many(tmp_path):
    seen: list[float] = []

    def first_fails(x: float) -> bool:  # the first trial to end errors, the others finish
        seen.append(x)
        return x == seen[0]

    rt, _ = run_to_the_end(tmp_path, first_fails)
    status = rt.status(1)
    assert status["trials"]["error"] == 1 and status["trials"]["terminated"] == 2
    assert status["phase"] == "Succeeded"
    assert "(1 of 3 trials errored)" in status["message"]


def test_a_spec_no_pod_can_be_built_for_is_a_bad_spec_before_anything_is_created():
    exp = experiment()
    exp["spec"]["resources"] = {"bundles": [{"CPU": 1, "FPGA": 1}]}  # not in the operator's map
    engine = build_engine(exp)
    settings = PodSettings(extended_resources={"TPU": "google.com/tpu"})

    def build(e: dict[str, Any], trial: dict[str, Any], attempt: int) -> dict[str, Any]:
        return build_trial_pod(e, trial, attempt, settings)

    with pytest.raises(BadSpec) as info:
        probe_pod(exp, engine, build)
    assert str(info.value).startswith("spec.resources: bundle key 'FPGA' maps to no Kubernetes")


def test_fractional_extended_resources_are_refused_naming_the_field():
    exp = experiment()
    exp["spec"]["resources"] = {"bundles": [{"CPU": 1, "TPU": 0.5}]}
    with pytest.raises(BadSpec) as info:
        build_engine(exp)
    assert str(info.value).startswith("spec.resources.bundles: TPU sums to 0.5")
    settings = PodSettings(extended_resources={"TPU": "google.com/tpu"})
    with pytest.raises(ValueError, match=r"spec\.resources: TPU must be a whole number"):
        pod_resources({"bundles": [{"TPU": 1.5}]}, settings)  # the builder refuses it as well


def test_a_gpu_share_without_a_shared_gpu_resource_stalls_naming_the_field():
    """The CRD cannot know the chart's trial.sharedGpuResourceName: the operator refuses
    a fraction of a GPU before any trial is created (the experiment stalls with this)."""
    exp = experiment()
    exp["spec"]["resources"] = {"bundles": [{"CPU": 1}, {"CPU": 1, "GPU": 0.5}]}
    engine = build_engine(exp)  # the manifest itself is fine
    with pytest.raises(BadSpec) as info:
        probe_pod(exp, engine, lambda e, t, a: build_trial_pod(e, t, a, PodSettings()))
    assert str(info.value).startswith("spec.resources.bundles[1].GPU: 0.5 is a share of a GPU")
    assert "trial.sharedGpuResourceName" in str(info.value)
    shared = PodSettings(shared_gpu_resource_name="nvidia.com/gpu.shared", shared_gpu_replicas=2)
    probe_pod(exp, engine, lambda e, t, a: build_trial_pod(e, t, a, shared))  # configured: fine


def test_the_probe_passes_a_spec_that_runs():
    exp = experiment()
    exp["spec"]["resources"] = {"bundles": [{"CPU": 0.5, "GPU": 0.5}, {"GPU": 0.5}]}
    probe_pod(exp, build_engine(exp), lambda e, t, a: build_trial_pod(e, t, a, PodSettings()))
