"""What ``kubetune submit`` and the operator refuse: user code the operator does not run,
shipped code from outside the experiment's storage, a submission without an image when none
is configured; and, with the trial base image configured, trials without an image run it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster import operator_helpers, submit_helpers
from tests.cluster.operator_helpers import get_experiment, phase_of
from tests.cluster.submit_helpers import (
    PREFIX,
    README_EXAMPLE,
    REPORT_BEST,
    best_of,
    experiment_exists,
    s3_keys,
    submit,
    write,
)
from tests.testenv.helpers import s3_secret, wait_for

crds = operator_helpers.crds  # fixtures
operator_process = operator_helpers.operator_process
cluster_env = submit_helpers.cluster_env


# -- refusals -------------------------------------------------------------------------------
def test_a_refused_experiment_creates_nothing(
    cluster_env, tmp_path, kube_api, namespace, s3_server, s3_bucket
):
    script = write(
        tmp_path / "refuse" / "tune_refused.py",
        """
        from kubetune import air, tune
        from kubetune.air import session
        from kubetune.search import Searcher

        class MySearcher(Searcher):
            def suggest(self, trial_id):
                return {"x": 1}

        def trainable(config):
            session.report({"score": 1})

        tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=MySearcher(), num_samples=1),
            run_config=air.RunConfig(name="refused"),
        ).fit()
        """,
    )
    proc = submit(script, cluster_env)
    assert proc.returncode != 0
    assert "MySearcher is user code, which the operator does not run" in proc.stderr
    assert "OptunaSearch" in proc.stderr
    assert not experiment_exists(kube_api, namespace, "refused")
    assert s3_keys(s3_server, s3_bucket, f"{PREFIX}/refused/") == {}


# -- the operator refuses shipped URIs outside the experiment's storage -----------------------
def test_code_from_outside_the_storage_stalls_naming_the_field(
    kube_api, namespace, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    s3_secret(kube_api, namespace, s3_server)
    body = operator_helpers.experiment("elsewhere", s3_bucket, s3_server.endpoint_url)
    body["spec"]["storage"]["prefix"] = "team-a"
    body["spec"]["trainable"] = {
        "entrypoint": "shipped:trainable",
        "codeFrom": f"s3://{s3_bucket}/team-b/their-experiment/.kubetune/code",
    }
    operator_helpers.create_experiment(kube_api, namespace, body)
    operator_process()
    wait_for(lambda: phase_of(kube_api, namespace, "elsewhere") == "Failed", 60, "Stalled")
    status = get_experiment(kube_api, namespace, "elsewhere")["status"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert stalled["message"].startswith("spec.trainable.codeFrom: ")
    assert f"s3://{s3_bucket}/team-a/" in stalled["message"]
    trials = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        "kubetune.io", "v1alpha1", namespace, "tunetrials"
    )["items"]
    assert trials == []
    assert client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items == []


# -- no image anywhere: the trials run the trial base image the operator names ---------------
@pytest.fixture
def trial_base_image(monkeypatch: Any) -> str:
    """The operator's trial base image (the chart's trial.sidecarImage), set before the
    operator starts."""
    monkeypatch.setenv("KUBETUNE_SIDECAR_IMAGE", "kubetune/trial:base")
    return "kubetune/trial:base"


def test_without_an_image_the_trials_run_the_trial_base_image(
    trial_base_image, cluster_env, tmp_path, kube_api, namespace
):
    from kubernetes import client

    env = {k: v for k, v in cluster_env.items() if k != "KUBETUNE_IMAGE"}
    script = write(
        tmp_path / "noimage" / "tune_noimage.py",
        README_EXAMPLE.replace('name="readme"', 'name="noimage"') + REPORT_BEST,
    )
    theirs = best_of(submit(script, env))
    assert theirs["n"] == 6
    spec = get_experiment(kube_api, namespace, "noimage")["spec"]
    assert "image" not in spec["trainable"] and spec["trainable"]["codeFrom"]
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items
    assert pods
    for pod in pods:
        images = {c.image for c in [*pod.spec.init_containers, *pod.spec.containers]}
        assert images == {trial_base_image}, images


def test_a_submission_the_operator_refuses_fails_with_its_reason(cluster_env, tmp_path):
    """No image given and none configured on the operator: the experiment stalls, and fit()
    raises with the operator's message (not an empty result)."""
    env = {k: v for k, v in cluster_env.items() if k != "KUBETUNE_IMAGE"}
    script = write(
        tmp_path / "stall" / "tune_stall.py",
        README_EXAMPLE.replace('name="readme"', 'name="stalled"'),
    )
    proc = submit(script, env)
    assert proc.returncode != 0
    assert "the operator did not run" in proc.stderr and "spec.trainable.image" in proc.stderr
