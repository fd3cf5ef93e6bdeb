"""PBT on a cluster with room for half of the population (issue 14).

The node fits 2 of the 4 trial pods: the other two stay Pending. Ray's PBT pauses a member at
its perturbation point while others wait for resources, so the population trains in turns;
before, Pending pods did not count as waiting and the first two members trained to the end
before the other two could start.
"""

from __future__ import annotations

from typing import Any

from tests.cluster.operator_helpers import (
    crds,  # noqa: F401  (a fixture operator_process needs)
    create_experiment,
    example_experiment,
    operator_process,  # noqa: F401  (a fixture)
    pbt_tune_config,
    stored_results,
    trial_objects,
    wait_succeeded,
)
from tests.testenv.helpers import s3_secret


def test_pbt_pauses_members_while_pods_wait_for_room(
    kube_api: Any,
    namespace: str,
    kubelet_factory: Any,
    s3_server: Any,
    s3_bucket: str,
    operator_process: Any,  # noqa: F811  (the fixture imported above)
) -> None:
    from tests.testenv.kubelet import NodeSpec

    kubelet_factory(NodeSpec(cpu="8"))  # 3 CPUs a trial: two pods fit, two stay Pending
    s3_secret(kube_api, namespace, s3_server)
    body = example_experiment(
        "pbt-pending",
        "pbt:Optimiser",
        s3_server,
        s3_bucket,
        resources={"bundles": [{"CPU": 3}]},
        paramSpace={
            "lr": {"uniform": {"lower": 0.01, "upper": 0.5}},
            "step_s": {"constant": 0.05},
        },
        tuneConfig=pbt_tune_config(3),
        runConfig={
            "stop": {"training_iteration": 9},
            "checkpointConfig": {"checkpointFrequency": 1},
        },
    )
    create_experiment(kube_api, namespace, body)
    operator_process()
    wait_succeeded(kube_api, namespace, "pbt-pending", 240, operator_process)
    trials = trial_objects(kube_api, namespace)
    assert len(trials) == 4
    assert [t["status"]["report"].get("iteration") for t in trials] == [9, 9, 9, 9]
    for t in trials:  # every member gave its place up (or was exploited) at least once
        assert t["status"]["attempts"] > 1, t["status"]
        name = t["metadata"]["name"]
        rows = stored_results(s3_server, s3_bucket, f"pbt-pending/{name}/result.json")
        assert any(r["iterations_since_restore"] < r["training_iteration"] for r in rows)
