"""One TuneExperiment's loop (run in its kopf daemon thread): set up, then reconcile on every
change of its trials or pods (and at least once a second) until it is finished or deleted."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from kubetune.storage import StorageError
from kubetune_operator import kueue, metrics, objects
from kubetune_operator.api import ApiError
from kubetune_operator.controller import ExperimentRuntime, Observed
from kubetune_operator.plan import (
    BadSpec,
    build_engine,
    check_shipped_uris,
    open_experiment_storage,
    restore_engine,
    secrets_needed,
    storage_spec,
)
from kubetune_operator.restore import (
    continue_experiment,
    load_carried,
    open_source_storage,
    restore_source,
)
from kubetune_operator.views import pod_view, trial_view
from kubetune_operator.writes import WriteQueue

log = logging.getLogger("kubetune_operator")
TICK_S = 1.0
STATUS_MIN_INTERVAL_S = 1.0
SNAPSHOT_MIN_INTERVAL_S = 1.0
WRITE_THREADS = 8
REPEATS_TO_STALL = 3  # the same unexpected error this many times in a row: Stalled


def _plain(body: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dict(body), default=dict))


def setup(experiment: dict[str, Any], state: Any) -> ExperimentRuntime:
    """Check everything, then build the runtime (restored when a snapshot exists)."""
    api, config = state.api, state.config
    ns = experiment["metadata"]["namespace"]
    engine = build_engine(experiment)  # BadSpec before anything is created
    sspec = storage_spec(experiment, config.default_storage)
    check_shipped_uris(experiment, sspec)
    credentials: dict[str, str] = {}
    for field, secret in secrets_needed(experiment, config.image_pull_secrets):
        data = api.secret_data(ns, secret)
        if data is None:
            raise BadSpec(f"{field}: Secret {secret!r} does not exist in namespace {ns!r}")
        if field == "spec.storage.secretName":
            if "AWS_ACCESS_KEY_ID" not in data or "AWS_SECRET_ACCESS_KEY" not in data:
                raise BadSpec(
                    f"{field}: Secret {secret!r} needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                )
            credentials = data
    storage = open_experiment_storage(experiment, sspec, credentials)
    saved = ExperimentRuntime.load_snapshot(storage)
    carried = None  # spec.restoreFrom counts only until the experiment has its own state
    source = restore_source(experiment) if saved is None else None
    if source is not None:
        source_storage = open_source_storage(source, sspec, credentials)
        carried = load_carried(experiment, source, source_storage)
    if ns not in state.rbac_done:
        name = config.trial_service_account
        for body in (
            objects.trial_service_account(ns, name),
            objects.trial_role(ns, name),
            objects.trial_role_binding(ns, name),
        ):
            api.ensure(body)
        state.rbac_done.add(ns)
    settings = config.pod_settings()
    if sspec.secret_name or not settings.default_storage:
        settings.default_storage = {**config.default_storage}

    from kubetune_operator.workers import build_trial_pods

    def build(exp: dict[str, Any], trial: dict[str, Any], attempt: int) -> list[dict[str, Any]]:
        pods = build_trial_pods(exp, trial, attempt, settings)  # one, or one per worker
        secrets = [{"name": s} for s in config.image_pull_secrets]
        for pod in pods if secrets else []:
            have = pod["spec"].setdefault("imagePullSecrets", [])
            have.extend(s for s in secrets if s not in have)
        return pods

    probe_pod(experiment, engine, build)  # a spec no pod can be built for stalls now
    template = (experiment.get("spec") or {}).get("podTemplate") or {}
    grace = int(template.get("terminationGracePeriodSeconds", settings.termination_grace_s))
    writes = WriteQueue(threads=WRITE_THREADS, name=f"kt-{experiment['metadata']['name']}")
    if carried is not None:
        engine = carried.engine
    elif saved is not None:
        engine = restore_engine(experiment, saved[0])
    runtime = ExperimentRuntime(experiment, engine, storage, api, build, grace, writes)
    if saved is None and carried is None:
        runtime.start(time.time())
        return runtime
    if saved is not None:
        runtime.snapshots.adopt(saved[1], saved[2])  # continue its segments
    name = experiment["metadata"]["name"]
    trials = {t["name"]: t for t in map(trial_view, api.list_trials(ns, name))}
    pods = {p["name"]: p for p in map(pod_view, api.list_pods(ns, name))}
    if carried is not None:
        continue_experiment(runtime, carried, Observed(trials, pods), time.time())
    else:
        runtime.restore(Observed(trials, pods), time.time())
    return runtime


def probe_pod(experiment: dict[str, Any], engine: Any, build: Any) -> None:
    """Build the pod of a would-be first trial and throw it away: what the pod builder refuses
    (resources no node can offer, a bad podTemplate) is a BadSpec before anything is created,
    not a reconcile step failing on every retry."""
    spec = objects.trial_spec(
        experiment["metadata"]["name"], "probe", {}, engine.config.resources, None, {}, 0
    )
    experiment = {**experiment, "metadata": {"uid": "probe", **experiment["metadata"]}}
    trial = objects.tune_trial(experiment, "probe", "probe", spec)
    trial["metadata"]["uid"] = "probe"
    try:
        build(experiment, trial, 1)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        message = str(exc) if str(exc).startswith("spec.") else f"spec: no trial pod: {exc!r}"
        raise BadSpec(message) from None


def publish_status(
    runtime: ExperimentRuntime, experiment: dict[str, Any], generation: int | None, force: bool
) -> bool:
    status = runtime.status(generation)
    reason = status.pop("_reason")
    waiting = status.pop("_admission", None)
    comparable = {**status, "_admission": waiting}
    if comparable == runtime.last_status and not force:
        return False
    old = (experiment.get("status") or {}).get("conditions")
    conditions = objects.kstatus(status["phase"], reason, status["message"], generation)
    if waiting is not None:  # some trial pod went through Kueue
        conditions.append(kueue.experiment_condition(waiting, generation))
    status["conditions"] = objects.merge_conditions(old, conditions)
    if not (experiment.get("status") or {}).get("startTime"):
        status["startTime"] = objects.now_iso()
    if status["phase"] in ("Succeeded", "Failed"):
        status["completionTime"] = objects.now_iso()
    ns, name = experiment["metadata"]["namespace"], experiment["metadata"]["name"]
    # A final phase is written after every write before it (each trial's own final status
    # among them): whoever waits for Succeeded then reads every TuneTrial as it ended.
    final = status["phase"] in ("Succeeded", "Failed")
    runtime.writes.submit(
        "~status",
        lambda: runtime.api.patch_experiment_status(ns, name, {"status": status}),
        after=runtime.writes.tails() if final else (),
    )
    runtime.last_status = comparable
    for state_name, count in status["trials"].items():
        metrics.TRIALS.labels(
            experiment["metadata"]["namespace"], experiment["metadata"]["name"], state_name
        ).set(count)
    return True


def stall(api: Any, experiment: dict[str, Any], message: str) -> None:
    meta = experiment["metadata"]
    generation = meta.get("generation")
    old = (experiment.get("status") or {}).get("conditions")
    conditions = objects.merge_conditions(
        old, objects.kstatus("Stalled", "InvalidSpec", message, generation)
    )
    status = {
        "phase": "Failed",
        "observedGeneration": generation,
        "message": message,
        "conditions": conditions,
    }
    api.patch_experiment_status(meta["namespace"], meta["name"], {"status": status})
    api.event(experiment, "InvalidSpec", message, warning=True)


def waiting(api: Any, experiment: dict[str, Any], message: str) -> None:
    """Pending (Reconciling) with the reason setup is retrying: storage or the API server
    unreachable, for now."""
    meta = experiment["metadata"]
    generation = meta.get("generation")
    old = (experiment.get("status") or {}).get("conditions")
    status = {
        "phase": "Pending",
        "observedGeneration": generation,
        "message": message,
        "conditions": objects.merge_conditions(
            old, objects.kstatus("Pending", "SetupRetrying", message, generation)
        ),
    }
    try:
        api.patch_experiment_status(meta["namespace"], meta["name"], {"status": status})
    except (ApiError, OSError) as exc:
        log.warning(
            "%s/%s: cannot report the setup retry: %s", meta["namespace"], meta["name"], exc
        )


def set_up(
    body: Any, stopped: Callable[[], bool], state: Any
) -> tuple[ExperimentRuntime | None, dict[str, Any]]:
    """Set the experiment up, retrying what may pass later; a spec it cannot run is reported
    (Stalled) and waited on until its generation changes."""
    experiment = _plain(body)
    meta = experiment["metadata"]
    key = (meta["namespace"], meta["name"])
    said = ""
    while not stopped():
        try:
            return setup(experiment, state), experiment
        except BadSpec as exc:
            log.warning("%s/%s: %s", *key, exc)
            stall(state.api, experiment, str(exc))
        except (ApiError, StorageError, OSError) as exc:
            log.warning("%s/%s: setup failed, retrying: %s", *key, exc)
            if str(exc) != said:  # the user sees why nothing happens yet, once per cause
                said = str(exc)
                waiting(state.api, experiment, f"setting up, retrying: {exc}")
            time.sleep(2 * TICK_S)
            continue
        except Exception as exc:  # a malformed object: report it, never crash the operator
            log.exception("%s/%s: cannot set up the experiment", *key)
            stall(state.api, experiment, f"cannot run this experiment: {type(exc).__name__}: {exc}")
        wait_for_new_generation(body, stopped, meta.get("generation"))
        experiment = _plain(body)
        meta = experiment["metadata"]
    return None, experiment


def wait_for_new_generation(body: Any, stopped: Callable[[], bool], generation: Any) -> None:
    while not stopped() and _plain(body)["metadata"].get("generation") == generation:
        time.sleep(TICK_S)


def run_experiment(body: Any, stopped: Callable[[], bool], state: Any) -> None:
    experiment = _plain(body)
    meta = experiment["metadata"]
    key = (meta["namespace"], meta["name"])
    if (experiment.get("status") or {}).get("phase") in ("Succeeded", "Failed") and (
        (experiment.get("status") or {}).get("observedGeneration") == meta.get("generation")
    ):
        return  # finished: nothing to watch (a spec change would need a new experiment)
    runtime, experiment = set_up(body, stopped, state)
    if runtime is None:
        return
    state.api.event(experiment, "Started", f"{len(runtime.tracks)} trials known at start")
    wake = state.store.wake_event(key)
    last_snapshot = 0.0
    last_status = 0.0
    repeats, last_bug = 0, ""
    while not stopped():
        wake.wait(TICK_S)
        wake.clear()
        experiment = _plain(body)
        meta = experiment["metadata"]
        if meta.get("deletionTimestamp"):
            # Being deleted: its pods go with it (garbage collection). Acting now would count
            # them as lost trials and store that in the snapshot that spec.restoreFrom reads.
            break
        runtime.experiment = experiment
        try:
            before = runtime.results_processed
            began = time.monotonic()
            runtime.step(
                state.store.observed(key),
                time.time(),
                suspend=bool((experiment.get("spec") or {}).get("suspend")),
            )
            took = time.monotonic() - began
            if took > 0.5:
                marks = [began, *runtime.timings]
                phases = " ".join(f"{b - a:.2f}" for a, b in itertools.pairwise(marks))
                log.info("%s/%s: slow reconcile step: %.2f s (%s)", *key, took, phases)
            metrics.RESULTS.inc(runtime.results_processed - before)
            for latency in runtime.decision_latencies:
                metrics.DECISION_LATENCY.observe(latency)
            runtime.decision_latencies.clear()
            finished = runtime.engine.is_finished()
            now = time.monotonic()
            if runtime.dirty and (finished or now - last_snapshot > SNAPSHOT_MIN_INTERVAL_S):
                runtime.save_snapshot()
                last_snapshot = now
            if (finished or now - last_status > STATUS_MIN_INTERVAL_S) and publish_status(
                runtime, experiment, meta.get("generation"), False
            ):
                last_status = now
            if finished and not runtime.finished_reported:
                runtime.finished_reported = True
                phase, reason, message = runtime.finished_phase()
                state.api.event(experiment, reason, message, warning=phase != "Succeeded")
            failed = runtime.writes.take_errors()
            if finished and not failed and not any(t.pod_live for t in runtime.tracks.values()):
                runtime.writes.drain(60)
                failed = runtime.writes.take_errors()
                if not failed:
                    runtime.close()
                    return
        except (ApiError, StorageError, OSError) as exc:
            failed = [exc]
        except Exception as exc:  # a bug or a malformed object: log it, keep the operator alive
            log.exception("%s/%s: reconcile step failed", *key)
            metrics.API_ERRORS.labels("internal").inc()
            failed = [exc]
            bug = f"{type(exc).__name__}: {exc}"
            repeats, last_bug = (repeats + 1 if bug == last_bug else 1), bug
        else:
            repeats, last_bug = 0, ""
        if failed and repeats >= REPEATS_TO_STALL:
            # the same error after rebuilding each time: retrying cannot help; say so once
            # and wait for a new spec (or the next operator's try)
            runtime.writes.drain(60)
            runtime.close()
            message = f"cannot run this experiment: the same error {repeats} times: {last_bug}"
            log.warning("%s/%s: %s", *key, message)
            stall(state.api, experiment, message)
            wait_for_new_generation(body, stopped, meta.get("generation"))
            repeats, last_bug = 0, ""
            runtime, experiment = set_up(body, stopped, state)
            if runtime is None:
                return
            last_snapshot = last_status = 0.0
            continue
        if failed:
            # What failed may have half happened: rather than guess, wait for the writes in
            # flight and rebuild from what is durable (snapshot, objects, result logs), as
            # after an operator restart.
            log.warning(
                "%s/%s: %d write(s) failed (%s); rebuilding from storage and the cluster",
                *key,
                len(failed),
                failed[0],
            )
            runtime.writes.drain(60)
            runtime.close()
            time.sleep(TICK_S)
            runtime, experiment = set_up(body, stopped, state)
            if runtime is None:
                return
            last_snapshot = last_status = 0.0
    runtime.writes.drain(30)
    runtime.close()
