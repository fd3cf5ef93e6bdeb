"""The trial pod builder against expected objects."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubetune_operator.pod import PodSettings, build_trial_pod

from kubetune.trial.spec import TrialSpec

EXPERIMENT: dict[str, Any] = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "TuneExperiment",
    "metadata": {"name": "mnist", "namespace": "ml", "uid": "exp-uid"},
    "spec": {
        "trainable": {
            "image": "registry.example/mnist:1",
            "entrypoint": "train:fn",
            "env": [{"name": "EPOCHS", "value": "3"}],
            "imagePullPolicy": "IfNotPresent",
            "pythonPath": ["/app"],
        },
        "tuneConfig": {"metric": "acc", "mode": "max"},
        "runConfig": {
            "stop": {"training_iteration": 10},
            "checkpointConfig": {"numToKeep": 2, "checkpointScoreAttribute": "acc"},
        },
        "storage": {
            "bucket": "b",
            "prefix": "runs",
            "endpoint": "http://s3:8333",
            "secretName": "s3-creds",
            "addressingStyle": "path",
        },
    },
}

TRIAL: dict[str, Any] = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "TuneTrial",
    "metadata": {
        "name": "mnist-00001",
        "namespace": "ml",
        "uid": "trial-uid",
        "annotations": {"kubetune.io/trial-name": "fn_00001"},
    },
    "spec": {
        "experiment": "mnist",
        "trialId": "00001",
        "config": {"lr": 0.1},
        "resources": {"bundles": [{"CPU": 1, "memory": 2**30}, {"CPU": 0.5}], "strategy": "PACK"},
        "restoreFrom": None,
        "decisionPoints": {"milestones": [1, 3, 9]},
        "checkpointIndexStart": 0,
    },
}

SPEC_EXPECTED = {
    "trial_id": "00001",
    "trial_name": "fn_00001",
    "experiment_name": "mnist",
    "experiment_tag": None,
    "trainable": "train:fn",
    "config": {"lr": 0.1},
    "out_dir": "/kubetune/out",
    "params_dir": None,
    "restore_from": None,
    "stop": {"training_iteration": 10},
    "checkpoint_frequency": 0,
    "checkpoint_at_end": False,
    "resources": {"bundles": [{"CPU": 1, "memory": 2**30}, {"CPU": 0.5}], "strategy": "PACK"},
    "chdir_to_trial_dir": True,
    "decision_points": {"milestones": [1, 3, 9]},
    "gate": {"kind": "file", "dir": "/kubetune/gate"},
    "done_marker": "/kubetune/done",
    "python_path": ["/app"],
    "checkpoint_index_start": 0,
    "termination_grace_s": 60,
}

TOKEN_VOLUME = {
    "name": "kubetune-api-token",
    "projected": {
        "defaultMode": 0o444,
        "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
            {
                "configMap": {
                    "name": "kube-root-ca.crt",
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                }
            },
            {
                "downwardAPI": {
                    "items": [
                        {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                    ]
                }
            },
        ],
    },
}


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _secret(key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": "s3-creds", "key": key}
    if optional:
        ref["optional"] = True
    return {"name": key, "valueFrom": {"secretKeyRef": ref}}


EXPECTED_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "mnist-00001-2",
        "labels": {
            "kubetune.io/experiment": "mnist",
            "kubetune.io/trial": "mnist-00001",
            "kubetune.io/attempt": "2",
        },
        "ownerReferences": [
            {
                "apiVersion": "kubetune.io/v1alpha1",
                "kind": "TuneTrial",
                "name": "mnist-00001",
                "uid": "trial-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
        "namespace": "ml",
    },
    "spec": {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "serviceAccountName": "kubetune-trial",
        "terminationGracePeriodSeconds": 60,
        "initContainers": [
            {
                "name": "kubetune-sidecar",
                "image": "registry.example/mnist:1",
                "command": ["python", "-m", "kubetune.sidecar"],
                "restartPolicy": "Always",
                "env": [
                    _env("KUBETUNE_SIDECAR_ROOT", "/kubetune"),
                    _env("KUBETUNE_SIDECAR_STORAGE_URI", "s3://b/runs/mnist/mnist-00001"),
                    _env("KUBETUNE_SIDECAR_TRIAL_SPEC", json.dumps(SPEC_EXPECTED)),
                    _env("KUBETUNE_SIDECAR_TRIAL", "mnist-00001"),
                    _env("KUBETUNE_SIDECAR_ATTEMPT", "2"),
                    {
                        "name": "KUBETUNE_SIDECAR_POD",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                    },
                    _env("KUBETUNE_SIDECAR_REPORT_INTERVAL_S", "0.5"),
                    _env("KUBETUNE_SIDECAR_GRACE_S", "60"),
                    _env("KUBETUNE_SIDECAR_METRIC", "acc"),
                    _env("KUBETUNE_SIDECAR_NUM_TO_KEEP", "2"),
                    _env("KUBETUNE_SIDECAR_DELETE_STORED", "0"),
                    _env("KUBETUNE_SIDECAR_SCORE_ATTRIBUTE", "acc"),
                    _env("KUBETUNE_SIDECAR_SCORE_ORDER", "max"),
                    _env("NVIDIA_VISIBLE_DEVICES", "void"),  # the sidecar needs no GPU
                    _env("KUBETUNE_S3_ENDPOINT_URL", "http://s3:8333"),
                    _env("KUBETUNE_S3_ADDRESSING_STYLE", "path"),
                    _secret("AWS_ACCESS_KEY_ID"),
                    _secret("AWS_SECRET_ACCESS_KEY"),
                    _secret("AWS_SESSION_TOKEN", optional=True),
                ],
                "volumeMounts": [
                    {"name": "kubetune", "mountPath": "/kubetune"},
                    {
                        "name": "kubetune-api-token",
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        "readOnly": True,
                    },
                ],
                "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}},
                "startupProbe": {
                    "exec": {"command": ["python", "-m", "kubetune.sidecar", "--probe"]},
                    "periodSeconds": 1,
                    "timeoutSeconds": 5,
                    "failureThreshold": 3600,
                },
                "securityContext": {"allowPrivilegeEscalation": False},
                "imagePullPolicy": "IfNotPresent",
            }
        ],
        "containers": [
            {
                "name": "trial",
                "image": "registry.example/mnist:1",
                "command": ["python", "-m", "kubetune.trial"],
                "env": [
                    {"name": "EPOCHS", "value": "3"},
                    _env("KUBETUNE_TRIAL_SPEC", "/kubetune/trial.json"),
                    # no GPU requested: none of the node's, whatever the image says
                    _env("NVIDIA_VISIBLE_DEVICES", "void"),
                ],
                "volumeMounts": [{"name": "kubetune", "mountPath": "/kubetune"}],
                "imagePullPolicy": "IfNotPresent",
                "resources": {
                    "requests": {"cpu": "1500m", "memory": str(2**30)},
                    "limits": {"memory": str(2**30)},
                },
            }
        ],
        "volumes": [{"name": "kubetune", "emptyDir": {}}, TOKEN_VOLUME],
    },
}


def test_plain_cpu_trial_pod_matches_the_expected_object() -> None:
    pod = build_trial_pod(EXPERIMENT, TRIAL, 2, PodSettings())
    assert pod == EXPECTED_POD


def test_the_trial_spec_is_a_valid_trial_spec() -> None:
    pod = build_trial_pod(EXPERIMENT, TRIAL, 0, PodSettings())
    env = {e["name"]: e.get("value") for e in pod["spec"]["initContainers"][0]["env"]}
    spec = TrialSpec.from_dict(json.loads(env["KUBETUNE_SIDECAR_TRIAL_SPEC"]))
    assert spec.trainable == "train:fn" and spec.gate == {"kind": "file", "dir": "/kubetune/gate"}
    assert spec.termination_grace_s == 60  # the runner's window to checkpoint on SIGTERM
    exp = copy.deepcopy(EXPERIMENT)
    exp["spec"]["podTemplate"] = {"terminationGracePeriodSeconds": 300}
    pod = build_trial_pod(exp, TRIAL, 0, PodSettings())
    env = {e["name"]: e.get("value") for e in pod["spec"]["initContainers"][0]["env"]}
    assert json.loads(env["KUBETUNE_SIDECAR_TRIAL_SPEC"])["termination_grace_s"] == 300


def test_gpu_trial_restoring_with_template_and_no_secret() -> None:
    exp = copy.deepcopy(EXPERIMENT)
    del exp["spec"]["storage"]["secretName"]
    exp["spec"]["storage"]["caBundleSecretName"] = "s3-ca"
    exp["spec"]["tuneConfig"]["chdirToTrialDir"] = False
    exp["spec"]["trainable"]["args"] = ["--verbose"]
    exp["spec"]["trainable"]["workingDir"] = "/app"
    exp["spec"]["trainable"]["imagePullSecrets"] = [{"name": "regcred"}]
    exp["spec"]["podTemplate"] = {
        "metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}},
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
        "priorityClassName": "high",
        "serviceAccountName": "trainer",
        "securityContext": {"runAsNonRoot": True},
        "containerSecurityContext": {"readOnlyRootFilesystem": True},
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "terminationGracePeriodSeconds": 120,
    }
    trial = copy.deepcopy(TRIAL)
    trial["spec"]["resources"] = {"bundles": [{"CPU": 2, "GPU": 1}, {"GPU": 1, "TPU": 4}]}
    trial["spec"]["restoreFrom"] = "s3://b/runs/mnist/mnist-00001/checkpoint_000004"
    trial["spec"]["parametersFrom"] = "s3://b/runs/mnist/_params"
    trial["spec"]["checkpointIndexStart"] = 5
    settings = PodSettings(
        sidecar_image="kubetune/sidecar:1",
        gpu_resource_name="amd.com/gpu",
        extended_resources={"TPU": "google.com/tpu"},
        report_interval_s=0.25,
    )
    pod = build_trial_pod(exp, trial, 0, settings)
    spec = pod["spec"]
    side, main = spec["initContainers"][0], spec["containers"][0]
    assert main["resources"] == {
        "requests": {"cpu": "2"},
        "limits": {"amd.com/gpu": "2", "google.com/tpu": "4"},
    }
    assert "resources" not in side or "amd.com/gpu" not in json.dumps(side["resources"])
    assert spec["tolerations"] == [
        {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]
    assert spec["nodeSelector"] == {"pool": "gpu"} and spec["affinity"] == {"nodeAffinity": {}}
    assert spec["priorityClassName"] == "high" and spec["serviceAccountName"] == "trainer"
    assert spec["securityContext"] == {"runAsNonRoot": True}
    assert spec["terminationGracePeriodSeconds"] == 120
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert "shareProcessNamespace" not in spec
    assert pod["metadata"]["labels"]["team"] == "a"
    assert pod["metadata"]["annotations"] == {"note": "x"}
    assert main["securityContext"] == {"readOnlyRootFilesystem": True}
    assert main["args"] == ["--verbose"] and main["workingDir"] == "/app"
    assert main["volumeMounts"][1] == {"name": "data", "mountPath": "/data"}
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data"}} in spec["volumes"]
    assert side["image"] == "kubetune/sidecar:1" and "imagePullPolicy" not in side
    env = {e["name"]: e for e in side["env"]}
    assert not any("secretKeyRef" in json.dumps(e) for e in side["env"])  # ambient identity
    assert env["KUBETUNE_SIDECAR_RESTORE_FROM"]["value"].endswith("checkpoint_000004")
    assert env["KUBETUNE_SIDECAR_PARAMS_FROM"]["value"] == "s3://b/runs/mnist/_params"
    assert env["KUBETUNE_SIDECAR_GPUS"]["value"] == "2"
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "void"
    trial_env = {e["name"]: e.get("value") for e in main["env"]}
    # the GPU container samples its own GPUs and leaves the device list to the plugin
    assert trial_env["KUBETUNE_TRIAL_GPUS"] == "2" and "NVIDIA_VISIBLE_DEVICES" not in trial_env
    assert env["KUBETUNE_SIDECAR_GRACE_S"]["value"] == "120"
    assert env["KUBETUNE_SIDECAR_REPORT_INTERVAL_S"]["value"] == "0.25"
    assert env["KUBETUNE_S3_VERIFY"]["value"] == "/etc/kubetune/s3-ca/ca.crt"
    assert {"name": "kubetune-s3-ca", "mountPath": "/etc/kubetune/s3-ca", "readOnly": True} in side[
        "volumeMounts"
    ]
    trial_spec = json.loads(env["KUBETUNE_SIDECAR_TRIAL_SPEC"]["value"])
    assert trial_spec["restore_from"] == "/kubetune/restore"
    assert trial_spec["params_dir"] == "/kubetune/params"
    assert trial_spec["checkpoint_index_start"] == 5
    assert trial_spec["chdir_to_trial_dir"] is False


def test_only_the_sidecar_holds_token_and_credentials() -> None:
    pod = build_trial_pod(EXPERIMENT, TRIAL, 0, PodSettings())
    main = pod["spec"]["containers"][0]
    assert "secretKeyRef" not in json.dumps(main)
    assert all(m["name"] == "kubetune" for m in main["volumeMounts"])
    assert pod["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("strategy", ["SPREAD", "STRICT_SPREAD"])
def test_the_pod_of_one_spread_worker_sums_its_bundles(strategy: str) -> None:
    # build_trial_pod builds one pod from the bundles it is given; a multi-worker trial's
    # pods are built one by one (tests/unit/operator/test_workers.py)
    trial = copy.deepcopy(TRIAL)
    trial["spec"]["resources"]["strategy"] = strategy
    pod = build_trial_pod(EXPERIMENT, trial, 0, PodSettings())
    assert pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "1500m"


def test_unknown_resource_and_fractional_gpu_are_refused() -> None:
    trial = copy.deepcopy(TRIAL)
    trial["spec"]["resources"] = {"bundles": [{"CPU": 1, "FPGA": 1}]}
    with pytest.raises(ValueError, match="FPGA"):
        build_trial_pod(EXPERIMENT, trial, 0, PodSettings())
    trial["spec"]["resources"] = {"bundles": [{"GPU": 0.5}]}
    with pytest.raises(ValueError, match=r"^spec\.resources\.bundles\[0\]\.GPU: 0\.5 is a share"):
        build_trial_pod(EXPERIMENT, trial, 0, PodSettings())  # no shared GPU resource set


def test_no_image_or_bucket_is_refused() -> None:
    exp = copy.deepcopy(EXPERIMENT)
    del exp["spec"]["storage"]
    with pytest.raises(ValueError, match="bucket"):
        build_trial_pod(exp, TRIAL, 0, PodSettings())
    pod = build_trial_pod(exp, TRIAL, 0, PodSettings(default_storage={"bucket": "d"}))
    env = {e["name"]: e.get("value") for e in pod["spec"]["initContainers"][0]["env"]}
    assert env["KUBETUNE_SIDECAR_STORAGE_URI"] == "s3://d/mnist/mnist-00001"
    del exp["spec"]["trainable"]["image"]
    with pytest.raises(ValueError, match="image"):
        build_trial_pod(exp, TRIAL, 0, PodSettings(default_storage={"bucket": "d"}))


def test_a_device_list_the_user_sets_on_a_cpu_trial_is_kept() -> None:
    trial = copy.deepcopy(TRIAL)
    experiment = copy.deepcopy(EXPERIMENT)
    experiment["spec"]["trainable"]["env"] = [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "none"}]
    pod = build_trial_pod(experiment, trial, 0, PodSettings())
    (main,) = pod["spec"]["containers"]
    values = [e["value"] for e in main["env"] if e["name"] == "NVIDIA_VISIBLE_DEVICES"]
    assert values == ["none"]
