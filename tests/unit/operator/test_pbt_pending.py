"""PBT on the operator's path: pods that stay Pending (no room on the nodes) are waiting
trials, so a member at a perturbation point pauses to give its place up, as in Ray."""

from __future__ import annotations

import json
from typing import Any

from kubetune_operator.controller import ExperimentRuntime, Observed
from kubetune_operator.plan import build_engine
from kubetune_operator.views import pod_view

from .test_controller import RecordingApi, build_pod, experiment, report


def _pod(api: RecordingApi, name: str, running: bool) -> dict[str, Any]:
    body = json.loads(json.dumps(api.pods[name]))
    if running:
        body["status"] = {
            "phase": "Running",
            "containerStatuses": [{"name": "trial", "state": {"running": {}}}],
        }
    else:
        body["status"] = {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        }
    return pod_view(body)


def test_a_member_pauses_at_its_perturbation_point_while_pods_are_pending(tmp_path: Any) -> None:
    from kubetune.storage import open_storage

    exp = experiment(
        numSamples=4,
        scheduler={
            "type": "pbt",
            "timeAttr": "training_iteration",
            "perturbationInterval": 2,
            "hyperparamMutations": {"x": {"uniform": {"lower": 0, "upper": 6}}},
        },
    )
    del exp["spec"]["tuneConfig"]["maxConcurrentTrials"]  # the cluster's room decides
    api = RecordingApi()
    rt = ExperimentRuntime(exp, build_engine(exp), open_storage(str(tmp_path)), api, build_pod)
    rt.start(0.0)
    rt.step(Observed({}, {}), 1.0)
    names = list(api.trials)
    assert len(names) == 4 and api.count("create_pod") == 4
    tracks = [rt.tracks[rt.by_object[n]] for n in names]
    # two pods run, two wait for a node
    pods = {tr.pod_name: _pod(api, tr.pod_name, running=i < 2) for i, tr in enumerate(tracks)}
    rt.step(Observed({}, pods), 2.0)
    first = names[0]
    results = [{"training_iteration": i, "loss": 1.0 + i} for i in (1, 2)]
    gate = {"seq": 1, "training_iteration": 2}
    rt.step(Observed({first: report(first, 1, results, gate)}, pods), 3.0)
    verdicts = [
        body[1]["spec"]["verdict"]
        for kind, body in api.calls
        if kind == "patch_trial" and body[0] == first and "verdict" in body[1].get("spec", {})
    ]
    assert verdicts and verdicts[-1]["seq"] == 1
    assert verdicts[-1]["action"] == "pause", verdicts
    assert rt.engine.trial_status(tracks[0].trial_id) == "PAUSED"
