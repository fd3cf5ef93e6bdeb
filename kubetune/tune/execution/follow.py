"""Callbacks for an experiment that another process runs (the operator on a cluster): fed from
what its storage holds.

``StorageFollower.update(state, read_rows)`` takes ``experiment_state.json`` (in the local
shape, see ``kubetune.local.stored_state``) and a function that returns a trial's
``result.json`` rows, and tells a
:class:`~kubetune.tune.execution.callbacks.CallbackDispatcher` what changed since the last
call: new trials, starts, each new result (and its checkpoint), retried failures, ends. Call it
as often as the state is re-read; ``finish()`` once the experiment is over. A trial's restarts
between two reads can only be seen as its failure count, so a follower sees Ray's order per
trial but not every intermediate start of a trial that was retried quickly.

Every hook is delivered once. The follower's *cursor* (:meth:`StorageFollower.cursor`: per
trial, how many results were delivered, how many retried failures, whether it is started, which
end was reported; and whether the experiment's end was) advances right after each hook
returns, so a follower built from a saved cursor (a reattached notebook) carries on where the
last one stopped: no result twice, none skipped, in order per trial.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubetune.tune.execution.callbacks import ENDED, CallbackDispatcher
from kubetune.tune.experiment.trial import Trial

Rows = Callable[[dict[str, Any]], list[dict[str, Any]]]


def _memo(read_rows: Rows) -> Rows:
    """``read_rows`` that reads each trial's log at most once per update."""
    seen: dict[str, list[dict[str, Any]]] = {}

    def read(entry: dict[str, Any]) -> list[dict[str, Any]]:
        if entry["trial_id"] not in seen:
            seen[entry["trial_id"]] = read_rows(entry)
        return seen[entry["trial_id"]]

    return read


def _fresh() -> dict[str, Any]:
    return {
        "rows": 0,
        "failures": 0,
        "started": False,
        "ended": None,
        "checkpoint": None,
        "saved": False,
    }


class StorageFollower:
    def __init__(
        self, dispatcher: CallbackDispatcher, cursor: dict[str, Any] | None = None
    ) -> None:
        self.dispatcher = dispatcher
        cursor = cursor or {}
        self._trials: dict[str, dict[str, Any]] = {
            tid: {**_fresh(), **c} for tid, c in (cursor.get("trials") or {}).items()
        }
        self.finished = bool(cursor.get("finished"))
        dispatcher.iteration = max(dispatcher.iteration, int(cursor.get("iteration") or 0))
        self._resumed = set(self._trials)  # known to the cursor: read once

    def cursor(self) -> dict[str, Any]:
        """What has been delivered, as JSON-ready data (give it back to a new follower)."""
        return {
            "trials": {t: dict(c) for t, c in self._trials.items()},
            "finished": self.finished,
            "iteration": self.dispatcher.iteration,
        }

    def update(self, state: dict[str, Any], read_rows: Rows, final: bool = False) -> None:
        """Deliver what ``state`` and the result logs hold beyond the cursor. A trial whose
        results are not all stored yet (``num_results`` ahead of its log) ends on a later call,
        or on the ``final`` one (the experiment is over: what is stored is all there is)."""
        if self.finished:
            return
        self.dispatcher.step()
        read = _memo(read_rows)
        entries = state.get("trials", [])
        for entry in entries:  # every hook sees every trial the experiment has
            if self.dispatcher.trial(entry["trial_id"]) is None:
                cur = self._trials.setdefault(entry["trial_id"], _fresh())
                self._add(entry, cur, read(entry) if cur["rows"] > 0 else [])
        for entry in entries:
            self._update_trial(entry, read, final)

    def _update_trial(self, entry: dict[str, Any], read_rows: Rows, final: bool) -> None:
        d = self.dispatcher
        trial_id = entry["trial_id"]
        status = entry.get("status") or Trial.PENDING
        cur = self._trials.setdefault(trial_id, _fresh())
        if status in ENDED and cur["ended"] == status:
            return  # reported already
        expected = int(entry.get("num_results") or 0)
        need_rows = status != Trial.PENDING and (
            expected > cur["rows"] or trial_id in self._resumed or status in ENDED
        )
        rows = read_rows(entry) if need_rows else []
        self._resumed.discard(trial_id)
        failures = int(entry.get("num_failures") or 0)
        retried = failures - 1 if status == Trial.ERROR else failures
        while cur["failures"] < retried:  # an attempt ran, failed, and was retried
            self._start(trial_id, cur)
            self._results(trial_id, cur, rows)
            d.trial_failed(trial_id, entry.get("error"), will_retry=True)
            cur["failures"] += 1
            cur["started"] = False
        if len(rows) > cur["rows"] or status in (Trial.RUNNING, *ENDED):
            self._start(trial_id, cur)
        self._results(trial_id, cur, rows)
        if status in ENDED:
            if cur["rows"] < expected and not final:
                return  # its last results are on their way to storage
            trial = d.trial(trial_id)
            if trial is not None:
                trial.num_failures = failures
            d.trial_ended(trial_id, status, entry.get("error"))
            cur.update(ended=status, started=False, failures=max(cur["failures"], retried))
        elif status == Trial.PAUSED:
            d.trial_ended(trial_id, status)
            cur.update(started=False, ended=None)
        else:
            cur["ended"] = None  # revived (resume_errored) or running

    def _add(self, entry: dict[str, Any], cur: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Tell the dispatcher about a trial; one the cursor knows comes back as it was left
        (its status, its last delivered result), firing nothing."""
        trial_id = entry["trial_id"]
        config = entry.get("config") or (rows[0].get("config") if rows else None) or {}
        delivered = rows[: cur["rows"]]
        status = cur["ended"] or (Trial.RUNNING if cur["started"] else Trial.PENDING)
        last = delivered[-1] if delivered else (entry.get("last_result") if cur["rows"] else None)
        if last and isinstance(last.get("config"), dict):
            config = last["config"]
        self.dispatcher.trial_added(
            trial_id,
            entry["trial_name"],
            entry.get("experiment_tag") or "",
            config,
            status=status,
            last_result=last,
        )
        trial = self.dispatcher.trial(trial_id)
        if trial is not None:
            trial.num_failures = cur["failures"]
        if cur["checkpoint"]:  # its hooks ran before the reattach
            self.dispatcher.trial_checkpoint(trial_id, cur["checkpoint"], silent=True)

    def _start(self, trial_id: str, cur: dict[str, Any]) -> None:
        if not cur["started"]:
            self.dispatcher.trial_started(trial_id)
            cur["started"] = True

    def _results(self, trial_id: str, cur: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Each new row's ``on_trial_result``, then its checkpoint's hooks: two steps, each
        counted in the cursor as soon as it has run."""
        if 0 < cur["rows"] <= len(rows):  # a checkpoint whose hooks were cut off
            self._checkpoint(trial_id, cur, rows[cur["rows"] - 1])
        while cur["rows"] < len(rows):
            row = rows[cur["rows"]]
            config = row.get("config")
            if isinstance(config, dict):
                self.dispatcher.set_config(trial_id, config)
            self.dispatcher.trial_result(trial_id, row, checkpoint=False)
            cur["rows"] += 1
            self._checkpoint(trial_id, cur, row)

    def _checkpoint(self, trial_id: str, cur: dict[str, Any], row: dict[str, Any]) -> None:
        name = row.get("checkpoint_dir_name")
        if not name:
            return
        if str(name) != cur["checkpoint"]:
            self.dispatcher.trial_checkpoint(trial_id, str(name), save_hook=False)
            cur.update(checkpoint=str(name), saved=False)
        if not cur["saved"]:
            self.dispatcher.trial_saved(trial_id)
            cur["saved"] = True

    def finish(self) -> None:
        if not self.finished:
            self.dispatcher.experiment_end()
            self.finished = True
