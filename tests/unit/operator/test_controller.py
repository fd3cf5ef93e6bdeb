"""The experiment runtime without a cluster: a recording API, local storage, fake pods."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubetune_operator.config import ConfigError, load
from kubetune_operator.controller import ExperimentRuntime, Observed
from kubetune_operator.objects import dns_name, kstatus, merge_conditions
from kubetune_operator.plan import BadSpec, build_engine
from kubetune_operator.views import pod_view


class RecordingApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.trials: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}

    def create_trial(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create_trial", body))
        body = {**body, "metadata": {**body["metadata"], "uid": "u-" + body["metadata"]["name"]}}
        self.trials[body["metadata"]["name"]] = body
        return body

    def patch_trial(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append(("patch_trial", (name, patch)))

    def patch_trial_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append(("patch_trial_status", (name, patch)))

    def create_pod(self, body: dict[str, Any]) -> None:
        self.calls.append(("create_pod", body))
        self.pods[body["metadata"]["name"]] = body

    def delete_pod(self, namespace: str, name: str, grace_s: int | None) -> None:
        self.calls.append(("delete_pod", name))

    def patch_experiment_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append(("patch_experiment_status", patch))

    def event(self, obj: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        self.calls.append(("event", reason))

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.calls if k == kind)


def experiment(**tune: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuneExperiment",
        "metadata": {"name": "exp", "namespace": "ns", "uid": "e-uid", "generation": 1},
        "spec": {
            "trainable": {"image": "img", "entrypoint": "m:f"},
            "paramSpace": {"x": {"uniform": {"lower": 0, "upper": 6}}},
            "tuneConfig": {
                "metric": "loss",
                "mode": "min",
                "numSamples": 3,
                "maxConcurrentTrials": 2,
                "seed": 1,
                **tune,
            },
            "runConfig": {"failureConfig": {"maxFailures": 1}},
            "storage": {"bucket": "b"},
        },
    }


def build_pod(exp: dict[str, Any], trial: dict[str, Any], attempt: int) -> dict[str, Any]:
    name = f"{trial['metadata']['name']}-{attempt}"
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"kubetune.io/experiment": "exp", "kubetune.io/attempt": str(attempt)},
            "ownerReferences": [{"kind": "TuneTrial", "name": trial["metadata"]["name"]}],
        },
        "spec": {},
    }


@pytest.fixture
def runtime(tmp_path: Any) -> tuple[ExperimentRuntime, RecordingApi]:
    from kubetune.storage import open_storage

    api = RecordingApi()
    exp = experiment()
    rt = ExperimentRuntime(exp, build_engine(exp), open_storage(str(tmp_path)), api, build_pod)
    rt.start(0.0)
    return rt, api


def pod(api: RecordingApi, name: str, phase: str, exit_code: int | None = None) -> dict[str, Any]:
    body = json.loads(json.dumps(api.pods[name]))
    status: dict[str, Any] = {"phase": phase}
    if exit_code is not None:
        status["containerStatuses"] = [
            {"name": "trial", "state": {"terminated": {"exitCode": exit_code}}}
        ]
    elif phase == "Running":
        status["containerStatuses"] = [{"name": "trial", "state": {"running": {}}}]
    body["status"] = status
    return pod_view(body)


def report(trial: str, attempt: int, results: list[dict[str, Any]], gate: Any = None) -> dict:
    return {"name": trial, "report": {"attempt": attempt, "results": results, "gate": gate}}


def test_trials_and_pods_are_created_within_the_concurrency_limit(runtime):
    rt, api = runtime
    rt.step(Observed({}, {}), 1.0)
    assert api.count("create_trial") == 2
    assert api.count("create_pod") == 2
    trial = api.calls[0][1]
    assert trial["metadata"]["ownerReferences"][0]["uid"] == "e-uid"
    assert trial["metadata"]["labels"]["kubetune.io/experiment"] == "exp"
    # Ray's tag, as local mode writes it in every result (index, then the sampled values)
    tag = trial["spec"]["experimentTag"]
    assert tag == rt.engine.trial_summary(trial["spec"]["trialId"])["experiment_tag"]
    assert tag.startswith("0_x=")
    assert rt.storage.exists("experiment_state.json")  # snapshot before the children


def test_results_complete_trials_and_the_experiment_succeeds(runtime):
    rt, api = runtime
    rt.step(Observed({}, {}), 1.0)
    for _ in range(4):
        trials, pods = {}, {}
        for name in list(api.trials):
            tr = rt.tracks[rt.by_object[name]]
            if not tr.pod_name:
                continue
            x = api.trials[name]["spec"]["config"]["x"]
            trials[name] = report(name, tr.attempt, [{"training_iteration": 1, "loss": x}])
            pods[tr.pod_name] = pod(api, tr.pod_name, "Succeeded", 0)
        rt.step(Observed(trials, pods), 2.0)
    assert rt.engine.is_finished()
    status = rt.status(1)
    assert status["phase"] == "Succeeded"
    assert status["trials"]["terminated"] == 3
    best = min(api.trials.values(), key=lambda t: t["spec"]["config"]["x"])
    assert status["bestTrial"]["name"] == best["metadata"]["name"]


def test_a_gate_is_answered_with_the_verdict(runtime):
    rt, api = runtime
    rt.step(Observed({}, {}), 1.0)
    name = next(iter(api.trials))
    tr = rt.tracks[rt.by_object[name]]
    view = report(
        name, 1, [{"training_iteration": 1, "loss": 1.0}], {"seq": 3, "training_iteration": 1}
    )
    rt.step(Observed({name: view}, {tr.pod_name: pod(api, tr.pod_name, "Running")}), 2.0)
    verdicts = [p for k, (n, p) in ((k, v) for k, v in api.calls if k == "patch_trial")]
    assert verdicts[-1]["spec"]["verdict"]["seq"] == 3
    assert verdicts[-1]["spec"]["verdict"]["action"] == "continue"


def test_a_failed_pod_is_retried_as_a_new_attempt(runtime):
    rt, api = runtime
    rt.step(Observed({}, {}), 1.0)
    name = next(iter(api.trials))
    tr = rt.tracks[rt.by_object[name]]
    first = tr.pod_name
    rt.step(Observed({}, {first: pod(api, first, "Running")}), 2.0)
    rt.step(Observed({}, {first: pod(api, first, "Failed", 137)}), 3.0)
    assert tr.attempt == 2 and tr.pod_name == f"{name}-2"
    rt.step(Observed({}, {f"{name}-2": pod(api, f"{name}-2", "Failed", 1)}), 4.0)
    assert rt.engine.trial_status(tr.trial_id) == "ERROR"  # max_failures = 1


def test_a_pod_deleted_by_someone_else_is_a_failure(runtime):
    rt, api = runtime
    rt.step(Observed({}, {}), 1.0)
    name = next(iter(api.trials))
    tr = rt.tracks[rt.by_object[name]]
    rt.step(Observed({}, {tr.pod_name: pod(api, tr.pod_name, "Running")}), 2.0)
    rt.step(Observed({}, {}), 3.0)
    assert tr.attempt == 2


def test_suspend_deletes_running_pods_and_starts_none(runtime):
    rt, api = runtime
    rt.step(Observed({}, {}), 1.0)
    pods = {t.pod_name: pod(api, t.pod_name, "Running") for t in rt.tracks.values()}
    rt.step(Observed({}, pods), 2.0, suspend=True)
    assert api.count("delete_pod") == 2
    assert rt.status(1)["phase"] == "Suspended"
    rt.step(Observed({}, {}), 3.0, suspend=True)
    assert api.count("create_pod") == 2
    rt.step(Observed({}, {}), 4.0, suspend=False)
    assert api.count("create_pod") == 4


def test_bad_specs_name_the_field():
    exp = experiment()
    # 2 workers need the trainer's bundle and one per worker
    exp["spec"]["resources"] = {"bundles": [{"CPU": 1}, {"CPU": 1}], "workers": 2}
    with pytest.raises(BadSpec, match=r"spec\.resources\.workers"):
        build_engine(exp)
    exp = experiment()
    del exp["spec"]["trainable"]["image"]
    with pytest.raises(BadSpec, match=r"spec\.trainable\.image"):
        build_engine(exp)


def test_cli_and_environment():
    cfg = load(
        ["--namespace", "a", "--namespace", "b", "--standalone"],
        {
            "KUBETUNE_EXTENDED_RESOURCES": '{"TPU": "google.com/tpu"}',
            "KUBETUNE_IMAGE_PULL_SECRETS": "r1, r2",
            "KUBETUNE_DEFAULT_S3_BUCKET": "bk",
        },
    )
    assert cfg.namespaces == ["a", "b"] and cfg.standalone
    assert cfg.extended_resources == {"TPU": "google.com/tpu"}
    assert cfg.image_pull_secrets == ["r1", "r2"]
    assert cfg.default_storage == {"bucket": "bk"}
    assert cfg.gpu_resource_name == "nvidia.com/gpu"
    assert cfg.trial_service_account == "kubetune-trial"
    with pytest.raises(ConfigError):
        load([], {"KUBETUNE_EXTENDED_RESOURCES": "[1]"})
    with pytest.raises(ConfigError):
        load(["--peering", "p", "--standalone"], {})


def test_names_and_conditions():
    import re

    assert dns_name("exp", "t1") == "exp-t1"
    assert re.fullmatch(r"exp-abc-00001-[0-9a-f]{6}", dns_name("Exp", "abc_00001"))
    long = dns_name("e" * 80, "t")
    assert len(long) <= 63
    old = kstatus("Running", "TrialsRunning", "m", 1)
    new = merge_conditions(old, kstatus("Running", "TrialsRunning", "m2", 2))
    assert [c["lastTransitionTime"] for c in new] == [c["lastTransitionTime"] for c in old]


def test_the_snapshot_is_written_in_segments_and_read_back_whole(tmp_path):
    from kubetune_operator.controller import SEGMENT_TRIALS
    from kubetune_operator.plan import restore_engine

    from kubetune.storage import open_storage

    api = RecordingApi()
    exp = experiment(numSamples=2 * SEGMENT_TRIALS + 6, maxConcurrentTrials=10)
    storage = open_storage(str(tmp_path))
    rt = ExperimentRuntime(exp, build_engine(exp), storage, api, build_pod)
    rt.start(0.0)
    rt.step(Observed({}, {}), 1.0)
    while not rt.engine.is_finished():
        trials, pods = {}, {}
        for name, tr in ((n, rt.tracks[rt.by_object[n]]) for n in api.trials):
            if tr.pod_name and tr.pod_live:
                x = api.trials[name]["spec"]["config"]["x"]
                trials[name] = report(name, tr.attempt, [{"training_iteration": 1, "loss": x}])
                pods[tr.pod_name] = pod(api, tr.pod_name, "Succeeded", 0)
        rt.step(Observed(trials, pods), 2.0)
    rt.save_snapshot()
    head = json.loads(storage.get_bytes("experiment_state.json"))
    assert len(head["engine"]["segments"]) == 2
    assert len(head["engine"]["trials"]) == 6  # the rest live in the two segments
    saved = ExperimentRuntime.load_snapshot(storage)
    assert saved is not None
    state, segments, sealed = saved
    assert state["engine"] == json.loads(rt.engine.to_json())
    assert segments == head["engine"]["segments"] and len(sealed) == 2 * SEGMENT_TRIALS
    again = restore_engine(exp, state)
    assert again.counts() == rt.engine.counts() and again.best_trial() == rt.engine.best_trial()


def test_resources_a_resume_carries_go_to_the_trials_next_pod(runtime):
    """ResourceChangingScheduler's reallocation (ResumeTrial.resources): the TuneTrial's spec,
    which the pod builder reads, asks for the new resources from the next attempt on."""
    from kubetune.engine import ResumeTrial

    rt, api = runtime
    rt.step(Observed({}, {}), 1.0)
    name = next(iter(api.trials))
    tr = rt.tracks[rt.by_object[name]]
    first = tr.pod_name
    new = {"bundles": [{"CPU": 3.0}], "strategy": "PACK"}
    rt.pending.append(ResumeTrial(tr.trial_id, tr.spec["config"], None, resources=new))
    rt.step(Observed({}, {first: pod(api, first, "Running")}), 2.0)
    assert tr.spec["resources"] == new
    rt.step(Observed({}, {first: pod(api, first, "Failed", 143)}), 3.0)
    assert tr.pod_name == f"{name}-2"
    patches = [p for k, (n, p) in ((k, v) for k, v in api.calls if k == "patch_trial") if n == name]
    assert patches[-1]["spec"]["resources"] == new
