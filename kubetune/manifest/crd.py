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

GROUP = "kubetune.io"
VERSION = "v1alpha1"
CATEGORY = "kubetune"

Schema = dict[str, Any]


# -- small schema builders ------------------------------------------------------------------
def obj(
    description: str,
    properties: dict[str, Schema],
    required: list[str] | None = None,
    *,
    validations: list[Schema] | None = None,
) -> Schema:
    schema: Schema = {"type": "object", "description": description, "properties": properties}
    if required:
        schema["required"] = required
    if validations:
        schema["x-kubernetes-validations"] = validations
    return schema


def string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def integer(description: str, minimum: int | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "integer", "description": description, **extra}
    if minimum is not None:
        schema["minimum"] = minimum
    return schema


def number(description: str, minimum: float | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "number", "description": description, **extra}
    if minimum is not None:
        schema["minimum"] = minimum
    return schema


def boolean(description: str, **extra: Any) -> Schema:
    return {"type": "boolean", "description": description, **extra}


def free(description: str, type_: str | None = "object") -> Schema:
    """A value whose shape is not ours to constrain (Kubernetes types, user data)."""
    schema: Schema = {"description": description, "x-kubernetes-preserve-unknown-fields": True}
    if type_:
        schema["type"] = type_
    return schema


def array(description: str, items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "description": description, "items": items, **extra}


def _any(description: str) -> Schema:
    # Any JSON value: preserve-unknown-fields without a type is the structural way to say so.
    return {"description": description, "x-kubernetes-preserve-unknown-fields": True}


def rule(expression: str, message: str, **extra: Any) -> Schema:
    return {"rule": expression, "message": message, **extra}


# -- the param space ------------------------------------------------------------------------
def _bounds(
    name: str,
    extra: dict[str, Schema] | None = None,
    *,
    integer_: bool = False,
    log: bool = False,
    required: tuple[str, ...] = ("lower", "upper"),
) -> Schema:
    kind = integer if integer_ else number
    props: dict[str, Schema] = {
        "lower": kind("Lower bound (inclusive)."),
        "upper": kind("Upper bound (exclusive for integer samplers, as in Ray)."),
    }
    if log:
        props["base"] = number("Logarithm base (default 10).", exclusiveMinimum=True, minimum=0)
    props.update(extra or {})
    rules = [rule("self.lower < self.upper", f"{name}: lower must be less than upper")]
    if log:
        rules.append(rule("self.lower > 0", f"{name}: a log domain needs lower > 0"))
    return obj(f"Sample with tune.{name}.", props, list(required), validations=rules)


def _q(description: str = "Round samples to a multiple of q (q > 0).") -> Schema:
    return number(description, exclusiveMinimum=True, minimum=0)


def param_schema() -> Schema:
    """One entry of paramSpace: a constant, a nested space, or a sampler object.

    Sampler keys are declared so that the API server checks their arguments (and CEL checks
    lower < upper); anything else is kept as given (nested spaces). CEL needs every node above
    a rule to have a type, so each top-level entry is an object: a scalar or list constant at
    the top is written ``{constant: VALUE}`` (nested spaces hold constants as they are).
    """
    props: dict[str, Schema] = {
        "uniform": _bounds("uniform"),
        "quniform": _bounds("quniform", {"q": _q()}, required=("lower", "upper", "q")),
        "loguniform": _bounds("loguniform", log=True),
        "qloguniform": _bounds(
            "qloguniform", {"q": _q()}, log=True, required=("lower", "upper", "q")
        ),
        "randint": _bounds("randint", integer_=True),
        "qrandint": _bounds(
            "qrandint", {"q": integer("Multiple to round to.", minimum=1)}, integer_=True
        ),
        "lograndint": _bounds("lograndint", integer_=True, log=True),
        "qlograndint": _bounds(
            "qlograndint",
            {"q": integer("Multiple to round to.", minimum=1)},
            integer_=True,
            log=True,
            required=("lower", "upper", "q"),
        ),
        "randn": obj(
            "Sample from a normal distribution (tune.randn).",
            {
                "mean": number("Mean (default 0)."),
                "sd": number("Standard deviation (default 1).", exclusiveMinimum=True, minimum=0),
            },
        ),
        "qrandn": obj(
            "Sample from a normal distribution, rounded (tune.qrandn).",
            {
                "mean": number("Mean."),
                "sd": number("Standard deviation.", exclusiveMinimum=True, minimum=0),
                "q": _q(),
            },
            ["mean", "sd", "q"],
        ),
        "choice": array(
            "Pick one of these values at random (tune.choice); values may be"
            " param spaces themselves.",
            _any("A candidate value."),
            minItems=1,
        ),
        "gridSearch": array(
            "Try every one of these values (tune.grid_search), times numSamples.",
            _any("A grid value."),
            minItems=1,
        ),
        "tuple": array("A Python tuple of param spaces.", _any("An element.")),
        "constant": _any(
            "A literal value taken verbatim: use it for a constant that looks like a sampler"
            " object, e.g. {constant: {choice: [1, 2]}} is the dict {choice: [1, 2]}."
        ),
    }
    return {
        "type": "object",
        "description": (
            "A sampler object with exactly one key (uniform, quniform, loguniform, qloguniform,"
            " randint, qrandint, lograndint, qlograndint, randn, qrandn, choice, gridSearch,"
            " tuple), a nested param space (an object), or {constant: VALUE} for any other"
            " value, e.g. epochs: {constant: 10}. Inside nested spaces constants are written"
            " as they are."
        ),
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": props,
    }


# -- TuneExperiment -------------------------------------------------------------------------
def _trainable() -> Schema:
    env_var = obj(
        "An environment variable for the trial container (as in a Pod).",
        {
            "name": string("Variable name."),
            "value": string("Value."),
            "valueFrom": free("Source of the value (as in a Pod's env)."),
        },
        ["name"],
    )
    return obj(
        "What each trial runs: a Ray-Tune trainable inside an image.",
        {
            "image": string(
                "Container image holding the trainable and kubetune (required on a"
                " cluster; ignored by local mode)."
            ),
            "entrypoint": string(
                "The trainable as 'module:attribute': a function using session.report, or a"
                " tune.Trainable subclass.",
                pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$",
            ),
            "env": array("Environment of the trial container.", env_var),
            "args": array("Extra arguments passed to the trial runner.", string("An argument.")),
            "workingDir": string("Working directory of the trial container."),
            "pythonPath": array(
                "Directories added to sys.path before importing the entrypoint.",
                string("A directory."),
            ),
            "imagePullPolicy": string(
                "When to pull the image.", enum=["Always", "IfNotPresent", "Never"]
            ),
            "imagePullSecrets": array(
                "Secrets for pulling the image.",
                obj("A Secret reference.", {"name": string("Secret name.")}, ["name"]),
            ),
            "codeFrom": string(
                "URI (in spec.storage) of code shipped by `kubetune submit`: the cloudpickled"
                " trainable, the working directory and requirements.txt. The sidecar fetches"
                " it; the trial unpickles it. image then defaults to the trial base image."
            ),
            "parametersFrom": string(
                "URI (in spec.storage) of the with_parameters objects, stored once for all"
                " trials and restored into every trial pod by its sidecar."
            ),
        },
        ["entrypoint"],
    )


def _searcher() -> Schema:
    return obj(
        "The search algorithm. Default: random sampling and grid expansion (Ray's"
        " BasicVariantGenerator).",
        {
            "type": string("Which searcher.", enum=["basic", "random", "grid", "optuna"]),
            "sampler": string(
                "Optuna's sampler (type: optuna): tpe (default), cmaes, gp, qmc,"
                " or nsga2 for several metrics.",
                enum=["tpe", "cmaes", "gp", "qmc", "nsga2"],
            ),
            "seed": integer("Seed for repeatable sampling."),
            "pointsToEvaluate": array("Configs to try first.", free("A (partial) config.")),
            "maxConcurrent": integer("Wrap the searcher in a ConcurrencyLimiter.", minimum=1),
            "repeat": integer(
                "Wrap the searcher in a Repeater: run each config this many times and average.",
                minimum=1,
            ),
            "metric": free(
                "Override tuneConfig.metric for the searcher (a name or a list,"
                " for multi-objective).",
                type_=None,
            ),
            "mode": free("Override tuneConfig.mode (min/max, or a list).", type_=None),
        },
        ["type"],
    )


def _scheduler() -> Schema:
    return obj(
        "The trial scheduler: decides from results whether each trial continues, pauses or"
        " stops. Default: fifo (no early stopping).",
        {
            "type": string(
                "Which scheduler.",
                enum=[
                    "fifo",
                    "asha",
                    "async_hyperband",
                    "hyperband",
                    "median_stopping_rule",
                    "median",
                    "pbt",
                ],
            ),
            "timeAttr": string(
                "The result field that measures progress (default training_iteration)."
            ),
            "maxT": number("ASHA/HyperBand: trials stop at this time_attr.", minimum=0),
            "gracePeriod": number(
                "ASHA/median: run at least this long before stopping.", minimum=0
            ),
            "reductionFactor": number(
                "ASHA/HyperBand: keep 1/reductionFactor of trials per rung.", minimum=1
            ),
            "brackets": integer("ASHA: number of brackets.", minimum=1),
            "stopLastTrials": boolean("HyperBand: stop the last trials of a bracket."),
            "minSamplesRequired": integer(
                "Median stopping: trials needed before stopping.", minimum=1
            ),
            "minTimeSliceS": number("Median stopping: minimum time slice.", minimum=0),
            "hardStop": boolean("Median stopping: stop (not pause) bad trials."),
            "perturbationInterval": number(
                "PBT: exploit/explore every this much time_attr.", exclusiveMinimum=True, minimum=0
            ),
            "burnInPeriod": number("PBT: no perturbation before this time_attr.", minimum=0),
            "hyperparamMutations": free(
                "PBT: the param space to mutate within (manifest form, like paramSpace)."
            ),
            "quantileFraction": number(
                "PBT: fraction of trials in the top and bottom quantiles.", minimum=0, maximum=0.5
            ),
            "resampleProbability": number(
                "PBT: probability of resampling instead of perturbing.", minimum=0, maximum=1
            ),
            "perturbationFactors": array(
                "PBT: factors a continuous value is multiplied by.",
                number("A factor."),
                minItems=2,
                maxItems=2,
            ),
            "logConfig": boolean("PBT: log each trial's config history."),
            "seed": integer("PBT: seed for repeatable mutations."),
            "metric": string("Override tuneConfig.metric for the scheduler."),
            "mode": string("Override tuneConfig.mode.", enum=["min", "max"]),
        },
        ["type"],
    )


def _tune_config() -> Schema:
    return obj(
        "How to search (Ray's TuneConfig).",
        {
            "metric": string("The result field to optimise."),
            "mode": string("Whether to minimise or maximise metric.", enum=["min", "max"]),
            "numSamples": integer(
                "Number of samples (times every grid point); -1: until the time budget ends.",
                minimum=-1,
                default=1,
            ),
            "maxConcurrentTrials": integer(
                "Trials running at once (default: as many as fit).", minimum=1
            ),
            "searchAlg": _searcher(),
            "scheduler": _scheduler(),
            "reuseActors": boolean(
                "Class API: reuse a trial process for the next trial.", default=False
            ),
            "timeBudgetS": number(
                "Stop the experiment after this many seconds.", exclusiveMinimum=True, minimum=0
            ),
            "chdirToTrialDir": boolean("Run each trial in its trial directory.", default=True),
            "seed": integer("Seed of the default random search, for repeatable experiments."),
        },
        validations=[
            rule("!has(self.mode) || has(self.metric)", "tuneConfig.mode needs tuneConfig.metric"),
            rule(
                "!has(self.numSamples) || self.numSamples != 0",
                "tuneConfig.numSamples must be positive, or -1 for no limit",
            ),
        ],
    )


def _run_config() -> Schema:
    return obj(
        "When trials stop, which checkpoints are kept, and how failures are retried.",
        {
            "stop": {
                "type": "object",
                "description": "Stop a trial when result[key] >= value for any key (nested"
                " keys joined with '/'), e.g. {training_iteration: 20}.",
                "additionalProperties": {"type": "number"},
            },
            "checkpointConfig": obj(
                "Which checkpoints to keep (Ray's CheckpointConfig).",
                {
                    "numToKeep": integer(
                        "Keep at most this many checkpoints per trial.", minimum=1
                    ),
                    "checkpointScoreAttribute": string(
                        "Rank checkpoints by this result field (default: newest first)."
                    ),
                    "checkpointScoreOrder": string(
                        "Whether a higher score is better.", enum=["max", "min"], default="max"
                    ),
                    "checkpointFrequency": integer(
                        "Class API: checkpoint every N iterations.", minimum=0, default=0
                    ),
                    "checkpointAtEnd": boolean("Class API: checkpoint when the trial ends."),
                },
            ),
            "failureConfig": obj(
                "Retries (Ray's FailureConfig).",
                {
                    "maxFailures": integer(
                        "Retry a failed trial from its latest checkpoint up"
                        " to this many times; -1: forever.",
                        minimum=-1,
                        default=0,
                    ),
                    "failFast": boolean("End the whole experiment at the first trial error."),
                },
            ),
        },
    )


def _resources() -> Schema:
    return obj(
        "Resources of each trial, as Ray's PlacementGroupFactory: bundles summed into one pod.",
        {
            "bundles": array(
                "Resource bundles, e.g. [{CPU: 1, GPU: 1}]. CPU -> cpu, GPU -> nvidia.com/gpu,"
                " memory (bytes) -> memory; other keys map to extended resources.",
                {
                    "type": "object",
                    "description": "One bundle.",
                    "additionalProperties": {"type": "number", "minimum": 0},
                },
                minItems=1,
            ),
            "strategy": string(
                "Placement strategy. SPREAD and STRICT_SPREAD need multi-pod"
                " trials and are refused for now.",
                enum=["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"],
                default="PACK",
            ),
        },
    )


def _storage() -> Schema:
    return obj(
        "Where results and checkpoints go (S3 or an S3-compatible store).",
        {
            "bucket": string("Bucket name.", minLength=1),
            "prefix": string("Key prefix; the experiment is stored under PREFIX/NAME/."),
            "endpoint": string("Endpoint URL for non-AWS stores (MinIO, Ceph, SeaweedFS, GCS)."),
            "region": string("Region."),
            "secretName": string(
                "Secret in this namespace with AWS_ACCESS_KEY_ID and"
                " AWS_SECRET_ACCESS_KEY (optionally AWS_SESSION_TOKEN); omit"
                " to use the pod's cloud identity (IRSA, workload identity)."
            ),
            # no schema default: an unset value falls back to the operator's default storage
            "addressingStyle": string(
                "Bucket addressing (default: the operator's default, else auto; path for MinIO,"
                " Ceph and SeaweedFS).",
                enum=["auto", "path", "virtual"],
            ),
            "insecureSkipVerify": boolean("Do not verify the endpoint's TLS certificate."),
            "caBundleSecretName": string("Secret with a ca.crt to verify the endpoint with."),
        },
        ["bucket"],
    )


def _pod_template() -> Schema:
    return obj(
        "Merged into every trial pod.",
        {
            "metadata": obj(
                "Labels and annotations for trial pods.",
                {
                    "labels": {
                        "type": "object",
                        "description": "Extra labels.",
                        "additionalProperties": {"type": "string"},
                    },
                    "annotations": {
                        "type": "object",
                        "description": "Extra annotations.",
                        "additionalProperties": {"type": "string"},
                    },
                },
            ),
            "nodeSelector": {
                "type": "object",
                "description": "Node labels a trial needs.",
                "additionalProperties": {"type": "string"},
            },
            "tolerations": array("Tolerations.", free("A toleration (as in a Pod).")),
            "affinity": free("Affinity (as in a Pod)."),
            "priorityClassName": string("Priority class of trial pods."),
            "serviceAccountName": string(
                "Service account of trial pods (its token is mounted in the sidecar only)."
            ),
            "securityContext": free("Pod security context."),
            "containerSecurityContext": free("Security context of the trial container."),
            "volumes": array("Extra volumes.", free("A volume (as in a Pod).")),
            "volumeMounts": array(
                "Mounts of those volumes in the trial container.", free("A volume mount.")
            ),
            "terminationGracePeriodSeconds": integer(
                "Time to finish the last write and upload after a stop.", minimum=0
            ),
        },
    )


def _conditions() -> Schema:
    condition = obj(
        "A kstatus-style condition.",
        {
            "type": string("Ready, Reconciling or Stalled."),
            "status": string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": string("CamelCase reason."),
            "message": string("Human-readable detail."),
            "observedGeneration": integer("The spec generation this condition describes."),
            "lastTransitionTime": string("When status last changed.", format="date-time"),
        },
        ["type", "status"],
    )
    return array(
        "Conditions (Ready, Reconciling, Stalled).",
        condition,
        **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


def _experiment_status() -> Schema:
    count = integer("Number of trials.", minimum=0)
    return obj(
        "Observed state of the experiment (counts and the best trial; never a list of trials).",
        {
            "phase": string(
                "Pending, Running, Suspended, Succeeded or Failed.",
                enum=["Pending", "Running", "Suspended", "Succeeded", "Failed"],
            ),
            "observedGeneration": integer("The spec generation last acted on."),
            "conditions": _conditions(),
            "trials": obj(
                "Trials by state.",
                {
                    "total": count,
                    "pending": count,
                    "running": count,
                    "paused": count,
                    "terminated": count,
                    "error": count,
                },
            ),
            "bestTrial": obj(
                "The best trial so far.",
                {
                    "name": string("TuneTrial name."),
                    "metric": number("Its metric value."),
                    "config": free("Its config."),
                    "checkpoint": string("URI of its best checkpoint."),
                },
            ),
            "startTime": string("When the experiment started.", format="date-time"),
            "completionTime": string("When it finished.", format="date-time"),
            "message": string("What is happening, in words."),
            "storageUri": string("Where the experiment is stored."),
        },
    )


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
                "x-kubernetes-validations": [
                    rule("self == oldSelf", "paramSpace is immutable once created"),
                ],
            },
            "tuneConfig": _tune_config(),
            "runConfig": _run_config(),
            "resources": _resources(),
            "storage": _storage(),
            "podTemplate": _pod_template(),
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
            "podName": string("The current attempt's pod."),
            "reason": string("Why the trial is in this phase."),
            "message": string("Detail, e.g. the error."),
            "conditions": _conditions(),
            "report": report,
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
