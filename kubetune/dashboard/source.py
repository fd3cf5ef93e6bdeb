"""Experiments read live from storage, incrementally: what the dashboard holds in memory.

An :class:`ExperimentView` re-reads ``experiment_state.json`` (and the immutable snapshot
segments an operator writes, each once) and, for each trial, only the bytes of its
``result.json`` past what it already parsed (a file read from an offset locally, a ranged GET
in S3, after one listing says which files grew). Of each result row it keeps the numbers, one
column per flattened key, so 1,000 trials x 100 rows stay a few megabytes; a trial's page reads
its full rows from storage again.

Every refresh that changes something takes a new sequence number; each trial remembers how
many rows it had at each number, so a client that saw sequence ``s`` is sent only what came
after (:meth:`TrialView.rows_at`).
"""

from __future__ import annotations

import bisect
import json
import math
import threading
import time
from array import array
from typing import Any

from kubetune._util import flatten_dict
from kubetune.local.stored_state import operator_trial_dirname
from kubetune.storage import Storage
from kubetune.storage.base import join_key
from kubetune.trial.lines import complete_rows

STATE_FILE = "experiment_state.json"
RESULT_FILE = "result.json"
FINISHED_STATES = ("TERMINATED", "ERROR")


def result_sizes(storage: Storage, exp_key: str, dirnames: list[str]) -> dict[str, int]:
    """The size of each trial's result.json (absent ones left out): a stat per file locally,
    one listing of the experiment in S3."""
    wanted = set(dirnames)
    sizes: dict[str, int] = {}
    for key, size in storage.sizes(exp_key).items():
        rel = key[len(exp_key) :].lstrip("/") if exp_key else key
        dirname, _, name = rel.rpartition("/")
        if name == RESULT_FILE and dirname in wanted:
            sizes[dirname] = size
    return sizes


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TrialView:
    """One trial: its record from the state file and the numbers of its result rows."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
        self.index = 0
        self.name = trial_id
        self.dirname = trial_id
        self.status = "PENDING"
        self.config: dict[str, Any] = {}
        self.error: str | None = None
        self.stop_reason: str | None = None
        self.num_failures = 0
        self.checkpoints: list[str] = []
        self.latest_checkpoint: str | None = None
        # PBT exploits the engine recorded: {donor, checkpoint, iteration, result}, in order
        self.exploits: list[dict[str, Any]] = []
        self.offset = 0
        self.n = 0
        self.columns: dict[str, array] = {}
        self.last: dict[str, Any] = {}
        self.last_config: dict[str, Any] | None = None
        # PBT: (row index, training_iteration, old config, new config) where the config changed
        self.config_changes: list[tuple[int, Any, dict[str, Any], dict[str, Any]]] = []
        self.marks: list[tuple[int, int]] = []  # (sequence, rows after it)
        self.changed = 0

    def update_record(self, rec: dict[str, Any], summary: dict[str, Any]) -> bool:
        before = self.record_key()
        self.index = int(rec.get("index", self.index))
        self.name = str(rec.get("name") or summary.get("trial_name") or self.trial_id)
        self.dirname = str(summary.get("dirname") or rec.get("name") or self.trial_id)
        self.status = str(rec.get("status") or summary.get("status") or "PENDING")
        self.config = rec.get("config") or self.config
        self.error = rec.get("error") or summary.get("error")
        self.stop_reason = rec.get("stop_reason")
        self.num_failures = int(rec.get("num_failures") or summary.get("num_failures") or 0)
        checkpoints = summary.get("checkpoints")
        if checkpoints is None:
            checkpoints = [c[2] for c in rec.get("checkpoints") or [] if len(c) > 2]
        self.checkpoints = list(checkpoints)
        self.latest_checkpoint = summary.get("latest_checkpoint") or rec.get("latest_checkpoint")
        exploits = rec.get("exploits")
        self.exploits = (
            [e for e in exploits if isinstance(e, dict)] if isinstance(exploits, list) else []
        )
        return before != self.record_key()

    def record_key(self) -> tuple[Any, ...]:
        return (
            self.status,
            self.error,
            self.stop_reason,
            self.num_failures,
            len(self.checkpoints),
            self.latest_checkpoint,
            len(self.exploits),
            json.dumps(self.config, sort_keys=True, default=str),
        )

    def reset_rows(self) -> None:
        self.offset = 0
        self.n = 0
        self.columns = {}
        self.last = {}
        self.last_config = None
        self.config_changes = []
        self.marks = []

    def ingest(self, data: bytes) -> int:
        """Parse the complete lines of ``data`` (bytes after ``offset``); return rows added."""
        rows, used = complete_rows(data)
        for row in rows:
            self._add_row(row)
        self.offset += used
        return len(rows)

    def _add_row(self, row: dict[str, Any]) -> None:
        config = row.get("config")
        if isinstance(config, dict):
            if self.last_config is not None and config != self.last_config:
                self.config_changes.append(
                    (self.n, row.get("training_iteration"), self.last_config, config)
                )
            self.last_config = config
        flat = flatten_dict({k: v for k, v in row.items() if k != "config"})
        for key, value in flat.items():
            if not is_number(value):
                continue
            column = self.columns.get(key)
            if column is None:
                column = self.columns[key] = array("d", [math.nan]) * self.n
            column.append(float(value))
        for column in self.columns.values():
            if len(column) < self.n + 1:
                column.append(math.nan)
        self.n += 1
        self.last = flat

    def rows_at(self, seq: int) -> int:
        """How many rows this trial had when the sequence number was ``seq``."""
        i = bisect.bisect_right(self.marks, (seq, float("inf"))) - 1
        return self.marks[i][1] if i >= 0 else 0

    def values(self, key: str, start: int = 0) -> list[float | None]:
        column = self.columns.get(key)
        if column is None:
            return [None] * (self.n - start)
        return [None if math.isnan(v) else v for v in column[start:]]


class ExperimentView:
    """One experiment under a storage root, refreshed at most every ``min_interval_s``."""

    def __init__(self, storage: Storage, key: str, min_interval_s: float = 0.5) -> None:
        self.storage = storage
        self.key = key.strip("/")
        self.min_interval_s = min_interval_s
        self.trials: dict[str, TrialView] = {}
        self.order: list[str] = []
        self.seq = 0
        self.metric: str | None = None
        self.mode: str | None = None
        self.finished: Any = None
        self.updated: float | None = None
        self.param_space: Any = None
        self.scheduler = ""
        self._segments: dict[str, list[dict[str, Any]]] = {}
        self._last_refresh = -math.inf
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return self.storage.uri(self.key)

    def refresh(self, force: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_refresh < self.min_interval_s:
                return
            self._last_refresh = now
            changed: set[str] = set()
            self._read_state(changed)
            self._read_results(changed)
            if changed:
                self.seq += 1
                for trial_id in changed:
                    trial = self.trials[trial_id]
                    trial.changed = self.seq
                    trial.marks.append((self.seq, trial.n))

    def _read_state(self, changed: set[str]) -> None:
        state = json.loads(self.storage.get_bytes(join_key(self.key, STATE_FILE)))
        engine = state.get("engine") if isinstance(state.get("engine"), dict) else state
        summaries = {t["trial_id"]: t for t in state.get("trials", []) if "dirname" in t}
        # the operator's snapshot ({"engine": head, "experiment": name}) has no summaries: its
        # trials' folders are their TuneTrials' names, as ResultGrid reads them
        operator_experiment = state.get("experiment") if not summaries else None
        records = {}
        for seg in engine.get("segments") or []:
            if seg not in self._segments:  # segments never change once written
                body = json.loads(self.storage.get_bytes(join_key(self.key, seg)))
                self._segments[seg] = body.get("trials", [])
            for rec in self._segments[seg]:
                records[rec["trial_id"]] = rec
        for rec in engine.get("trials", []):
            records[rec["trial_id"]] = rec
        config = engine.get("config") or {}
        self.metric = state.get("metric") or config.get("metric")
        self.mode = state.get("mode") or config.get("mode")
        self.param_space = config.get("param_space")
        self.scheduler = (engine.get("scheduler") or {}).get("type", "")
        self.finished = state.get("finished") or engine.get("finished")
        self.updated = state.get("updated")
        for trial_id, rec in records.items():
            trial = self.trials.get(trial_id)
            if trial is None:
                trial = self.trials[trial_id] = TrialView(trial_id)
                changed.add(trial_id)
            summary = summaries.get(trial_id) or {}
            if not summary and isinstance(operator_experiment, str):
                summary = {"dirname": operator_trial_dirname(operator_experiment, trial_id)}
            if trial.update_record(rec, summary):
                changed.add(trial_id)
        self.order = sorted(self.trials, key=lambda t: self.trials[t].index)

    def _read_results(self, changed: set[str]) -> None:
        dirnames = [self.trials[t].dirname for t in self.order]
        sizes = result_sizes(self.storage, self.key, dirnames)
        for trial_id in self.order:
            trial = self.trials[trial_id]
            size = sizes.get(trial.dirname, 0)
            if size < trial.offset:  # rewritten from the start
                trial.reset_rows()
                changed.add(trial_id)
            if size <= trial.offset:
                continue
            key = join_key(self.key, trial.dirname, RESULT_FILE)
            data = self.storage.get_bytes_from(key, trial.offset)
            if trial.ingest(data):
                changed.add(trial_id)

    def state_name(self) -> str:
        if self.finished:
            return "FINISHED"
        if any(self.trials[t].status in ("RUNNING", "PENDING", "PAUSED") for t in self.order):
            return "RUNNING"
        return "RUNNING" if not self.order else "STOPPED"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for trial in self.trials.values():
            out[trial.status] = out.get(trial.status, 0) + 1
        return out


def find_experiments(storage: Storage) -> list[str]:
    """Keys of the experiments under the root: the root itself if it is one, else each child
    (and grandchild, for a root of roots) that holds an experiment_state.json."""
    if storage.exists(STATE_FILE):
        return [""]
    found: list[str] = []
    for child in storage.list_children(""):
        if child.startswith(".") or child.endswith(".json"):
            continue
        if storage.exists(join_key(child, STATE_FILE)):
            found.append(child)
    return found
