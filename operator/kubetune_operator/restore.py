"""``spec.restoreFrom``: a new TuneExperiment continues an earlier one (``Tuner.restore``).

The earlier experiment's tree (``s3://BUCKET/PREFIX/EXPERIMENT``, its ``status.storageUri``)
is input only. When the new experiment starts without state of its own:

1. its ``experiment_state.json`` is read and restored with this spec's searcher, scheduler
   and stop criteria (a missing, unreadable or incompatible snapshot is a :class:`BadSpec`
   naming ``spec.restoreFrom``, before anything is created);
2. every trial folder is copied (server-side where S3 allows) to the folder the new experiment
   gives that trial, so the new tree is complete on its own (Ray's layout, checkpoint URIs in
   the new tree, nothing breaks when the earlier tree is deleted);
3. results the snapshot had not seen are replayed from the copied ``result.json``; unfinished
   trials resume from their latest checkpoints, errored ones only with ``restoreOptions``
   (``resumeErrored``: from their checkpoint, ``restartErrored``: from scratch);
4. finished trials get a TuneTrial in their final phase (so ``kubectl get tunetrials`` and
   ``status.bestTrial`` name objects that exist) and no pod;
5. the new experiment's own snapshot is written. From then on it wins: an operator restart
   continues the new experiment and never reads ``spec.restoreFrom`` again.

A restart before step 5 repeats the whole continuation: copies overwrite with the same bytes
and creating an existing TuneTrial is a no-op.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from kubetune.engine import CheckpointRef, ExperimentEngine
from kubetune.engine import trial as states
from kubetune.storage import Storage, StorageError
from kubetune.storage.s3 import S3Storage
from kubetune_operator import objects
from kubetune_operator.controller import STATE_KEY, ExperimentRuntime, Observed, TrialTrack
from kubetune_operator.plan import BadSpec, StorageSpec, restore_engine, s3_config

FIELD = "spec.restoreFrom"
URI_RE = re.compile(r"^s3://(?P<bucket>[^/\s]+)/(?P<prefix>\S+?)/*$")
# S3 answers that retrying cannot fix: the experiment stalls instead of retrying forever.
PERMANENT_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "NoSuchBucket",
        "SignatureDoesNotMatch",
        "403",
        "Forbidden",
    }
)


@dataclass(frozen=True)
class RestoreSource:
    uri: str  # s3://BUCKET/PREFIX/EXPERIMENT, without a trailing slash
    bucket: str
    prefix: str  # the earlier experiment's folder in the bucket
    resume_errored: bool = False
    restart_errored: bool = False


@dataclass
class Carried:
    """What the new experiment takes over: the earlier tree and its restored engine."""

    source: RestoreSource
    storage: Storage  # rooted at the earlier experiment's folder; only read
    name: str  # the earlier experiment's name: its trial folders are named after it
    engine: ExperimentEngine


def restore_source(experiment: dict[str, Any]) -> RestoreSource | None:
    spec = experiment.get("spec") or {}
    uri = spec.get("restoreFrom")
    if uri is None or uri == "":
        return None
    match = URI_RE.match(uri) if isinstance(uri, str) else None
    if match is None:
        raise BadSpec(
            f"{FIELD}: {uri!r} is not the storage URI of an experiment"
            " (s3://BUCKET/PREFIX/EXPERIMENT, as in its status.storageUri)"
        )
    options = spec.get("restoreOptions") or {}
    return RestoreSource(
        uri=f"s3://{match['bucket']}/{match['prefix']}",
        bucket=match["bucket"],
        prefix=match["prefix"],
        resume_errored=bool(options.get("resumeErrored")),
        restart_errored=bool(options.get("restartErrored")),
    )


def open_source_storage(
    source: RestoreSource, spec: StorageSpec, credentials: dict[str, str]
) -> Storage:
    """The earlier tree, reached like this experiment's storage (endpoint, region,
    credentials); its bucket may differ."""
    return S3Storage(source.bucket, source.prefix, s3_config(spec, credentials))


def load_carried(experiment: dict[str, Any], source: RestoreSource, storage: Storage) -> Carried:
    """Read and restore the earlier snapshot; :class:`BadSpec` if it cannot be continued.
    Transient storage errors propagate (the caller retries)."""
    where = storage.uri(STATE_KEY)
    try:
        saved = ExperimentRuntime.load_snapshot(storage)  # segments of the earlier tree merged
    except FileNotFoundError:
        saved = None
    except StorageError as exc:
        if exc.code in PERMANENT_CODES:
            raise BadSpec(f"{FIELD}: cannot read {where}: {exc}") from None
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadSpec(f"{FIELD}: {where} is not an experiment snapshot: {exc!r}") from None
    if saved is None:
        raise BadSpec(
            f"{FIELD}: no experiment to continue at {source.uri} ({where} does not exist)"
        )
    state = saved[0]
    try:
        engine = restore_engine(experiment, state)
    except BadSpec as exc:
        detail = str(exc).removeprefix("status: the saved experiment state cannot be restored: ")
        raise BadSpec(
            f"{FIELD}: the experiment at {source.uri} cannot be continued with this spec: {detail}"
        ) from None
    name = state.get("experiment")
    if not isinstance(name, str) or not name:
        name = source.prefix.rstrip("/").rsplit("/", 1)[-1]
    return Carried(source, storage, name, engine)


def trial_folders(engine: ExperimentEngine, old: str, new: str) -> list[tuple[str, str]]:
    """(folder in the earlier tree, folder in the new one) of every trial."""
    return [
        (objects.trial_object_name(old, t), objects.trial_object_name(new, t))
        for t in engine.trial_ids()
    ]


def copy_pairs(source: Storage, folders: list[tuple[str, str]]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for old, new in folders:
        for key in source.list_keys(old):
            if key.startswith(old + "/"):
                pairs.append((key, new + key[len(old) :]))
    return pairs


def continue_experiment(
    runtime: ExperimentRuntime, carried: Carried, observed: Observed, now: float
) -> None:
    """Steps 2-5 of the module docstring, on a runtime built around ``carried.engine``."""
    engine = carried.engine
    folders = trial_folders(engine, carried.name, runtime.name)
    runtime.storage.copy_objects(carried.storage, copy_pairs(carried.storage, folders))
    runtime.restore(observed, now)  # replays unseen results, resumes unfinished trials
    source = carried.source
    revived: set[str] = set()
    if source.resume_errored or source.restart_errored:
        for trial_id in engine.trial_ids():
            if engine.trial_status(trial_id) == states.ERROR:
                runtime.pending.extend(
                    engine.resume_trial(trial_id, now, from_checkpoint=not source.restart_errored)
                )
                revived.add(trial_id)
    for trial_id in engine.trial_ids():
        if trial_id in revived or engine.trial_status(trial_id) not in states.FINISHED:
            continue
        tr = runtime.track(trial_id)
        if tr.spec.get("experiment"):
            continue  # created by an earlier try of this continuation
        adopt_finished(runtime, tr, source.uri)
    runtime.save_snapshot().result()  # from now on the experiment's own state wins


def adopt_finished(runtime: ExperimentRuntime, tr: TrialTrack, source_uri: str) -> None:
    """A TuneTrial in its final phase for a trial that finished in the earlier experiment."""
    engine = runtime.engine
    summary = engine.trial_summary(tr.trial_id)
    tr.spec = objects.trial_spec(
        runtime.name,
        tr.trial_id,
        summary["config"],
        engine.config.resources,
        None,
        {},
        0,
        summary.get("experiment_tag"),
    )
    body = objects.tune_trial(runtime.experiment, tr.trial_id, summary["trial_name"], tr.spec)
    tr.uid = runtime.api.create_trial(body)["metadata"].get("uid", "")
    tr.phase = summary["status"]
    status: dict[str, Any] = {
        "phase": summary["status"],
        "attempts": 0,
        "failures": summary["num_failures"],
        "reason": "Restored",
        "message": f"finished in {source_uri}",
        "report": restored_report(runtime, summary),
    }
    if summary["status"] == states.ERROR and summary.get("error"):
        status["message"] += f": {str(summary['error'])[-800:]}"
    runtime.api.patch_trial_status(runtime.namespace, tr.obj_name, {"status": status})


def restored_report(runtime: ExperimentRuntime, summary: dict[str, Any]) -> dict[str, Any]:
    """The parts of ``status.report`` that ``kubectl get tunetrials`` shows, from the engine
    (no sidecar runs for a trial that is already finished)."""
    last = summary.get("last_result") or {}
    report: dict[str, Any] = {
        "resultCount": summary["num_results"],
        "uploadedResults": summary["num_results"],
        "uploaded": True,
    }
    iteration = last.get("training_iteration")
    if isinstance(iteration, int) and not isinstance(iteration, bool):
        report["iteration"] = iteration
    metric = runtime.engine.config.metric
    value = last.get(metric) if metric else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        report["metric"] = value
    for field, ref in (
        ("latestCheckpoint", summary.get("latest_checkpoint")),
        ("bestCheckpoint", summary.get("best_checkpoint")),
    ):
        uri = runtime.checkpoint_uri(CheckpointRef.from_dict(ref))
        if uri:
            report[field] = uri
    return report
