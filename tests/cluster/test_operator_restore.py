"""spec.restoreFrom against the real control plane, S3 server and sidecar: a user stops an
experiment mid-way, deletes it, and continues it as a new TuneExperiment (Tuner.restore)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

import pytest

from tests.cluster import operator_helpers
from tests.cluster.operator_helpers import (
    GROUP,
    VERSION,
    counting_experiment,
    create_experiment,
    get_experiment,
    phase_of,
    stored_results,
    trial_objects,
    wait_succeeded,
)
from tests.testenv.helpers import s3_secret, wait_for

crds = operator_helpers.crds  # fixtures
operator_process = operator_helpers.operator_process

SHORT, LONG = 3, 20  # steps of trials with x <= 2, and of the others


def staggered(config: dict[str, Any]) -> None:
    """Trials with a small x finish quickly, the others take long; a checkpoint per step, and
    each result says which step the attempt restored from. Lower x is better."""
    from kubetune.air import Checkpoint, session

    start = 0
    ckpt = session.get_checkpoint()
    if ckpt is not None:
        with open(os.path.join(ckpt.path, "state.json")) as f:
            start = json.load(f)["i"]
    for i in range(start, SHORT if config["x"] <= 2 else LONG):
        time.sleep(config["sleep"])
        d = tempfile.mkdtemp()
        with open(os.path.join(d, "state.json"), "w") as f:
            json.dump({"i": i + 1}, f)
        session.report(
            {"loss": config["x"] + 1 / (i + 1), "restored_from": start},
            checkpoint=Checkpoint.from_directory(d),
        )


def staggered_experiment(name: str, bucket: str, endpoint: str) -> dict[str, Any]:
    body = counting_experiment(
        name,
        bucket,
        endpoint,
        paramSpace={"x": {"gridSearch": [1, 2, 3, 4]}, "sleep": {"constant": 0.3}},
    )
    body["spec"]["trainable"]["entrypoint"] = "tests.cluster.test_operator_restore:staggered"
    body["spec"]["tuneConfig"].update(numSamples=1, maxConcurrentTrials=2)
    return body


@pytest.mark.parametrize("suspend_first", [True, False], ids=["suspended-then-deleted", "deleted"])
def test_restore_from_continues_a_deleted_experiment(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process, suspend_first
):
    from kubernetes import client

    custom = client.CustomObjectsApi(kube_api)
    core = client.CoreV1Api(kube_api)
    s3 = s3_server.client()
    s3_secret(kube_api, namespace, s3_server)
    create_experiment(
        kube_api, namespace, staggered_experiment("first", s3_bucket, s3_server.endpoint_url)
    )
    operator_process()

    def midway() -> bool:
        trials = trial_objects(kube_api, namespace)
        done = [t for t in trials if (t.get("status") or {}).get("phase") == "TERMINATED"]
        running = [t for t in trials if t not in done]
        return (
            len(trials) == 4
            and len(done) == 2
            and all(
                ((t.get("status") or {}).get("report") or {}).get("iteration", 0) >= 3
                and ((t.get("status") or {}).get("report") or {}).get("latestCheckpoint")
                for t in running
            )
        )

    try:
        wait_for(midway, 120, "two trials done, two with checkpoints")
    except AssertionError:
        print(operator_process.log.read_text()[-5000:])
        raise
    old_uri = get_experiment(kube_api, namespace, "first")["status"]["storageUri"]
    assert old_uri == f"s3://{s3_bucket}/first"
    if suspend_first:
        # The user pauses the experiment (its running trials stop, their checkpoints stay),
        # then deletes it, e.g. to move the experiment to another namespace or cluster.
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "tuneexperiments",
            "first",
            {"spec": {"suspend": True}},
            _content_type="application/merge-patch+json",
        )
        wait_for(
            lambda: (
                phase_of(kube_api, namespace, "first") == "Suspended"
                and all(
                    p.status.phase in ("Succeeded", "Failed")
                    for p in core.list_namespaced_pod(namespace).items
                )
            ),
            60,
            "Suspended, no pod running",
        )
    # Deleted while trials run: their pods go with it, and the operator must not count
    # them as lost (they would be ERROR in the snapshot that restoreFrom reads).
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "tuneexperiments", "first")
    wait_for(
        lambda: (
            not trial_objects(kube_api, namespace) and not core.list_namespaced_pod(namespace).items
        ),
        60,
        "the deleted experiment's trials and pods to go",
    )
    old_state = s3.get_object(Bucket=s3_bucket, Key="first/experiment_state.json")["Body"].read()
    old_trials = {t["trial_id"]: t for t in json.loads(old_state)["engine"]["trials"]}
    finished = {t for t, rec in old_trials.items() if rec["status"] == "TERMINATED"}
    unfinished = {t for t, rec in old_trials.items() if rec["status"] == "RUNNING"}
    assert len(finished) == 2 and len(unfinished) == 2, old_trials

    body = staggered_experiment("second", s3_bucket, s3_server.endpoint_url)
    body["spec"]["restoreFrom"] = old_uri
    began = time.monotonic()
    create_experiment(kube_api, namespace, body)
    wait_succeeded(kube_api, namespace, "second", 120, operator_process)
    print(f"continued in {time.monotonic() - began:.1f} s")

    status = get_experiment(kube_api, namespace, "second")["status"]
    assert status["trials"]["total"] == 4 and status["trials"]["terminated"] == 4
    assert status["storageUri"] == f"s3://{s3_bucket}/second"
    trials = {t["spec"]["trialId"]: t for t in trial_objects(kube_api, namespace)}
    assert set(trials) == set(old_trials)  # the same trials, no new ones
    assert all(t["status"]["phase"] == "TERMINATED" for t in trials.values())
    # finished trials ran no pod; unfinished ones one each
    pods = core.list_namespaced_pod(namespace, label_selector="kubetune.io/experiment=second")
    owners = sorted(p.metadata.owner_references[0].name for p in pods.items)
    assert owners == sorted(trials[t]["metadata"]["name"] for t in unfinished)
    for trial_id, trial in trials.items():
        key = f"second/{trial['metadata']['name']}/result.json"
        rows = stored_results(s3_server, s3_bucket, key)
        x = trial["spec"]["config"]["x"]
        assert rows[-1]["training_iteration"] == (SHORT if x <= 2 else LONG)
        if trial_id in unfinished:
            # resumed from its checkpoint (a deleted experiment's pods may run on while they
            # are garbage-collected, and even finish: then nothing is left to run)
            assert rows[-1]["restored_from"] >= 3 or (
                not suspend_first and rows[-1]["restored_from"] == 0
            )
            assert trial["spec"]["restoreFrom"].startswith(f"s3://{s3_bucket}/second/")
        else:
            assert trial["status"]["reason"] == "Restored"
    best = min(trials.values(), key=lambda t: t["spec"]["config"]["x"])
    assert best["spec"]["trialId"] in finished  # finished in the earlier run, still the best
    assert status["bestTrial"]["name"] == best["metadata"]["name"]
    assert status["bestTrial"]["metric"] == 1 + 1 / SHORT
    assert status["bestTrial"]["checkpoint"].startswith(f"s3://{s3_bucket}/second/")
    # the earlier tree was only read
    again = s3.get_object(Bucket=s3_bucket, Key="first/experiment_state.json")["Body"].read()
    assert again == old_state


def test_a_missing_restore_from_snapshot_stalls_and_creates_nothing(
    kube_api, namespace, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    s3_secret(kube_api, namespace, s3_server)
    body = staggered_experiment("orphan", s3_bucket, s3_server.endpoint_url)
    body["spec"]["restoreFrom"] = f"s3://{s3_bucket}/never-ran"
    create_experiment(kube_api, namespace, body)
    operator_process()
    wait_for(lambda: phase_of(kube_api, namespace, "orphan") == "Failed", 60, "Stalled")
    status = get_experiment(kube_api, namespace, "orphan")["status"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert "spec.restoreFrom" in stalled["message"]
    assert f"s3://{s3_bucket}/never-ran" in stalled["message"]
    assert trial_objects(kube_api, namespace) == []
    assert client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items == []
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    assert listed == []  # nothing written either
