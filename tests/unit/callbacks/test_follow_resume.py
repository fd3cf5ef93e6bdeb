"""StorageFollower across a detach: a follower built from a saved cursor (Ctrl-C in the
notebook, then ``Tuner.restore(uri).fit()``) delivers every hook exactly once, in order per
trial, wherever the first one was cut off, a hook interrupted halfway included."""

from __future__ import annotations

import json

import pytest

from kubetune import tune
from kubetune.air.checkpoint import Checkpoint
from kubetune.tune.execution.callbacks import CallbackDispatcher
from kubetune.tune.execution.follow import StorageFollower


class Log(tune.Callback):
    def __init__(self, calls):
        self.calls = calls

    def _add(self, hook, trial, detail=None):
        self.calls.append((hook, str(trial), detail))

    def on_trial_start(self, iteration, trials, trial, **info):
        self._add("start", trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._add("result", trial, result["training_iteration"])

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self._add("checkpoint", trial, checkpoint.path.rsplit("/", 1)[1])

    def on_trial_save(self, iteration, trials, trial, **info):
        self._add("save", trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._add("recover", trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._add("complete", trial, len(trials))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._add("error", trial, trial.num_failures)

    def on_experiment_end(self, trials, **info):
        self.calls.append(("end", None, len(trials)))


class CutOff(tune.Callback):
    """Raises KeyboardInterrupt on the n-th trial hook (before the log sees it)."""

    def __init__(self, n):
        self.n = n
        self.seen = 0

    def _tick(self, *args, **kwargs):
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt

    on_trial_start = on_trial_result = on_checkpoint = on_trial_save = _tick
    on_trial_recover = on_trial_complete = on_trial_error = _tick


def _row(i, ckpt=None):
    row = {"training_iteration": i, "score": float(i), "config": {"x": 1}}
    if ckpt:
        row["checkpoint_dir_name"] = ckpt
    return row


ROWS = {
    "a": [_row(1), _row(2, "checkpoint_000000"), _row(3), _row(4, "checkpoint_000001"), _row(5)],
    "b": [_row(1), _row(2)],
}


def _state(a_status, a_n, b_status, b_n, b_failures=0):
    def entry(tid, status, n, failures=0):
        return {
            "trial_id": tid,
            "trial_name": f"t_{tid}",
            "dirname": f"t_{tid}",
            "status": status,
            "num_results": n,
            "num_failures": failures,
            "config": {"x": 1},
            "last_result": ROWS[tid][n - 1] if n else None,
            "error": "boom" if status == "ERROR" else None,
        }

    return {
        "trials": [entry("a", a_status, a_n), entry("b", b_status, b_n, b_failures)],
    }


# what storage holds at each poll: a runs and checkpoints twice; b fails once, is retried,
# fails again and ends in ERROR
STATES = [
    (_state("RUNNING", 2, "PENDING", 0), {"a": 2, "b": 0}),
    (_state("RUNNING", 4, "RUNNING", 1), {"a": 4, "b": 1}),
    (_state("RUNNING", 4, "RUNNING", 2, 1), {"a": 4, "b": 1}),  # b's log lags its count
    (_state("TERMINATED", 5, "ERROR", 2, 2), {"a": 5, "b": 2}),
]


def _follow(calls, cursor=None, states=STATES, cut=None):
    """(cursor, index of the poll it stopped in, or None when it ran to the end)."""
    callbacks = [Log(calls)] if cut is None else [CutOff(cut), Log(calls)]
    d = CallbackDispatcher(
        callbacks,
        "/nowhere",
        checkpoint_for=lambda tid, name: Checkpoint(local_path=f"/nowhere/{tid}/{name}"),
    )
    follower = StorageFollower(d, json.loads(json.dumps(cursor)) if cursor else None)
    polls = [*states, (STATES[-1][0], None)]
    for i, (state, stored) in enumerate(polls):
        try:
            if stored is None:  # the experiment is over: everything is stored
                follower.update(state, lambda e: ROWS[e["trial_id"]], final=True)
                follower.finish()
            else:
                follower.update(state, lambda e, n=stored: ROWS[e["trial_id"]][: n[e["trial_id"]]])
        except KeyboardInterrupt:
            return follower.cursor(), i
    return follower.cursor(), None


def _per_trial(calls, name):
    return [(h, d) for h, t, d in calls if t == name]


def test_one_follower_sees_rays_order_per_trial():
    calls = []
    _follow(calls)
    assert _per_trial(calls, "t_a") == [
        ("start", None),
        ("result", 1),
        ("result", 2),
        ("checkpoint", "checkpoint_000000"),
        ("save", None),
        ("result", 3),
        ("result", 4),
        ("checkpoint", "checkpoint_000001"),
        ("save", None),
        ("result", 5),
        ("complete", 2),
    ]
    assert _per_trial(calls, "t_b") == [
        ("start", None),
        ("result", 1),
        ("recover", None),
        ("start", None),
        ("result", 2),
        ("error", 2),
    ]
    assert calls[-1] == ("end", None, 2)


def _reference():
    calls = []
    _follow(calls)
    return calls


@pytest.mark.parametrize("cut", range(1, 18))
def test_a_reattached_follower_delivers_each_hook_once(cut):
    reference = _reference()
    assert len([c for c in reference if c[0] != "end"]) == 17
    first = []
    cursor, stopped = _follow(first, cut=cut)
    assert stopped is not None
    # a new process (fresh dispatcher and callbacks) from the saved cursor, reading the
    # storage from the poll that was cut off on
    second = []
    _, stopped = _follow(second, cursor=cursor, states=STATES[stopped:])
    assert stopped is None
    for name in ("t_a", "t_b"):
        assert _per_trial(first, name) + _per_trial(second, name) == _per_trial(reference, name)
    assert second[-1] == ("end", None, 2)  # the reattached one knows both trials


@pytest.mark.parametrize("cut", range(1, 18))
def test_reattached_after_missing_polls_no_result_is_lost_or_repeated(cut):
    first, second = [], []
    cursor, _ = _follow(first, cut=cut)
    _follow(second, cursor=cursor, states=STATES[-1:])  # it sees only what storage holds now
    calls = first + second
    for name, n in (("t_a", 5), ("t_b", 2)):
        assert [d for h, t, d in calls if t == name and h == "result"] == list(range(1, n + 1))
    assert [d for h, t, d in calls if h == "checkpoint"] == [
        "checkpoint_000000",
        "checkpoint_000001",
    ]
    assert [(h, t) for h, t, _ in calls if h in ("complete", "error")] == [
        ("complete", "t_a"),
        ("error", "t_b"),
    ]
    assert [h for h, _, _ in calls].count("end") == 1


def test_a_finished_follower_delivers_nothing_more():
    calls = []
    cursor, _ = _follow(calls)
    again = []
    _, stopped = _follow(again, cursor=cursor)
    assert stopped is None and again == []
