"""The sections of the TuneExperiment schema: trainable, tuneConfig, runConfig, resources,
storage, podTemplate and status (assembled into the CRD by ``crd.py``)."""

from __future__ import annotations

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

MAX_TRIALS = 1_000_000  # numSamples, concurrency, retries: more than any cluster runs
SEED_MAX = 2**32 - 1  # numpy's seeds


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
            "seed": integer("Seed for repeatable sampling.", minimum=0, maximum=SEED_MAX),
            "pointsToEvaluate": array("Configs to try first.", free("A (partial) config.")),
            "maxConcurrent": integer(
                "Wrap the searcher in a ConcurrencyLimiter.", minimum=1, maximum=MAX_TRIALS
            ),
            "repeat": integer(
                "Wrap the searcher in a Repeater: run each config this many times and average.",
                minimum=1,
                maximum=10_000,
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
            "brackets": integer("ASHA: number of brackets.", minimum=1, maximum=100),
            "stopLastTrials": boolean("HyperBand: stop the last trials of a bracket."),
            "minSamplesRequired": integer(
                "Median stopping: trials needed before stopping.", minimum=1, maximum=MAX_TRIALS
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
            "seed": integer("PBT: seed for repeatable mutations.", minimum=0, maximum=SEED_MAX),
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
                maximum=MAX_TRIALS,
                default=1,
            ),
            "maxConcurrentTrials": integer(
                "Trials running at once (default: as many as fit).", minimum=1, maximum=MAX_TRIALS
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
            "seed": integer(
                "Seed of the default random search, for repeatable experiments.",
                minimum=0,
                maximum=SEED_MAX,
            ),
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
                " keys joined with '/'), e.g. {training_iteration: 20}; a boolean stops it when"
                " result[key] is true, e.g. {done: true}.",
                # number or boolean: a structural schema cannot say "one of two types" (no
                # type inside anyOf), so the value is open here and the reader (kubetune
                # validate, the operator) refuses anything else, naming the field
                "additionalProperties": free("A number, or a boolean.", type_=None),
            },
            "checkpointConfig": obj(
                "Which checkpoints to keep (Ray's CheckpointConfig).",
                {
                    "numToKeep": integer(
                        "Keep at most this many checkpoints per trial.",
                        minimum=1,
                        maximum=MAX_TRIALS,
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
                        maximum=MAX_TRIALS,
                        default=0,
                    ),
                    "failFast": boolean("End the whole experiment at the first trial error."),
                },
            ),
        },
    )


def _resources() -> Schema:
    return obj(
        "Resources of each trial, as Ray's PlacementGroupFactory. PACK/STRICT_PACK: the bundles"
        " summed into one pod. A multi-worker trial (workers set, or SPREAD/STRICT_SPREAD with"
        " several bundles) runs one pod per worker: bundle 0 is the trainer's and joins worker"
        " 0's pod, bundles 1..N are one worker each.",
        {
            "bundles": array(
                "Resource bundles, e.g. [{CPU: 1, GPU: 1}]. CPU -> cpu, GPU -> nvidia.com/gpu,"
                " memory (bytes) -> memory; other keys map to extended resources.",
                {
                    "type": "object",
                    "description": "One bundle.",
                    "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1e15},
                    "maxProperties": 16,
                },
                minItems=1,
                maxItems=16,
            ),
            "workers": integer(
                "Workers (pods) per trial, as ScalingConfig.num_workers: bundles must then be"
                " the trainer's bundle followed by one bundle per worker.",
                minimum=1,
                maximum=1000,
            ),
            "strategy": string(
                "Placement strategy of a multi-worker trial's pods: SPREAD prefers different"
                " nodes, STRICT_SPREAD requires them (pod anti-affinity on the hostname), PACK"
                " prefers one node, STRICT_PACK requires it (pod affinity).",
                enum=["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"],
                default="PACK",
            ),
        },
        validations=[
            rule(
                "!has(self.bundles) || self.bundles.all(b, b.all(k, k == 'CPU' || k == 'memory'"
                " || k == 'GPU'"
                " || double(int(self.bundles.map(c, k in c ? c[k] : 0.0).sum()))"
                " == self.bundles.map(c, k in c ? c[k] : 0.0).sum()))",
                WHOLE_RESOURCES,
                fieldPath=".bundles",
            ),
            rule(
                "!has(self.workers)"
                " || (has(self.bundles) && size(self.bundles) == self.workers + 1)",
                "workers needs one bundle per worker after the trainer's bundle"
                " (size(bundles) == workers + 1)",
                fieldPath=".workers",
            ),
            # A fraction of a GPU is fine when the operator maps it to a shared GPU resource
            # (trial.sharedGpuResourceName), which the CRD cannot know: the operator refuses
            # it otherwise. Above one, a bundle's GPUs are whole devices, as in Ray.
            rule(
                "!has(self.bundles) || self.bundles.all(b, !('GPU' in b) || b['GPU'] <= 1.0"
                " || double(int(b['GPU'])) == b['GPU'])",
                WHOLE_GPUS_ABOVE_ONE,
                fieldPath=".bundles",
            ),
        ],
    )


WHOLE_RESOURCES = (
    "extended resources must sum to a whole number per trial over the bundles (a pod requests"
    " whole devices)"
)
WHOLE_GPUS_ABOVE_ONE = (
    "a bundle's GPU must be at most 1 (a share of one device) or a whole number of devices"
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
                "Time to finish the last write and upload after a stop.",
                minimum=0,
                maximum=86_400,
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
            "preemptions": integer(
                "Trial attempts the cluster ended (preemption, eviction, a lost node); each"
                " was retried from its latest checkpoint without counting as a failure.",
                minimum=0,
            ),
        },
    )
