"""What the notebook sees of a cluster experiment while ``Tuner.fit()`` waits on it: local
mode's live table, and the user's callbacks (``RunConfig.callbacks``, a ``progress_reporter``)
run here, in the notebook's process, from what the experiment's storage holds.

Each poll reads the operator's snapshot (``experiment_state.json`` and its segments, each
segment fetched once) and, when there are callbacks, the new ``result.json`` lines of the
trials that have some; :class:`~kubetune.tune.execution.follow.StorageFollower` turns them into
Ray's hooks. Exactly once across Ctrl-C and reattach: Ctrl-C is held back while hooks run (the
interrupt lands between polls), and after each poll the follower's cursor and the callbacks'
state are stored beside the experiment (``.kubetune/follower.json``, ``callbacks.pkl``, with
the notebook user's storage credentials; the operator never reads them), so
``Tuner.restore(uri).fit()`` carries on with the next undelivered result.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

from kubetune.local.common import expected_trials, trainable_name
from kubetune.local.progress import Progress, snapshot_of_summaries
from kubetune.local.stored_state import StoredStateReader
from kubetune.storage import StorageError
from kubetune.trial.lines import complete_rows

CURSOR = ".kubetune/follower.json"
CALLBACK_STATE = ".kubetune/callbacks.pkl"
FOLLOWER_FILES = (CURSOR, CALLBACK_STATE)
FINAL_WAIT_S = 15.0  # after the phase turns terminal, how long the snapshot may lag


@contextlib.contextmanager
def held_interrupt() -> Iterator[None]:
    """Ctrl-C while the block runs is raised when it ends (hooks are never cut in half)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


class _Log:
    """What was read of one trial's ``result.json``: its complete lines, and where they end."""

    def __init__(self) -> None:
        self.offset = 0
        self.rows: list[dict[str, Any]] = []

    def take(self, data: bytes) -> None:
        rows, used = complete_rows(data)  # a torn last line (an upload under way) waits
        self.rows.extend(rows)
        self.offset += used


class ClusterView:
    def __init__(self, tuner: Any, storage: Any, uri: str, name: str) -> None:
        from kubetune.tune.execution.defaults import experiment_callbacks

        rc, tc = tuner.run_config, tuner.tune_config
        self.storage = storage
        self.uri = uri
        self.metric, self.mode = tc.metric, tc.mode
        self.reader = StoredStateReader(storage)
        expected = expected_trials(tc, tuner.param_space)
        self.progress = Progress(
            0 if rc.progress_reporter is not None else rc.verbose,
            self.metric,
            self.mode,
            expected,
            name,
        )
        self._dirnames: dict[str, str] = {}
        self._logs: dict[str, _Log] = {}
        self._saved: str | None = None
        self._warned = False
        self.follower: Any = None
        callbacks = experiment_callbacks(
            rc.callbacks, rc.progress_reporter, self.metric, self.mode, auto_loggers=False
        )
        if not callbacks:
            return
        from kubetune.local.experiment import open_experiment_dir
        from kubetune.tune.execution.callbacks import CallbackDispatcher
        from kubetune.tune.execution.follow import StorageFollower

        self.local_dir, _ = open_experiment_dir(uri)  # where loggers write, on this machine
        dispatcher = CallbackDispatcher(
            callbacks,
            self.local_dir,
            trainable_name=trainable_name(tuner.trainable),
            param_space=tuner.param_space,
            checkpoint_for=self._checkpoint,
        )
        saved = self._load(CALLBACK_STATE)
        if saved is not None:
            dispatcher.set_state(pickle.loads(saved))
        dispatcher.setup(
            stop=rc.stop,
            num_samples=tc.num_samples,
            total_num_samples=expected,
            time_budget_s=tc.time_budget_s,
        )
        cursor = self._load(CURSOR)
        self.follower = StorageFollower(dispatcher, json.loads(cursor) if cursor else None)
        self._saved = cursor.decode() if cursor else None

    # -- storage ------------------------------------------------------------------------------
    def _load(self, key: str) -> bytes | None:
        try:
            return bytes(self.storage.get_bytes(key))
        except FileNotFoundError:
            return None

    def _checkpoint(self, trial_id: str, checkpoint_dir_name: str) -> Any:
        from kubetune.local.stored_checkpoint import StoredCheckpoint

        dirname = self._dirnames.get(trial_id, trial_id)
        return StoredCheckpoint(
            self.storage.uri(f"{dirname}/{checkpoint_dir_name}"),
            os.path.join(self.local_dir, dirname, checkpoint_dir_name),
        )

    def _rows(self, entry: dict[str, Any]) -> list[dict[str, Any]]:
        """A trial's result rows, reading only the bytes its log gained since the last poll
        (a ranged GET in S3): a log of 10,000 results is not fetched again every poll."""
        log = self._logs.setdefault(entry["dirname"], _Log())
        # the sidecar only ever appends to it (the stored bytes, then its attempt's lines)
        log.take(self.storage.get_bytes_from(f"{entry['dirname']}/result.json", log.offset))
        return log.rows

    def _save(self) -> None:
        cursor = json.dumps(self.follower.cursor(), sort_keys=True)
        if cursor == self._saved:
            return
        try:
            state = self.follower.dispatcher.get_state()
            if state is not None:
                self.storage.put_bytes(CALLBACK_STATE, pickle.dumps(state))
            self.storage.put_bytes(CURSOR, cursor.encode())
            self._saved = cursor
        except (StorageError, OSError) as exc:
            self._warn(f"cannot store which results the callbacks have seen ({exc})")

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            print(f"kubetune: {message}; continuing", file=sys.stderr, flush=True)

    # -- polling ------------------------------------------------------------------------------
    def poll(self, final: bool = False) -> None:
        """Read the stored state once, run the hooks it calls for, redraw the table.
        ``final``: the experiment is over; wait a little for its last snapshot, deliver what
        is stored and end the callbacks' experiment."""
        state = self._read()
        deadline = time.monotonic() + FINAL_WAIT_S
        while final and state is not None and not state.get("finished"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
            state = self._read() or state
        if state is None:
            return
        for entry in state.get("trials", []):
            self._dirnames[entry["trial_id"]] = entry["dirname"]
        if self.follower is not None:
            with held_interrupt():
                try:
                    self.follower.update(state, self._rows, final=final)
                    if final:
                        self.follower.finish()
                finally:
                    self._save()
        self.progress.show(snapshot_of_summaries(state.get("trials", []), self.metric, self.mode))

    def _read(self) -> dict[str, Any] | None:
        try:
            return self.reader.read()
        except (StorageError, OSError, ValueError, KeyError) as exc:
            self._warn(f"cannot read {self.uri} now ({exc})")
            return None

    def close(self) -> None:
        self.progress.close()
