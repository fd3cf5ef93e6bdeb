"""The trial pod (DESIGN.md §3.2): a pure builder, no API calls.

Its layout is the sidecar's contract (see ``kubetune.sidecar`` for the environment it reads):

- one shared ``emptyDir`` at ``/kubetune``: ``trial.json`` (the trial spec, written by the
  sidecar once inputs are restored), ``restore/``, ``params/``, ``out/``, ``gate/``, ``done``;
- the sidecar: a native sidecar (init container, ``restartPolicy: Always``) whose startup
  probe (``python -m kubetune.sidecar --probe``) passes once inputs are restored; it alone
  holds the projected service-account token and the S3 credentials;
- the trial container: ``python -m kubetune.trial`` with ``KUBETUNE_TRIAL_SPEC`` pointing at
  ``/kubetune/trial.json``; GPUs and extended resources as limits on it alone, and the
  bundles' ``memory`` (bytes, as Ray counts it) as its request and its limit: a trial is held
  to the memory it asked for (over it, the kernel's OOM killer ends it: ``OOMKilled``).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from kubetune_operator import kueue
from kubetune_operator.gpu_share import SharedGpu, gpu_limit
from kubetune_operator.shipped import CODE_DIR, shipped_code_spec

GROUP = "kubetune.io"
VERSION = "v1alpha1"
ROOT = "/kubetune"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
S3_CA_DIR = "/etc/kubetune/s3-ca"
SIDECAR_NAME = "kubetune-sidecar"
TRIAL_CONTAINER = "trial"
SHARED_VOLUME = "kubetune"
TOKEN_VOLUME = "kubetune-api-token"
CA_VOLUME = "kubetune-s3-ca"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
TOKEN_EXPIRATION_S = 3600
LABEL_EXPERIMENT = "kubetune.io/experiment"
LABEL_TRIAL = "kubetune.io/trial"
LABEL_ATTEMPT = "kubetune.io/attempt"


@dataclass
class PodSettings:
    sidecar_image: str | None = None  # None: use the trial image
    gpu_resource_name: str = "nvidia.com/gpu"
    extended_resources: dict[str, str] = field(default_factory=dict)  # bundle key -> resource
    trial_service_account: str = "kubetune-trial"
    report_interval_s: float = 0.5
    termination_grace_s: int = 60
    # fractional GPUs (gpu_share.py): the resource time-slicing/MPS advertises, units per GPU
    shared_gpu_resource_name: str | None = None
    shared_gpu_replicas: int = 0
    default_storage: dict[str, Any] = field(default_factory=dict)  # bucket/prefix/endpoint/...
    queue_name: str | None = None  # Kueue LocalQueue when the experiment names none

    def shared_gpu(self) -> SharedGpu | None:
        if not self.shared_gpu_resource_name or self.shared_gpu_replicas < 1:
            return None
        return SharedGpu(self.shared_gpu_resource_name, self.shared_gpu_replicas)


def pod_name(trial: dict[str, Any], attempt: int) -> str:
    return f"{trial['metadata']['name']}-{attempt}"


def _quantity(value: float, milli: bool = False) -> str:
    if float(value).is_integer():
        return str(int(value))
    if milli:
        return f"{round(value * 1000)}m"
    return str(round(value))


def pod_resources(
    resources: dict[str, Any], settings: PodSettings
) -> tuple[dict[str, str], dict[str, str]]:
    """(requests, limits) of the trial container from Ray's placement bundles (summed): the
    bundles of one pod (a multi-worker trial's pods are built one by one, ``workers.py``)."""
    totals: dict[str, float] = {}
    for bundle in resources.get("bundles") or [{"CPU": 1}]:
        for key, amount in bundle.items():
            totals[key] = totals.get(key, 0.0) + float(amount)
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for key, amount in totals.items():
        if amount <= 0:
            continue
        if key == "CPU":
            requests["cpu"] = _quantity(amount, milli=True)
        elif key == "memory":  # held to what it reserves: no LimitRange needed, no overcommit
            requests["memory"] = limits["memory"] = _quantity(amount)
        elif key == "GPU":  # whole GPUs, or a share of one (gpu_share.py): never rounded
            bundles = resources.get("bundles") or []
            mapped = gpu_limit(bundles, settings.gpu_resource_name, settings.shared_gpu())
            if mapped is not None:
                limits[mapped[0]] = str(mapped[1])
        elif key in settings.extended_resources:
            if not float(amount).is_integer():  # rounding would request none, or one more
                raise ValueError(
                    f"spec.resources: {key} must be a whole number per pod, got {amount:g}"
                    f" ({settings.extended_resources[key]} is an extended resource)"
                )
            limits[settings.extended_resources[key]] = _quantity(amount)
        else:
            raise ValueError(
                f"spec.resources: bundle key {key!r} maps to no Kubernetes resource; add it to"
                " the operator's extended resources map (bundle key -> resource name)"
            )
    return requests, limits


def _storage_uri(storage: dict[str, Any], experiment: str, trial_name: str) -> str:
    bucket = storage.get("bucket")
    if not bucket:
        raise ValueError("spec.storage.bucket is required to run trials on a cluster")
    parts = [p.strip("/") for p in (storage.get("prefix") or "", experiment, trial_name)]
    return f"s3://{bucket}/" + "/".join(p for p in parts if p)


def trial_spec(
    experiment: dict[str, Any], trial: dict[str, Any], restoring: bool, params: bool
) -> dict[str, Any]:
    """The TrialSpec (kubetune.trial.spec) as the trial container sees it."""
    espec = experiment.get("spec") or {}
    tspec = trial.get("spec") or {}
    trainable = espec.get("trainable") or {}
    run = espec.get("runConfig") or {}
    ckpt = run.get("checkpointConfig") or {}
    tune = espec.get("tuneConfig") or {}
    resources = tspec.get("resources") or espec.get("resources") or {"bundles": [{"CPU": 1}]}
    return {
        "trial_id": tspec["trialId"],
        "trial_name": tspec.get("trialName")
        or (trial["metadata"].get("annotations") or {}).get("kubetune.io/trial-name")
        or trial["metadata"]["name"],
        "experiment_name": experiment["metadata"]["name"],
        "experiment_tag": tspec.get("experimentTag"),
        "trainable": trainable["entrypoint"],
        "config": tspec.get("config") or {},
        "out_dir": f"{ROOT}/out",
        "params_dir": f"{ROOT}/params" if params else None,
        "restore_from": f"{ROOT}/restore" if restoring else None,
        "stop": run.get("stop") or None,
        "checkpoint_frequency": int(ckpt.get("checkpointFrequency") or 0),
        "checkpoint_at_end": bool(ckpt.get("checkpointAtEnd") or False),
        "resources": {
            "bundles": resources.get("bundles") or [{"CPU": 1}],
            "strategy": resources.get("strategy", "PACK"),
        },
        "chdir_to_trial_dir": bool(tune.get("chdirToTrialDir", True)),
        "decision_points": tspec.get("decisionPoints"),
        "gate": {"kind": "file", "dir": f"{ROOT}/gate"},
        "done_marker": f"{ROOT}/done",
        "python_path": list(trainable.get("pythonPath") or []),
        "checkpoint_index_start": int(tspec.get("checkpointIndexStart") or 0),
        **shipped_code_spec(trainable),
    }


def _token_volume() -> dict[str, Any]:
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_EXPIRATION_S}},
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


def _env(name: str, value: Any) -> dict[str, Any]:
    return {"name": name, "value": value if isinstance(value, str) else json.dumps(value)}


def _secret_env(secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": key, "valueFrom": {"secretKeyRef": ref}}


def build_trial_pod(
    experiment: dict[str, Any], trial: dict[str, Any], attempt: int, settings: PodSettings
) -> dict[str, Any]:
    espec = experiment.get("spec") or {}
    tspec = trial.get("spec") or {}
    trainable = espec.get("trainable") or {}
    image = trainable.get("image") or (
        settings.sidecar_image if trainable.get("codeFrom") else None
    )
    if not image:
        raise ValueError("spec.trainable.image is required to run trials on a cluster")
    template = copy.deepcopy(espec.get("podTemplate") or {})
    storage = {**settings.default_storage, **(espec.get("storage") or {})}
    run = espec.get("runConfig") or {}
    ckpt = run.get("checkpointConfig") or {}
    tune = espec.get("tuneConfig") or {}
    meta = trial["metadata"]
    exp_name = experiment["metadata"]["name"]
    trial_name = tspec.get("trialName") or meta["name"]
    restore_from = tspec.get("restoreFrom")
    params_from = tspec.get("parametersFrom") or trainable.get("parametersFrom")
    resources = tspec.get("resources") or espec.get("resources") or {"bundles": [{"CPU": 1}]}
    requests, limits = pod_resources(resources, settings)
    gpus = int(float(limits.get(settings.gpu_resource_name, "0")))
    if settings.shared_gpu_resource_name in limits:
        gpus = max(1, gpus // max(1, settings.shared_gpu_replicas))  # a share shows one device
    grace = int(template.get("terminationGracePeriodSeconds", settings.termination_grace_s))
    spec_json = trial_spec(experiment, trial, bool(restore_from), bool(params_from))
    spec_json["termination_grace_s"] = grace  # the runner's stopping window (preemption)

    # -- the sidecar -------------------------------------------------------------------------
    side_env: list[dict[str, Any]] = [
        _env("KUBETUNE_SIDECAR_ROOT", ROOT),
        _env("KUBETUNE_SIDECAR_STORAGE_URI", _storage_uri(storage, exp_name, trial_name)),
        _env("KUBETUNE_SIDECAR_TRIAL_SPEC", spec_json),
        _env("KUBETUNE_SIDECAR_TRIAL", meta["name"]),
        _env("KUBETUNE_SIDECAR_ATTEMPT", str(attempt)),
        {"name": "KUBETUNE_SIDECAR_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        _env("KUBETUNE_SIDECAR_REPORT_INTERVAL_S", f"{settings.report_interval_s:g}"),
        _env("KUBETUNE_SIDECAR_GRACE_S", str(grace)),
    ]
    if restore_from:
        side_env.append(_env("KUBETUNE_SIDECAR_RESTORE_FROM", restore_from))
    if params_from:
        side_env.append(_env("KUBETUNE_SIDECAR_PARAMS_FROM", params_from))
    if trainable.get("codeFrom"):
        side_env.append(_env("KUBETUNE_SIDECAR_CODE_FROM", trainable["codeFrom"]))
    if tune.get("metric"):
        side_env.append(_env("KUBETUNE_SIDECAR_METRIC", tune["metric"]))
    if ckpt.get("numToKeep"):
        side_env.append(_env("KUBETUNE_SIDECAR_NUM_TO_KEEP", str(ckpt["numToKeep"])))
        # the engine deletes surplus checkpoints from storage (DeleteCheckpoint): it knows
        # which ones a PBT exploit is about to restore; the sidecar only frees the pod's disk
        side_env.append(_env("KUBETUNE_SIDECAR_DELETE_STORED", "0"))
    if ckpt.get("checkpointScoreAttribute"):
        side_env.append(_env("KUBETUNE_SIDECAR_SCORE_ATTRIBUTE", ckpt["checkpointScoreAttribute"]))
        side_env.append(
            _env("KUBETUNE_SIDECAR_SCORE_ORDER", ckpt.get("checkpointScoreOrder", "max"))
        )
    if gpus:
        side_env.append(_env("KUBETUNE_SIDECAR_GPUS", str(gpus)))
        side_env.append(_env("KUBETUNE_SIDECAR_GPU_INTERVAL_S", "10"))
    side_env.append(_env("NVIDIA_VISIBLE_DEVICES", "void"))  # the sidecar needs no GPU
    if storage.get("endpoint"):
        side_env.append(_env("KUBETUNE_S3_ENDPOINT_URL", storage["endpoint"]))
    if storage.get("region"):
        side_env.append(_env("KUBETUNE_S3_REGION", storage["region"]))
    if storage.get("addressingStyle"):
        side_env.append(_env("KUBETUNE_S3_ADDRESSING_STYLE", storage["addressingStyle"]))
    side_mounts: list[dict[str, Any]] = [
        {"name": SHARED_VOLUME, "mountPath": ROOT},
        {"name": TOKEN_VOLUME, "mountPath": SA_DIR, "readOnly": True},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": SHARED_VOLUME, "emptyDir": {}},
        _token_volume(),
    ]
    if storage.get("insecureSkipVerify"):
        side_env.append(_env("KUBETUNE_S3_VERIFY", "false"))
    elif storage.get("caBundleSecretName"):
        side_env.append(_env("KUBETUNE_S3_VERIFY", f"{S3_CA_DIR}/ca.crt"))
        volumes.append({"name": CA_VOLUME, "secret": {"secretName": storage["caBundleSecretName"]}})
        side_mounts.append({"name": CA_VOLUME, "mountPath": S3_CA_DIR, "readOnly": True})
    secret = storage.get("secretName")
    if secret:
        side_env += [
            _secret_env(secret, "AWS_ACCESS_KEY_ID"),
            _secret_env(secret, "AWS_SECRET_ACCESS_KEY"),
            _secret_env(secret, "AWS_SESSION_TOKEN", optional=True),
        ]
    sidecar_image = settings.sidecar_image or image
    sidecar: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": sidecar_image,
        "command": ["python", "-m", "kubetune.sidecar"],
        "restartPolicy": "Always",
        "env": side_env,
        "volumeMounts": side_mounts,
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}},
        "startupProbe": {
            "exec": {"command": ["python", "-m", "kubetune.sidecar", "--probe"]},
            "periodSeconds": 1,
            "timeoutSeconds": 5,
            "failureThreshold": 3600,  # restoring a large checkpoint may take a while
        },
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if settings.sidecar_image is None and trainable.get("imagePullPolicy"):
        sidecar["imagePullPolicy"] = trainable["imagePullPolicy"]

    # -- the trial container -----------------------------------------------------------------
    trial_env = [
        *copy.deepcopy(trainable.get("env") or []),
        _env("KUBETUNE_TRIAL_SPEC", f"{ROOT}/trial.json"),
    ]
    if gpus:  # only the container that requested the GPUs sees them: it samples them
        trial_env.append(_env("KUBETUNE_TRIAL_GPUS", str(gpus)))
        trial_env.append(_env("KUBETUNE_TRIAL_GPU_INTERVAL_S", "10"))
    elif not any(e.get("name") == "NVIDIA_VISIBLE_DEVICES" for e in trial_env):
        # a CUDA image sets NVIDIA_VISIBLE_DEVICES=all, and on a node whose default runtime
        # is NVIDIA's a container that requested no GPU would then get every GPU of the node
        trial_env.append(_env("NVIDIA_VISIBLE_DEVICES", "void"))
    container: dict[str, Any] = {
        "name": TRIAL_CONTAINER,
        "image": image,
        # shipped code goes through the bootstrap: it installs the shipped requirements first
        "command": ["python", "-m", "kubetune.cluster.bootstrap", CODE_DIR]
        if trainable.get("codeFrom")
        else ["python", "-m", "kubetune.trial"],
        "env": trial_env,
        "volumeMounts": [
            {"name": SHARED_VOLUME, "mountPath": ROOT},
            *copy.deepcopy(template.get("volumeMounts") or []),
        ],
    }
    if trainable.get("args"):
        container["args"] = list(trainable["args"])
    if trainable.get("workingDir"):
        container["workingDir"] = trainable["workingDir"]
    if trainable.get("imagePullPolicy"):
        container["imagePullPolicy"] = trainable["imagePullPolicy"]
    res: dict[str, Any] = {}
    if requests:
        res["requests"] = requests
    if limits:
        res["limits"] = limits
    if res:
        container["resources"] = res
    if template.get("containerSecurityContext"):
        container["securityContext"] = template["containerSecurityContext"]

    # -- the pod -----------------------------------------------------------------------------
    tmeta = template.get("metadata") or {}
    labels = {
        **(tmeta.get("labels") or {}),
        LABEL_EXPERIMENT: exp_name,
        LABEL_TRIAL: meta["name"],
        LABEL_ATTEMPT: str(attempt),
    }
    metadata: dict[str, Any] = {
        "name": pod_name(trial, attempt),
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "TuneTrial",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if meta.get("namespace"):
        metadata["namespace"] = meta["namespace"]
    if tmeta.get("annotations"):
        metadata["annotations"] = dict(tmeta["annotations"])
    tolerations = list(template.get("tolerations") or [])
    if gpus and GPU_TOLERATION not in tolerations:
        tolerations.append(dict(GPU_TOLERATION))
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "serviceAccountName": template.get("serviceAccountName") or settings.trial_service_account,
        "terminationGracePeriodSeconds": grace,
        "initContainers": [sidecar],
        "containers": [container],
        "volumes": [*volumes, *copy.deepcopy(template.get("volumes") or [])],
    }
    for key in ("nodeSelector", "affinity", "priorityClassName", "securityContext"):
        if template.get(key):
            pod_spec[key] = template[key]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if trainable.get("imagePullSecrets"):
        pod_spec["imagePullSecrets"] = list(trainable["imagePullSecrets"])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}
    # the attempt's pods as Kueue sees them (one Workload; a pod group once there are several)
    group = pod_name(trial, attempt)
    kueue.mark_attempt([pod], kueue.queue_name(experiment, settings.queue_name), group)
    return pod
