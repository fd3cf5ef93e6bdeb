"""The CustomResourceDefinitions of kubetune, built here and written to ``crds/``.

This module is the one source of truth for the schema: ``crds/*.yaml`` (and the Helm chart's
copy) are its output, a unit test fails when they differ, and local mode validates manifests
against the same schema (``kubetune.manifest.validate``).

Regenerate with ``python -m kubetune.manifest.crd crds/``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from kubetune.manifest.param_schema import param_schema
from kubetune.manifest.queue_schema import queue_name
from kubetune.manifest.schema_builders import (
    Schema,
    array,
    boolean,
    free,
    integer,
    number,
    obj,
    rule,
    string,
)
from kubetune.manifest.spec_schema import (
    _conditions,
    _experiment_status,
    _pod_template,
    _resources,
    _run_config,
    _storage,
    _trainable,
    _tune_config,
)

GROUP = "kubetune.io"
VERSION = "v1alpha1"
CATEGORY = "kubetune"

# the schema builders and sections, importable from here as before the split
__all__ = [
    "CATEGORY",
    "CRDS",
    "GROUP",
    "VERSION",
    "Schema",
    "array",
    "boolean",
    "free",
    "integer",
    "number",
    "obj",
    "param_schema",
    "render",
    "rule",
    "string",
    "tune_experiment_crd",
    "tune_trial_crd",
    "write",
]


def tune_experiment_crd() -> dict[str, Any]:
    spec = obj(
        "The experiment: Ray Tune's Tuner arguments in Kubernetes casing.",
        {
            "trainable": _trainable(),
            "paramSpace": {
                "type": "object",
                "description": "The search space: each key is a config entry (see param"
                " schema); immutable once created.",
                "additionalProperties": param_schema(),
                "maxProperties": 256,  # bounds the cost of the CEL rules (and etcd's object)
                "x-kubernetes-validations": [
                    rule("self == oldSelf", "paramSpace is immutable once created"),
                ],
            },
            "tuneConfig": _tune_config(),
            "runConfig": _run_config(),
            "resources": _resources(),
            "storage": _storage(),
            "podTemplate": _pod_template(),
            "queueName": queue_name(),
            "suspend": boolean(
                "Stop starting trials and pause running ones; false resumes.", default=False
            ),
            "restoreFrom": string(
                "Storage URI of an earlier experiment to continue (Tuner.restore): its"
                " status.storageUri, s3://BUCKET/PREFIX/EXPERIMENT. Read once, when this"
                " experiment starts without state of its own: finished trials keep their"
                " results, unfinished ones resume from their latest checkpoints; their folders"
                " are copied into this experiment's storage, the earlier tree is only read.",
                pattern=r"^s3://[^/\s]+/\S+$",
            ),
            "restoreOptions": obj(
                "How spec.restoreFrom treats the earlier experiment's errored trials.",
                {
                    "resumeErrored": boolean(
                        "Run errored trials again from their latest checkpoints"
                        " (Tuner.restore resume_errored).",
                        default=False,
                    ),
                    "restartErrored": boolean(
                        "Run errored trials again from scratch, without a checkpoint"
                        " (Tuner.restore restart_errored); wins over resumeErrored.",
                        default=False,
                    ),
                },
            ),
        },
        ["trainable"],
    )
    spec["properties"]["trainable"]["x-kubernetes-validations"] = [
        rule("self == oldSelf", "trainable is immutable once created"),
    ]
    schema = obj(
        "A hyperparameter-tuning experiment run by the kubetune operator.",
        {
            "apiVersion": string("API version."),
            "kind": string("Kind."),
            "metadata": {"type": "object"},
            "spec": spec,
            "status": _experiment_status(),
        },
        ["spec"],
        validations=[
            rule(
                "size(self.metadata.name) <= 63 &&"
                " self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
                "metadata.name must be a DNS-1123 label (at most 63 lowercase letters, digits"
                " and '-', starting and ending with a letter or digit): it names the trials'"
                " objects, pods, labels and storage folders",
            )
        ],
    )
    return _crd(
        plural="tuneexperiments",
        kind="TuneExperiment",
        short_names=["tex", "tuneexp"],
        schema=schema,
        columns=[
            ("Status", "string", ".status.phase"),
            ("Trials", "integer", ".status.trials.total"),
            ("Running", "integer", ".status.trials.running"),
            ("Best", "string", ".status.bestTrial.name"),
            ("Metric", "number", ".status.bestTrial.metric"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ],
    )


# -- TuneTrial ------------------------------------------------------------------------------
def tune_trial_crd() -> dict[str, Any]:
    report = obj(
        "Written by the trial's sidecar (its own field manager): newest results and checkpoints.",
        {
            "sequence": integer("Increases with every report.", minimum=0),
            "attempt": integer("The attempt the report is about.", minimum=0),
            "iteration": integer("training_iteration of the newest result.", minimum=0),
            "metric": number("The experiment's metric in the newest result."),
            "results": array(
                "Results not yet acknowledged (newest last; bounded).",
                free("A result (Ray's result.json line)."),
            ),
            "firstResult": integer(
                "Index of results[0] in the trial's whole log (all attempts).", minimum=0
            ),
            "resultCount": integer("Result lines in the trial's log so far.", minimum=0),
            "uploadedResults": integer(
                "Result lines stored in result.json (read older ones from there).", minimum=0
            ),
            "verdictSeq": integer("The newest decision whose verdict was relayed.", minimum=0),
            "exit": free("The trial runner's exit record (exit_code, status, reason)."),
            "error": string("What the sidecar is struggling with (storage, restore, GPU)."),
            "latestCheckpoint": string("URI of the newest checkpoint."),
            "bestCheckpoint": string("URI of the best checkpoint."),
            "gate": free("A decision the trial is waiting for (sequence, iteration)."),
            "gpu": free("GPU telemetry: utilisation and memory per GPU."),
            "uploaded": boolean("Everything the trial wrote is in storage."),
            "updateTime": string("When the sidecar wrote this.", format="date-time"),
        },
    )
    spec = obj(
        "One trial of an experiment, owned by its TuneExperiment.",
        {
            "experiment": string("Name of the owning TuneExperiment."),
            "trialId": string("Trial id (stable across attempts)."),
            "config": free("The trial's resolved config."),
            "resources": _resources(),
            "restoreFrom": string("URI of the checkpoint the next attempt restores."),
            "decisionPoints": free("Where the trial waits for the scheduler's verdict."),
            "desiredState": string(
                "What the operator wants of the trial.", enum=["Running", "Paused", "Stopped"]
            ),
            "verdict": free("The operator's answer to the trial's pending decision."),
            "trialName": string("Ray's trial name (the trial's folder in storage)."),
            "checkpointIndexStart": integer(
                "First checkpoint index of the next attempt (names never repeat).", minimum=0
            ),
            "parametersFrom": string("URI of the with_parameters objects to restore."),
            "experimentTag": string("Ray's experiment_tag of the trial."),
            "pinnedCheckpoints": array(
                "Checkpoint names the sidecar's keep-rule must not delete (e.g. a PBT donor's).",
                string("A checkpoint directory name."),
            ),
        },
        ["experiment", "trialId"],
    )
    status = obj(
        "Observed state of the trial.",
        {
            "phase": string(
                "Ray's trial state.", enum=["PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR"]
            ),
            "attempts": integer("Pods created for this trial so far.", minimum=0),
            "failures": integer("Attempts that failed.", minimum=0),
            "preemptions": integer(
                "Attempts the cluster ended (preempted, evicted, node lost): retried from the"
                " latest checkpoint, not counted in failures.",
                minimum=0,
            ),
            "lastPreemption": obj(
                "The newest of those attempts.",
                {
                    "reason": string(
                        "The pod's DisruptionTarget reason (PreemptionByScheduler,"
                        " EvictionByEvictionAPI, ...), StoppedByKueue, or NodeLost."
                    ),
                    "pod": string("The pod that was ended."),
                    "message": string("Detail."),
                    "time": string("When the operator saw it.", format="date-time"),
                },
            ),
            "podName": string("The current attempt's pod."),
            "reason": string("Why the trial is in this phase."),
            "message": string("Detail, e.g. the error."),
            "conditions": _conditions(),
            "report": report,
            "workers": obj(
                "The workers (pods) of a multi-worker trial's current attempt (operator).",
                {
                    "attempt": integer("The attempt these workers belong to.", minimum=0),
                    "total": integer("Workers of the trial.", minimum=1),
                    "running": integer(
                        "Workers whose pods run (updated when rank 0's address is known and"
                        " when all or no longer all run).",
                        minimum=0,
                    ),
                    "ready": string("running/total, e.g. 3/3."),
                    "masterAddr": string(
                        "Rank 0's pod IP: the MASTER_ADDR the other workers' sidecars hand on."
                    ),
                    "message": string("Why a worker waits, e.g. it cannot be scheduled."),
                },
            ),
        },
    )
    schema = obj(
        "A trial of a TuneExperiment.",
        {
            "apiVersion": string("API version."),
            "kind": string("Kind."),
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        ["spec"],
    )
    return _crd(
        plural="tunetrials",
        kind="TuneTrial",
        short_names=["ttr"],
        schema=schema,
        columns=[
            ("Status", "string", ".status.phase"),
            ("Iter", "integer", ".status.report.iteration"),
            ("Metric", "number", ".status.report.metric"),
            ("Pod", "string", ".status.podName"),
            ("Workers", "string", ".status.workers.ready"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ],
    )


def _crd(
    plural: str,
    kind: str,
    short_names: list[str],
    schema: Schema,
    columns: list[tuple[str, str, str]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": name, "type": type_, "jsonPath": path}
                        for name, type_, path in columns
                    ],
                }
            ],
        },
    }


CRDS = {
    "tuneexperiments.yaml": tune_experiment_crd,
    "tunetrials.yaml": tune_trial_crd,
}


def render(name: str) -> str:
    import yaml

    header = (
        "# Generated by `python -m kubetune.manifest.crd crds/`: edit kubetune/manifest/crd.py.\n"
    )
    return header + yaml.safe_dump(CRDS[name](), sort_keys=False, width=100)


def write(directory: str) -> None:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name in CRDS:
        (out / name).write_text(render(name))


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else "crds")
