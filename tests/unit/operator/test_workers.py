"""Multi-worker trials on the operator's side: the pods of an attempt (pure builder) and the
runtime following them (a recording API, local storage, fake pod views)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubetune_operator.controller import ExperimentRuntime, Observed
from kubetune_operator.plan import build_engine
from kubetune_operator.pod import PodSettings, build_trial_pod
from kubetune_operator.views import pod_view
from kubetune_operator.workers import build_trial_pods

from kubetune.air.config import ScalingConfig
from kubetune.tune.resources import PlacementGroupFactory, worker_bundles

from .test_controller import RecordingApi, experiment, report
from .test_pod import EXPERIMENT, TRIAL


def _trial(resources: dict[str, Any]) -> dict[str, Any]:
    trial = copy.deepcopy(TRIAL)
    trial["spec"]["resources"] = resources
    return trial


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_scaling_config_is_rays_placement_group():
    pgf = ScalingConfig(num_workers=3, use_gpu=True).as_placement_group_factory()
    assert pgf.bundles == [{}, {"GPU": 1}, {"GPU": 1}, {"GPU": 1}]
    assert pgf.to_dict()["workers"] == 3 and pgf.num_workers == 3
    assert PlacementGroupFactory.from_dict(pgf.to_dict()) == pgf
    cpu = ScalingConfig(num_workers=2, trainer_resources={"CPU": 1})
    assert worker_bundles(cpu.as_placement_group_factory().to_dict()) == [{"CPU": 2}, {"CPU": 1}]
    with pytest.raises(ValueError, match="use_gpu"):
        ScalingConfig(resources_per_worker={"GPU": 1})
    with pytest.raises(ValueError, match="num_workers"):
        ScalingConfig(num_workers=0)
    with pytest.raises(ValueError, match="placement_strategy"):
        ScalingConfig(placement_strategy="ROUND_ROBIN")


def test_the_worker_layout_of_placement_groups():
    spread = {"bundles": [{"CPU": 1}, {"GPU": 1}, {"GPU": 1}], "strategy": "SPREAD"}
    assert worker_bundles(spread) == [{"CPU": 1, "GPU": 1}, {"GPU": 1}]
    pack = {**spread, "strategy": "PACK"}
    assert worker_bundles(pack) == [{"CPU": 1, "GPU": 2}]  # one pod, as before
    assert worker_bundles({"bundles": [{"CPU": 2}], "strategy": "STRICT_SPREAD"}) == [{"CPU": 2}]


def test_a_single_worker_trial_is_one_pod_as_before():
    assert build_trial_pods(EXPERIMENT, TRIAL, 2, PodSettings()) == [
        build_trial_pod(EXPERIMENT, TRIAL, 2, PodSettings())
    ]


def test_three_workers_are_three_pods_with_the_rendezvous_env():
    resources = {
        "bundles": [{"CPU": 1}, {"CPU": 2, "GPU": 1}, {"CPU": 2, "GPU": 1}, {"CPU": 2, "GPU": 1}],
        "strategy": "STRICT_SPREAD",
        "workers": 3,
    }
    pods = build_trial_pods(EXPERIMENT, _trial(resources), 2, PodSettings())
    assert [p["metadata"]["name"] for p in pods] == [
        "mnist-00001-2",
        "mnist-00001-2-w1",
        "mnist-00001-2-w2",
    ]
    for rank, pod in enumerate(pods):
        labels = pod["metadata"]["labels"]
        assert labels["kubetune.io/rank"] == str(rank)
        assert labels["kubetune.io/attempt"] == "2" and labels["kubetune.io/trial"] == "mnist-00001"
        assert pod["metadata"]["ownerReferences"][0]["uid"] == "trial-uid"
        trial, sidecar = pod["spec"]["containers"][0], pod["spec"]["initContainers"][0]
        env = _env(trial)
        assert env["WORLD_SIZE"] == "3" and env["RANK"] == str(rank)
        assert env["NODE_RANK"] == str(rank) and env["LOCAL_RANK"] == "0"
        assert env["LOCAL_WORLD_SIZE"] == "1" and env["MASTER_PORT"] == "29500"
        assert env["EPOCHS"] == "3"  # the user's env stays
        # rank 0: CPU 1 (trainer) + CPU 2 (worker 0)
        cpu = "3" if rank == 0 else "2"
        assert trial["resources"] == {"requests": {"cpu": cpu}, "limits": {"nvidia.com/gpu": "1"}}
        side = _env(sidecar)
        spec = json.loads(side["KUBETUNE_SIDECAR_TRIAL_SPEC"])
        assert spec["resources"] == resources  # get_trial_resources(): the whole trial's
        anti = pod["spec"]["affinity"]["podAntiAffinity"]
        (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == {
            "kubetune.io/trial": "mnist-00001",
            "kubetune.io/attempt": "2",
        }
        if rank == 0:
            assert env["MASTER_ADDR"] == {"fieldRef": {"fieldPath": "status.podIP"}}
            assert "KUBETUNE_SIDECAR_ROLE" not in side
        else:
            assert "MASTER_ADDR" not in env
            assert env["KUBETUNE_RENDEZVOUS_FILE"] == "/kubetune/rendezvous.json"
            assert side["KUBETUNE_SIDECAR_ROLE"] == "worker"
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert "secretKeyRef" not in json.dumps(trial)  # credentials stay in the sidecar


def test_spread_is_preferred_and_pack_is_affinity():
    bundles = [{"CPU": 1}, {"CPU": 1}, {"CPU": 1}]
    spread = build_trial_pods(
        EXPERIMENT, _trial({"bundles": bundles, "strategy": "SPREAD"}), 1, PodSettings()
    )
    assert len(spread) == 2  # bundle 0 is the trainer's: with worker 0
    pref = spread[1]["spec"]["affinity"]["podAntiAffinity"]
    assert pref["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 100
    pack = {"bundles": bundles, "strategy": "STRICT_PACK", "workers": 2}
    pods = build_trial_pods(EXPERIMENT, _trial(pack), 1, PodSettings())
    assert (
        "requiredDuringSchedulingIgnoredDuringExecution"
        in pods[0]["spec"]["affinity"]["podAffinity"]
    )


def test_a_fractional_gpu_per_worker_pod_is_refused_naming_the_field():
    resources = {"bundles": [{}, {"GPU": 0.5}, {"GPU": 0.5}], "strategy": "SPREAD", "workers": 2}
    with pytest.raises(ValueError, match=r"spec\.resources"):
        build_trial_pods(EXPERIMENT, _trial(resources), 1, PodSettings())


# -- the runtime ----------------------------------------------------------------------------
def _build(exp: dict[str, Any], trial: dict[str, Any], attempt: int) -> list[dict[str, Any]]:
    return build_trial_pods(exp, trial, attempt, PodSettings())


@pytest.fixture
def gang(tmp_path):
    from kubetune.storage import open_storage

    api = RecordingApi()
    exp = experiment(numSamples=1, maxConcurrentTrials=1)
    exp["spec"]["resources"] = {
        "bundles": [{}, {"CPU": 1}, {"CPU": 1}, {"CPU": 1}],
        "strategy": "SPREAD",
        "workers": 3,
    }
    rt = ExperimentRuntime(exp, build_engine(exp), open_storage(str(tmp_path)), api, _build)
    rt.start(0.0)
    rt.step(Observed({}, {}), 1.0)
    return rt, api


def _view(api: RecordingApi, name: str, phase: str, code: int | None = None, ip: str = "") -> Any:
    body = json.loads(json.dumps(api.pods[name]))
    status: dict[str, Any] = {"phase": phase}
    if ip:
        status["podIP"] = ip
    if code is not None:
        status["containerStatuses"] = [
            {"name": "trial", "state": {"terminated": {"exitCode": code}}}
        ]
    elif phase == "Running":
        status["containerStatuses"] = [{"name": "trial", "state": {"running": {}}}]
    body["status"] = status
    return pod_view(body)


def _all_running(rt: ExperimentRuntime, api: RecordingApi) -> tuple[Any, list[str], dict[str, Any]]:
    """The gang's trial, its pods' names (rank 0 first) and their views, all three running
    (rank 0 at 10.0.0.7) and observed at t=2."""
    (tr,) = rt.tracks.values()
    names = [tr.pod_name, f"{tr.pod_name}-w1", f"{tr.pod_name}-w2"]
    pods = {n: _view(api, n, "Running", ip="10.0.0.7") for n in names}
    rt.step(Observed({}, pods), 2.0)
    return tr, names, pods


def _disrupted_view(api: RecordingApi, name: str, reason: str) -> Any:
    """The running pod ``name`` marked as a disruption target (``reason``) and being deleted."""
    body = json.loads(json.dumps(api.pods[name]))
    body["status"] = {
        "phase": "Running",
        "containerStatuses": [{"name": "trial", "state": {"running": {}}}],
        "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": reason}],
    }
    body["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    return pod_view(body)


def _workers_status(api: RecordingApi) -> list[dict[str, Any]]:
    return [
        p["status"]["workers"]
        for k, (n, p) in ((k, v) for k, v in api.calls if k == "patch_trial_status")
        if "workers" in p["status"]
    ]


def test_an_attempt_is_created_as_all_its_pods_and_publishes_rank_0s_address(gang):
    rt, api = gang
    names = [b["metadata"]["name"] for k, b in api.calls if k == "create_pod"]
    (tr,) = rt.tracks.values()
    assert names == [tr.pod_name, f"{tr.pod_name}-w1", f"{tr.pod_name}-w2"]
    pods = {n: _view(api, n, "Pending") for n in names}
    pods[names[0]] = _view(api, names[0], "Running", ip="10.0.0.7")
    rt.step(Observed({}, pods), 2.0)
    assert _workers_status(api)[-1] == {
        "attempt": 1,
        "total": 3,
        "running": 1,
        "ready": "1/3",
        "masterAddr": "10.0.0.7",
        "message": None,
    }
    pods[names[1]] = _view(api, names[1], "Running", ip="10.0.0.7")
    rt.step(Observed({}, pods), 2.5)
    assert len(_workers_status(api)) == 1  # 2 of 3 running: nothing new to say
    pods = {n: _view(api, n, "Running", ip="10.0.0.7") for n in names}
    rt.step(Observed({}, pods), 3.0)
    assert _workers_status(api)[-1]["ready"] == "3/3"
    writes = len(api.calls)
    rt.step(Observed({}, pods), 4.0)
    assert len(api.calls) == writes  # nothing changed: nothing written


def test_a_failed_worker_restarts_every_pod_as_the_next_attempt(gang):
    rt, api = gang
    tr, first, pods = _all_running(rt, api)
    pods[first[2]] = _view(api, first[2], "Failed", 1)
    rt.step(Observed({}, pods), 3.0)
    deleted = [n for k, n in api.calls if k == "delete_pod"]
    assert set(deleted) == {first[0], first[1]}  # rank 2 ended by itself
    assert rt.engine.trial_summary(tr.trial_id)["num_failures"] == 1
    # rank 0's pod ends (deleted): the next attempt is all three pods again
    del pods[first[0]]
    pods[first[1]] = _view(api, first[1], "Failed", 143)
    rt.step(Observed({}, pods), 4.0)
    assert tr.attempt == 2
    created = [b["metadata"]["name"] for k, b in api.calls if k == "create_pod"]
    assert created[-3:] == [tr.pod_name, f"{tr.pod_name}-w1", f"{tr.pod_name}-w2"]
    assert tr.pod_name.endswith("-2")
    assert rt.engine.trial_summary(tr.trial_id)["num_failures"] == 1  # counted once


def test_rank_0s_end_deletes_the_workers_still_running(gang):
    rt, api = gang
    tr, names, pods = _all_running(rt, api)
    pods[names[0]] = _view(api, names[0], "Succeeded", 0)
    pods[names[1]] = _view(api, names[1], "Succeeded", 0)
    rt.step(Observed({}, pods), 3.0)
    assert [n for k, n in api.calls if k == "delete_pod"] == [names[2]]
    assert rt.engine.trial_status(tr.trial_id) == "TERMINATED"


def test_a_vanished_worker_fails_the_attempt(gang):
    rt, api = gang
    tr, names, pods = _all_running(rt, api)
    del pods[names[1]]
    rt.step(Observed({}, pods), 3.0)
    assert rt.engine.trial_summary(tr.trial_id)["num_failures"] == 1
    assert ("event", "TrialAttemptFailed") in api.calls


def test_a_preempted_worker_restarts_every_pod_without_a_failure(gang):
    rt, api = gang
    tr, names, pods = _all_running(rt, api)
    pods[names[2]] = _disrupted_view(api, names[2], "PreemptionByScheduler")
    rt.step(Observed({}, pods), 3.0)
    summary = rt.engine.trial_summary(tr.trial_id)
    assert summary["num_failures"] == 0 and summary["num_preemptions"] == 1
    assert ("event", "TrialPreempted") in api.calls
    assert ("event", "TrialAttemptFailed") not in api.calls
    deleted = {n for k, n in api.calls if k == "delete_pod"}
    assert {names[0], names[1]} <= deleted  # the whole gang goes; the next attempt restarts it


def test_the_next_attempt_after_a_preempted_worker_shows_running_not_the_ending_one(gang):
    """While the preempted attempt's pods are being deleted the trial waits (PENDING) for
    its next attempt: the old rank 0, still running, must not make it RUNNING (then the
    next attempt's start would never say so, and the trial stayed PENDING while it ran), nor
    must a late result of it that makes the engine RUNNING keep the next attempt from saying
    RUNNING."""
    rt, api = gang
    tr, names, pods = _all_running(rt, api)
    pods[names[1]] = _disrupted_view(api, names[1], "EvictionByEvictionAPI")
    rt.step(Observed({}, pods), 3.0)
    rt.step(Observed({}, pods), 4.0)  # the old gang still there, being deleted
    assert rt.engine.trial_status(tr.trial_id) == "PENDING"
    # a result rank 0 reported before it stopped reaches the engine late (it is RUNNING then)
    late = report(tr.obj_name, 1, [{"training_iteration": 1, "loss": 0.5}])
    rt.step(Observed({tr.obj_name: late}, pods), 4.5)
    assert rt.engine.trial_status(tr.trial_id) == "RUNNING"
    rt.step(Observed({}, {}), 5.0)  # gone: the next attempt's pods are made
    assert tr.attempt == 2
    mark = len(api.calls)
    second = [tr.pod_name, f"{tr.pod_name}-w1", f"{tr.pod_name}-w2"]
    rt.step(Observed({}, {n: _view(api, n, "Running", ip="10.0.0.8") for n in second}), 6.0)
    phases = [
        p["status"]["phase"]
        for k, (n, p) in ((k, v) for k, v in api.calls[mark:] if k == "patch_trial_status")
        if "phase" in p["status"]
    ]
    assert phases == ["RUNNING"]
    assert rt.engine.trial_summary(tr.trial_id)["num_failures"] == 0


def test_an_attempts_pods_are_one_kueue_pod_group():
    from kubetune_operator import kueue

    exp = copy.deepcopy(EXPERIMENT)
    exp["spec"]["queueName"] = "team-a"
    resources = {"bundles": [{}, {"CPU": 1}, {"CPU": 1}], "strategy": "SPREAD", "workers": 2}
    pods = build_trial_pods(exp, _trial(resources), 3, PodSettings())
    groups = {p["metadata"]["labels"].get(kueue.GROUP_NAME_LABEL) for p in pods}
    assert len(pods) == 2 and len(groups) == 1 and None not in groups
    for p in pods:
        assert p["metadata"]["labels"][kueue.QUEUE_LABEL] == "team-a"
        assert p["metadata"]["annotations"][kueue.GROUP_COUNT_ANNOTATION] == "2"
    # a one-pod trial is its own Workload: queued, no group
    (single,) = build_trial_pods(exp, _trial({"bundles": [{"CPU": 1}]}), 3, PodSettings())
    assert kueue.GROUP_NAME_LABEL not in single["metadata"]["labels"]
    assert single["metadata"]["labels"][kueue.QUEUE_LABEL] == "team-a"


def test_a_restarted_operator_adopts_the_workers_of_the_running_attempt(gang, tmp_path):
    rt, api = gang
    tr, names, pods = _all_running(rt, api)
    # a new operator: same engine state, the pods it lists
    again = ExperimentRuntime(rt.experiment, rt.engine, rt.storage, api, _build)
    again.restore(Observed({}, pods), 3.0)
    tr2 = again.tracks[tr.trial_id]
    assert tr2.pod_name == names[0]  # rank 0's pod, not a worker's
    assert again.gangs[tr.trial_id].workers == names[1:]
    pods[names[2]] = _view(api, names[2], "Failed", 1)
    again.step(Observed({}, pods), 4.0)
    assert again.engine.trial_summary(tr.trial_id)["num_failures"] == 1
    assert {n for k, n in api.calls if k == "delete_pod"} >= {names[0], names[1]}
