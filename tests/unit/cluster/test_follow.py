"""What the notebook shows and runs while a cluster experiment goes on (kubetune.cluster.follow),
driven by an operator-shaped snapshot (the real engine, rendered by the operator's
SnapshotWriter into segments and a head) and result logs in storage: local mode's table, the
user's callbacks, and after a "Ctrl-C" a second view that carries on with no hook twice."""

from __future__ import annotations

import json
from typing import Any

from kubetune import air, tune
from kubetune.cluster.follow import CALLBACK_STATE, CURSOR, ClusterView, _Log, held_interrupt
from kubetune.engine import EngineConfig, ExperimentEngine
from kubetune.engine.snapshot import SnapshotWriter
from kubetune.local.stored_state import operator_trial_dirname
from kubetune.storage import open_storage

NAME = "exp"


class Counting(tune.Callback):
    """Records trial hooks and keeps a count as its saved state."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.results = 0

    def on_trial_start(self, iteration, trials, trial, **info):
        self.calls.append(("start", str(trial), None))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results += 1
        self.calls.append(("result", str(trial), result["training_iteration"]))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.calls.append(("checkpoint", str(trial), checkpoint.uri))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.calls.append(("complete", str(trial), trial.last_result["score"]))

    def on_experiment_end(self, trials, **info):
        self.calls.append(("end", "", len(trials)))

    def get_state(self):
        return {"results": self.results}

    def set_state(self, state):
        self.results = state["results"]


def trainable(config):
    pass


class FakeOperator:
    """The engine as the operator drives it, writing what the operator and sidecars write."""

    def __init__(self, storage: Any) -> None:
        config = EngineConfig(
            param_space={"x": tune.grid_search([1, 2])}, metric="score", mode="max", name=NAME
        )
        self.engine = ExperimentEngine(config, seed=1)
        self.storage = storage
        self.writer = SnapshotWriter(1, wrap=lambda st: {"engine": st, "experiment": NAME})
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.ids = [a.trial_id for a in self.engine.start(0.0)]

    def snapshot(self) -> None:
        for key, blob in self.writer.render(self.engine):
            self.storage.put_bytes(key, blob)

    def report(self, tid: str, i: int, ckpt: str | None = None) -> None:
        rec = self.engine.trials[tid]
        if rec.status == "PENDING":
            self.engine.on_trial_started(tid, float(i))
        row = {"training_iteration": i, "score": rec.config["x"] * 10 + i, "config": rec.config}
        if ckpt:
            row["checkpoint_dir_name"] = ckpt
        self.engine.on_result(tid, row, float(i))
        self.rows.setdefault(tid, []).append(row)
        blob = "".join(json.dumps(r) + "\n" for r in self.rows[tid]).encode()
        self.storage.put_bytes(f"{operator_trial_dirname(NAME, tid)}/result.json", blob)

    def complete(self, tid: str) -> None:
        self.engine.on_trial_complete(tid, 99.0)


def _tuner(callback: Counting, verbose: int = 1) -> tune.Tuner:
    return tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search([1, 2])},
        tune_config=tune.TuneConfig(metric="score", mode="max"),
        run_config=air.RunConfig(name=NAME, callbacks=[callback], verbose=verbose),
    )


def test_callbacks_and_the_table_follow_storage_and_a_reattach_repeats_nothing(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "bucket" / NAME
    storage = open_storage(str(root))
    op = FakeOperator(storage)
    a, b = op.ids

    first = Counting()
    view = ClusterView(_tuner(first), storage, str(root), NAME)
    view.poll()  # nothing stored yet: nothing happens
    assert first.calls == []
    op.snapshot()
    op.report(a, 1)
    op.report(a, 2, "checkpoint_000000")
    op.snapshot()
    view.poll()
    view.poll()  # a second read of the same storage adds nothing
    ta = str(view.follower.dispatcher.trial(a))
    assert [c[:2] for c in first.calls] == [
        ("start", ta),
        ("result", ta),
        ("result", ta),
        ("checkpoint", ta),
    ]
    assert first.calls[-1][2] == storage.uri(f"{operator_trial_dirname(NAME, a)}/checkpoint_000000")
    view.close()  # Ctrl-C: detached
    assert json.loads(storage.get_bytes(CURSOR))["trials"][a]["rows"] == 2
    assert storage.exists(CALLBACK_STATE)

    op.report(a, 3)
    op.complete(a)
    op.report(b, 1)
    op.complete(b)
    op.engine.on_tick(100.0)
    op.snapshot()
    second = Counting()  # the restored Tuner's callbacks, state from storage
    again = ClusterView(_tuner(second), storage, str(root), NAME)
    assert second.results == 2
    again.poll(final=True)
    again.close()
    tb = str(again.follower.dispatcher.trial(b))
    assert second.calls == [
        ("result", ta, 3),
        ("complete", ta, 13),
        ("start", tb, None),
        ("result", tb, 1),
        ("complete", tb, 21),
        ("end", "", 2),
    ]
    assert second.results == 4
    # local mode's table, as local mode prints it at the end
    out = capsys.readouterr().out
    assert f"{NAME}: 2/2 trials done" in out
    assert "best score = 21" in out and ta in out and tb in out

    third = Counting()  # reattaching to the finished experiment: nothing more
    done = ClusterView(_tuner(third, verbose=0), storage, str(root), NAME)
    done.poll(final=True)
    assert third.calls == []


def test_without_callbacks_only_the_table_reads_storage(tmp_path, capsys):
    storage = open_storage(str(tmp_path / NAME))
    op = FakeOperator(storage)
    op.report(op.ids[0], 1)
    op.snapshot()
    tuner = tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search([1, 2])},
        tune_config=tune.TuneConfig(metric="score", mode="max"),
        run_config=air.RunConfig(name=NAME),
    )
    view = ClusterView(tuner, storage, str(tmp_path / NAME), NAME)
    assert view.follower is None
    view.poll()
    view.close()
    assert not storage.exists(CURSOR)
    out = capsys.readouterr().out
    assert f"{NAME}: 0/2 trials done" in out and "RUNNING: 1" in out and "PENDING: 1" in out


def test_a_torn_last_line_waits_for_the_next_read_and_a_damaged_one_is_skipped():
    log = _Log()
    log.take(b'{"a": 1}\n{"a": 2}\n{"a"')
    assert log.rows == [{"a": 1}, {"a": 2}] and log.offset == len(b'{"a": 1}\n{"a": 2}\n')
    log.take(b'{"a": 3}\nnot json\n{"a": 4}\n')  # the torn line, complete now, and more
    assert log.rows == [{"a": 1}, {"a": 2}, {"a": 3}, {"a": 4}]


def test_each_poll_reads_only_what_a_result_log_gained(tmp_path):
    """The notebook polls every few seconds; a long trial's result.json is not fetched whole
    each time (a ranged GET in S3, a seek locally)."""
    storage = open_storage(str(tmp_path))
    reads: list[tuple[str, int, int]] = []
    real = storage.get_bytes_from

    def recording(key: str, start: int) -> bytes:
        data = real(key, start)
        reads.append((key, start, len(data)))
        return data

    storage.get_bytes_from = recording  # type: ignore[method-assign]
    lines = [json.dumps({"training_iteration": i, "pad": "x" * 100}) + "\n" for i in range(50)]
    storage.put_bytes("t/result.json", "".join(lines[:40]).encode())
    view = ClusterView(tune.Tuner(trainable), storage, str(tmp_path), NAME)
    entry = {"dirname": "t", "trial_id": "t"}
    assert len(view._rows(entry)) == 40
    storage.put_bytes("t/result.json", "".join(lines).encode())
    rows = view._rows(entry)
    assert [r["training_iteration"] for r in rows] == list(range(50))
    first, second = reads
    assert first[1] == 0
    assert second[1] == len("".join(lines[:40])) and second[2] == len("".join(lines[40:]))


def test_ctrl_c_during_the_hooks_is_raised_after_them():
    import os
    import signal

    import pytest

    ran = []
    with pytest.raises(KeyboardInterrupt), held_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        ran.append("after the signal")
    assert ran == ["after the signal"]


def test_the_stored_state_gives_the_table_local_mode_draws_from_its_engine(tmp_path):
    """The same snapshot (counts, best trial, rows) from the operator's stored state as local
    mode's Progress takes from its engine: one table, two sources."""
    from kubetune.local.progress import snapshot, snapshot_of_summaries
    from kubetune.local.stored_state import operator_state

    op = FakeOperator(open_storage(str(tmp_path / NAME)))
    a, b = op.ids
    op.report(a, 1)
    op.report(a, 2)
    op.complete(a)
    op.report(b, 1)

    class Backend:
        engine = op.engine
        results_seen = 3

    local = snapshot(Backend, "score", "max")  # type: ignore[arg-type]
    head = {"engine": json.loads(op.engine.to_json()), "experiment": NAME}
    stored = operator_state(head, lambda key: b"", NAME)
    assert snapshot_of_summaries(stored["trials"], "score", "max") == local
    assert local["best"]["value"] == 21 and local["counts"]["TERMINATED"] == 1
