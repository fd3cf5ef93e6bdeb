"""Callbacks for an experiment that another process runs (the operator on a cluster): fed from
what its storage holds.

``StorageFollower.update(state, read_rows)`` takes ``experiment_state.json`` (as a dict) and a
function that returns a trial's ``result.json`` rows, and tells a
:class:`~kubetune.tune.execution.callbacks.CallbackDispatcher` what changed since the last
call: new trials, starts, each new result (and its checkpoint), retried failures, ends. Call it
as often as the state is re-read; ``finish()`` once the experiment is over. A trial's restarts
between two reads can only be seen as its failure count, so a follower sees Ray's order per
trial but not every intermediate start of a trial that was retried quickly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubetune.tune.execution.callbacks import ENDED, CallbackDispatcher
from kubetune.tune.experiment.trial import Trial


class StorageFollower:
    def __init__(self, dispatcher: CallbackDispatcher) -> None:
        self.dispatcher = dispatcher
        self._rows_seen: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._started: set[str] = set()
        self._status: dict[str, str] = {}

    def update(
        self, state: dict[str, Any], read_rows: Callable[[dict[str, Any]], list[dict[str, Any]]]
    ) -> None:
        d = self.dispatcher
        d.step()
        for entry in state.get("trials", []):
            trial_id = entry["trial_id"]
            status = entry.get("status", Trial.PENDING)
            if status in ENDED and self._status.get(trial_id) == status:
                continue  # reported already
            self._status[trial_id] = status
            known = d.trial(trial_id) is not None
            rows = read_rows(entry) if status != Trial.PENDING or known else []
            if not known:
                config = rows[0].get("config", {}) if rows else {}
                d.trial_added(
                    trial_id, entry["trial_name"], entry.get("experiment_tag", ""), config
                )
            seen = self._rows_seen.get(trial_id, 0)
            failures = entry.get("num_failures", 0)
            new_failures = failures - self._failures.get(trial_id, 0)
            for k in range(max(0, new_failures)):
                if k == new_failures - 1 and status == Trial.ERROR:
                    break  # the failure that ended it: trial_ended below
                # an attempt ran (its results so far), failed, and was retried
                self._start(trial_id)
                self._results(trial_id, rows, seen, len(rows))
                seen = len(rows)
                d.trial_failed(trial_id, entry.get("error"), will_retry=True)
                self._started.discard(trial_id)
            self._failures[trial_id] = failures
            if len(rows) > seen or status in (Trial.RUNNING, *ENDED):
                self._start(trial_id)
            self._results(trial_id, rows, seen, len(rows))
            self._rows_seen[trial_id] = max(seen, len(rows))
            if status in ENDED:
                trial = d.trial(trial_id)
                if trial is not None:
                    trial.num_failures = failures
                d.trial_ended(trial_id, status, entry.get("error"))
                self._started.discard(trial_id)
            elif status == Trial.PAUSED:
                d.trial_ended(trial_id, status)
                self._started.discard(trial_id)

    def _start(self, trial_id: str) -> None:
        if trial_id not in self._started:
            self._started.add(trial_id)
            self.dispatcher.trial_started(trial_id)

    def _results(self, trial_id: str, rows: list[dict[str, Any]], start: int, end: int) -> None:
        for row in rows[start:end]:
            config = row.get("config")
            if isinstance(config, dict):
                self.dispatcher.set_config(trial_id, config)
            self.dispatcher.trial_result(trial_id, row)
        self._rows_seen[trial_id] = max(self._rows_seen.get(trial_id, 0), end)

    def finish(self) -> None:
        self.dispatcher.experiment_end()
