"""The experiment loop end to end without a cluster: a recording API whose pods "run" at once,
local storage, and a write that fails mid-experiment (the loop must rebuild, not guess)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from kubetune_operator import loop
from kubetune_operator.api import ApiError
from kubetune_operator.config import OperatorConfig
from kubetune_operator.state import OperatorState
from kubetune_operator.views import pod_view, trial_view

from .test_controller import RecordingApi, experiment


class ClusterApi(RecordingApi):
    """RecordingApi plus what the loop's setup reads; creates are idempotent (409 = done)."""

    def __init__(self, fail_status_patch: int) -> None:
        super().__init__()
        self.fail_at = fail_status_patch
        self.status_patches = 0
        self.lock = threading.Lock()
        self.experiment_status: dict[str, Any] = {}

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        return {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}

    def ensure(self, body: dict[str, Any]) -> None:
        pass

    def create_trial(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            have = self.trials.get(body["metadata"]["name"])
            return have if have is not None else super().create_trial(body)

    def create_pod(self, body: dict[str, Any]) -> None:
        with self.lock:
            if body["metadata"]["name"] not in self.pods:
                super().create_pod(body)

    def patch_trial_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        with self.lock:
            if patch["status"].get("podName"):  # the patch that names a new attempt's pod
                self.status_patches += 1
                if self.status_patches == self.fail_at:
                    raise ApiError(500, "injected: etcd timed out")
        super().patch_trial_status(namespace, name, patch)

    def patch_experiment_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.experiment_status = patch["status"]
        super().patch_experiment_status(namespace, name, patch)

    def list_trials(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(json.dumps(t)) for t in self.trials.values()]

    def list_pods(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(json.dumps(p)) for p in self.pods.values()]


def kubelet(api: ClusterApi, state: OperatorState, stop: threading.Event) -> None:
    """Every new pod runs at once: one result in its TuneTrial's report (as the sidecar's last
    report says it), then the pod Succeeds; both reach the store as the watches would."""
    key = ("ns", "exp")
    done: set[str] = set()
    while not stop.is_set():
        with api.lock:
            pods = [json.loads(json.dumps(p)) for p in api.pods.values()]
        for pod in pods:
            name = pod["metadata"]["name"]
            if name in done:
                continue
            done.add(name)
            owner = pod["metadata"]["ownerReferences"][0]["name"]
            attempt = int(pod["metadata"]["labels"]["kubetune.io/attempt"])
            trial = json.loads(json.dumps(api.trials[owner]))
            x = trial["spec"]["config"]["x"]
            trial["status"] = {
                "report": {
                    "attempt": attempt,
                    "results": [{"training_iteration": 1, "loss": x}],
                    "firstResult": 0,
                    "resultCount": 1,
                    "uploaded": True,
                    "exit": {"status": "finished"},
                }
            }
            pod["status"] = {
                "phase": "Succeeded",
                "containerStatuses": [{"name": "trial", "state": {"terminated": {"exitCode": 0}}}],
            }
            state.store.put_trial(key, trial_view(trial))
            state.store.put_pod(key, pod_view(pod))
        time.sleep(0.01)


@pytest.mark.timeout(60)
def test_a_failed_write_rebuilds_the_loop_and_the_experiment_still_finishes(tmp_path, monkeypatch):
    from kubetune.storage import open_storage

    monkeypatch.setattr(
        loop, "open_experiment_storage", lambda *_: open_storage(str(tmp_path / "store"))
    )
    monkeypatch.setattr(loop, "TICK_S", 0.05)
    setups: list[int] = []
    real_setup = loop.setup
    monkeypatch.setattr(loop, "setup", lambda *a: setups.append(1) or real_setup(*a))

    api = ClusterApi(fail_status_patch=3)  # the third trial's PENDING/attempt/pod patch fails
    state = OperatorState(config=OperatorConfig(default_storage={"bucket": "b"}), api=api)
    body = experiment(numSamples=6, maxConcurrentTrials=2)
    stop = threading.Event()
    runner = threading.Thread(target=kubelet, args=(api, state, stop), daemon=True)
    runner.start()
    try:
        loop.run_experiment(body, stop.is_set, state)
    finally:
        stop.set()
        runner.join(5)

    assert len(setups) == 2  # set up once, rebuilt once after the failed write
    assert api.experiment_status["phase"] == "Succeeded"
    assert api.experiment_status["trials"]["terminated"] == 6
    assert len(api.trials) == 6  # no trial created twice under another name
    pods_per_trial = {name: 0 for name in api.trials}
    for pod in api.pods.values():
        pods_per_trial[pod["metadata"]["ownerReferences"][0]["name"]] += 1
    assert set(pods_per_trial.values()) == {1}  # and none ran twice
    # every TuneTrial's status names its attempt and pod and ends TERMINATED, also the one
    # whose writes failed (the rebuild repairs what the objects lack)
    for name in api.trials:
        patches = [
            args[1]["status"]
            for kind, args in api.calls
            if kind == "patch_trial_status" and args[0] == name
        ]
        assert any(p.get("attempts") == 1 and p.get("podName") for p in patches), (name, patches)
        assert [p["phase"] for p in patches if "phase" in p][-1] == "TERMINATED", patches
    best = min(api.trials.values(), key=lambda t: t["spec"]["config"]["x"])
    assert api.experiment_status["bestTrial"]["name"] == best["metadata"]["name"]
