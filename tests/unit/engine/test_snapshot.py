"""The segmented engine snapshot: small heads, finished trials written once, lossless."""

from __future__ import annotations

import json
from typing import Any

from kubetune.engine import EngineConfig, ExperimentEngine
from kubetune.engine.snapshot import HEAD_KEY, SnapshotWriter, load_state
from kubetune.search.sample import uniform


def engine(n: int = 40, concurrent: int = 4) -> ExperimentEngine:
    config = EngineConfig(
        param_space={"x": uniform(0, 1)},
        metric="loss",
        mode="min",
        num_samples=n,
        max_concurrent_trials=concurrent,
    )
    return ExperimentEngine(config, seed=3)


def run_some(e: ExperimentEngine, finish: int, t: float = 0.0) -> None:
    e.start(t)
    done = 0
    while done < finish:
        running = [tid for tid in e.trial_ids() if e.trial_status(tid) == "RUNNING"]
        pending = [tid for tid in e.trial_ids() if e.trial_status(tid) == "PENDING"]
        for tid in pending:
            e.on_trial_started(tid, t)
        tid = (running or pending)[0]
        e.on_result(tid, {"loss": e.trial_summary(tid)["config"]["x"], "training_iteration": 1}, t)
        e.on_trial_complete(tid, t)
        done += 1
        t += 1


def write(store: dict[str, bytes], blobs: list[tuple[str, bytes]]) -> None:
    for key, data in blobs:
        store[key] = data


def restore(store: dict[str, bytes]) -> ExperimentEngine:
    head = json.loads(store[HEAD_KEY])
    state, _ = load_state(head, store.__getitem__)
    return ExperimentEngine.from_json(json.dumps(state))


def test_finished_trials_go_to_segments_once_and_the_head_stays_small() -> None:
    e, writer, store = engine(), SnapshotWriter(segment_trials=8), {}
    run_some(e, 30)
    blobs = writer.render(e)
    write(store, blobs)
    assert [k for k, _ in blobs][-1] == HEAD_KEY  # the head is written last
    segments = [k for k, _ in blobs if k != HEAD_KEY]
    assert len(segments) == 3  # 30 finished -> 3 segments of 8, 6 stay in the head
    head = json.loads(store[HEAD_KEY])
    assert head["segments"] == segments
    assert len(head["trials"]) == 6 + 4  # 6 finished unsealed + 4 live
    again = writer.render(e)
    assert [k for k, _ in again] == [HEAD_KEY]  # nothing finished since: no segment rewritten
    full = json.loads(e.to_json())
    assert restore(store).to_state() == full


def test_a_restored_writer_continues_the_segments_and_state_round_trips() -> None:
    e, writer, store = engine(), SnapshotWriter(segment_trials=8), {}
    run_some(e, 20)
    write(store, writer.render(e))
    head = json.loads(store[HEAD_KEY])
    state, sealed = load_state(head, store.__getitem__)
    e2 = ExperimentEngine.from_json(json.dumps(state))
    writer2 = SnapshotWriter(segment_trials=8)
    writer2.adopt(head["segments"], sealed)
    run_some(e2, 12, t=100.0)
    blobs = writer2.render(e2)
    assert next(k for k, _ in blobs).endswith("trials-000002.json")
    write(store, blobs)
    assert restore(store).to_state() == e2.to_state()


def test_a_sealed_record_that_changes_is_written_again_in_the_head() -> None:
    e, writer, store = engine(n=10), SnapshotWriter(segment_trials=2), {}
    run_some(e, 4)
    write(store, writer.render(e))
    sealed_id = json.loads(store["experiment_state/trials-000000.json"])["trials"][0]["trial_id"]
    rec: Any = e.trials[sealed_id]
    rec.num_failures += 1  # e.g. a finished trial resumed, failed and finished again
    write(store, writer.render(e))
    head = json.loads(store[HEAD_KEY])
    assert sealed_id in [d["trial_id"] for d in head["trials"]]
    assert restore(store).trials[sealed_id].num_failures == rec.num_failures


def test_a_snapshot_without_segments_loads_as_it_is() -> None:
    e = engine()
    run_some(e, 5)
    state = json.loads(e.to_json())
    loaded, sealed = load_state(state, lambda key: b"")
    assert loaded == state and sealed == {}
