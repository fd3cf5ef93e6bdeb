"""The operator's trials across attempts: a killed pod retried from its checkpoint, ASHA's early
stops, suspend and resume."""

from __future__ import annotations

from tests.cluster import operator_helpers
from tests.cluster.operator_helpers import (
    GROUP,
    VERSION,
    counting_experiment,
    create_experiment,
    phase_of,
    reported_three,
    retry_experiment,
    stored_results,
    trial_objects,
    wait_succeeded,
)
from tests.testenv.helpers import s3_secret, wait_for

crds = operator_helpers.crds  # fixtures
operator_process = operator_helpers.operator_process


def test_a_killed_trial_pod_is_retried_from_its_checkpoint(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    s3_secret(kube_api, namespace, s3_server)
    create_experiment(kube_api, namespace, retry_experiment("retry", s3_server, s3_bucket))
    operator_process()
    wait_for(lambda: reported_three(kube_api, namespace), 90, "three results and a checkpoint")
    trial = trial_objects(kube_api, namespace)[0]
    client.CoreV1Api(kube_api).delete_namespaced_pod(
        trial["status"]["podName"], namespace, grace_period_seconds=0
    )
    wait_succeeded(kube_api, namespace, "retry", 120, operator_process)
    trial = trial_objects(kube_api, namespace)[0]
    assert trial["status"]["attempts"] == 2
    assert trial["status"]["phase"] == "TERMINATED"
    rows = stored_results(s3_server, s3_bucket, f"retry/{trial['metadata']['name']}/result.json")
    assert rows[-1]["training_iteration"] == 8
    assert rows[-1]["restored_from"] >= 1  # the second attempt started from a checkpoint
    assert trial["spec"]["restoreFrom"].startswith(f"s3://{s3_bucket}/retry/")


def test_asha_stops_trials_early(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process
):
    s3_secret(kube_api, namespace, s3_server)
    body = counting_experiment(
        "asha",
        s3_bucket,
        s3_server.endpoint_url,
        paramSpace={
            "x": {"gridSearch": [1, 2, 4, 8, 16, 32]},
            "n": {"constant": 9},
            "sleep": {"constant": 0.05},
        },
    )
    body["spec"]["tuneConfig"].update(
        numSamples=1,
        maxConcurrentTrials=3,
        scheduler={"type": "asha", "maxT": 9, "gracePeriod": 1, "reductionFactor": 3},
    )
    create_experiment(kube_api, namespace, body)
    operator_process()
    wait_succeeded(kube_api, namespace, "asha", 150, operator_process)
    iterations = [t["status"]["report"]["iteration"] for t in trial_objects(kube_api, namespace)]
    assert len(iterations) == 6
    assert min(iterations) < 9  # stopped early at a rung
    assert max(iterations) == 9


def test_suspend_pauses_running_trials_and_resume_finishes(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    s3_secret(kube_api, namespace, s3_server)
    body = counting_experiment(
        "susp",
        s3_bucket,
        s3_server.endpoint_url,
        paramSpace={"x": {"gridSearch": [1, 2]}, "n": {"constant": 10}, "sleep": {"constant": 0.3}},
    )
    body["spec"]["tuneConfig"].update(numSamples=1)
    create_experiment(kube_api, namespace, body)
    operator_process()
    custom = client.CustomObjectsApi(kube_api)
    core = client.CoreV1Api(kube_api)

    def running_with_results() -> bool:
        trials = trial_objects(kube_api, namespace)
        return len(trials) == 2 and all(
            ((t.get("status") or {}).get("report") or {}).get("iteration", 0) >= 2 for t in trials
        )

    wait_for(running_with_results, 90, "two trials with results")
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "tuneexperiments",
        "susp",
        {"spec": {"suspend": True}},
        _content_type="application/merge-patch+json",
    )
    wait_for(lambda: phase_of(kube_api, namespace, "susp") == "Suspended", 30, "Suspended")
    wait_for(
        lambda: all(
            p.status.phase in ("Succeeded", "Failed")
            for p in core.list_namespaced_pod(namespace).items
        ),
        60,
        "no running pod while suspended",
    )
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "tuneexperiments",
        "susp",
        {"spec": {"suspend": False}},
        _content_type="application/merge-patch+json",
    )
    wait_succeeded(kube_api, namespace, "susp", 120)
    for trial in trial_objects(kube_api, namespace):
        assert trial["status"]["attempts"] == 2
        rows = stored_results(s3_server, s3_bucket, f"susp/{trial['metadata']['name']}/result.json")
        assert rows[-1]["training_iteration"] == 10
        assert rows[-1]["restored_from"] >= 2  # resumed from its checkpoint
