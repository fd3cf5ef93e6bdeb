"""The sidecar's phases: restore, then upload + report + gate relay until the trial ends.

Threads: the main loop scans ``ROOT`` (results, checkpoints, gate, done marker); one thread
uploads checkpoints, one uploads logs and deletes surplus checkpoints, one writes the status
report (rate-limited), one waits for verdicts while a decision is pending, one samples GPUs.
Storage and API failures are retried with backoff by the thread that met them; the others go
on. Everything that must not be redone is recorded in :class:`SidecarState` first.

The parts: ``base`` (shared state and helpers), ``restore`` (inputs, keep-rule), ``uploads``,
``reporting`` (status report, verdicts, GPUs); this module scans and runs them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from kubetune.sidecar import shipped_env
from kubetune.sidecar.base import (
    FINISH_MARGIN_S,
    IDLE_POLL_S,
    QUIET_AFTER_S,
    TrialApi,
    log,
    open_trial_storage,
    sidecar_s3_overrides,
)
from kubetune.sidecar.config import STATE_DIR, SidecarConfig
from kubetune.sidecar.reporting import ReportingMixin
from kubetune.sidecar.restore import RestoreMixin
from kubetune.sidecar.state import SidecarState
from kubetune.sidecar.uploads import UploadsMixin
from kubetune.trial.output import CHECKPOINT_RE, RESULT_FILE, checkpoint_name

if TYPE_CHECKING:
    from kubetune.storage.base import Storage


class Sidecar(RestoreMixin, UploadsMixin, ReportingMixin):
    def __init__(
        self,
        config: SidecarConfig,
        storage: Storage | None = None,
        api: TrialApi | None = None,
    ) -> None:
        self.cfg = config
        if storage is None:
            storage = open_trial_storage(config.storage_uri)
        self.storage = storage
        self.api = api
        self.out = config.path("out")
        self.gate_dir = config.path("gate")
        self.state_dir = config.path(STATE_DIR)
        os.makedirs(self.state_dir, exist_ok=True)
        self.state_path = os.path.join(self.state_dir, "state.json")
        self.state = SidecarState.load(self.state_path)
        self.lock = threading.RLock()
        self.wake = threading.Condition(self.lock)  # anything changed: threads re-check
        self.stop_event = threading.Event()
        self.deadline: float | None = None
        self.finishing = False
        self.threads: list[threading.Thread] = []
        # this attempt's result lines (complete, in order) and their parsed results
        self.lines: list[bytes] = []
        self.results: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""
        self._seen_ckpts: frozenset[str] = frozenset()
        self._scan_lock = threading.Lock()
        self.reportable = 0  # lines[:reportable] have every checkpoint they name stored
        self.log_uploaded_lines = 0  # this attempt's lines in stored result.json
        self.log_uploaded_other: dict[str, tuple[float, int]] = {}
        self.upload_due = 0.0
        self.upload_urgent = False
        self.gate: dict[str, Any] | None = None  # pending request
        self.gate_lines = 0
        self.gate_reported = False
        self.dirty = True
        self.last_report = 0.0
        self.reported_state: tuple[Any, ...] | None = None
        self.gpu: dict[str, Any] | None = None
        self.exit_info: dict[str, Any] | None = None
        self.errors: dict[str, str] = {}
        self.uploaded_all = False
        self.final_reported = False
        self._pending_since: dict[str, float] = {}

    # ------------------------------------------------------------------------------ scanning
    def scan(self) -> bool:
        """Read new result lines, find new checkpoints, the gate request and the done marker;
        wake the worker threads when anything changed (True)."""
        with self._scan_lock:  # one reader of the files at a time: lines stay in order
            changed = self._scan()
        if changed:
            self.notify()
        return changed

    def _scan(self) -> bool:
        changed = self._read_results()
        try:
            ckpts = frozenset(n for n in os.listdir(self.out) if CHECKPOINT_RE.match(n))
        except FileNotFoundError:
            ckpts = frozenset()
        if ckpts != self._seen_ckpts:
            self._seen_ckpts = ckpts
            changed = True
        with self.lock:
            before = (self.reportable, self.gate is not None)
            self._advance_reportable()
            self._read_gate()
            changed = changed or before != (self.reportable, self.gate is not None)
            if self.exit_info is None:
                done = self.cfg.path("done")
                if os.path.exists(done):
                    try:
                        with open(done, encoding="utf-8") as f:
                            self.exit_info = json.load(f)
                    except (OSError, json.JSONDecodeError):
                        self.exit_info = None
                    if self.exit_info is not None:
                        self.dirty = True
                        changed = True
        return changed

    def _read_results(self) -> bool:
        path = os.path.join(self.out, RESULT_FILE)
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            return False
        if size <= self._offset:
            return False
        with open(path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read(size - self._offset)
        self._offset += len(chunk)
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        parsed = []
        for raw in complete:
            if not raw.strip():
                continue
            try:
                result = json.loads(raw)
            except json.JSONDecodeError:
                result = {}
            parsed.append((raw, result if isinstance(result, dict) else {}))
        if parsed:
            with self.lock:
                for raw, result in parsed:
                    self.lines.append(raw)
                    self.results.append(result)
                self.dirty = True
        return bool(parsed)

    def _advance_reportable(self) -> None:
        uploaded = set(self.state.uploaded)
        moved = False
        while self.reportable < len(self.lines):
            result = self.results[self.reportable]
            name = result.get("checkpoint_dir_name")
            if name and name not in uploaded and name not in self.state.deleted:
                break
            if name:
                self._register(name, result)
            self.reportable += 1
            moved = True
        if moved:
            self.dirty = True
            if self.reportable - self.log_uploaded_lines > self.cfg.report_results:
                self.upload_urgent = True  # the status window is passing unstored lines

    def _read_gate(self) -> None:
        if self.gate is not None:
            return
        try:
            with open(os.path.join(self.gate_dir, "request.json"), encoding="utf-8") as f:
                request = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return
        seq = request.get("seq") if isinstance(request, dict) else None
        if not isinstance(seq, int) or seq <= self.state.verdict_seq:
            return
        # the runner appends the gated result before it writes the request: read it now
        self._read_results()
        self._advance_reportable()
        self.gate = request
        self.gate_lines = len(self.lines)
        self.gate_reported = False
        self.dirty = True
        self._start_thread("verdicts", self._verdict_loop)

    # ------------------------------------------------------------------------------ run
    def start(self) -> None:
        """Restore, then start the worker threads (returns at once)."""
        self.restore()
        self._start_thread("checkpoints", self._checkpoint_loop)
        self._start_thread("logs", self._log_loop)
        self._start_thread("report", self._report_loop)
        if self.cfg.gpu_interval_s > 0:
            self._start_thread("gpu", self._gpu_loop)
        if self.cfg.code_from:
            cache = shipped_env.store_when_built
            args = (self.cfg.code_from, self.cfg.path(), open_trial_storage, self.stop_event)
            self._start_thread("requirements", lambda: cache(*args))

    def terminate(self, grace_s: float | None = None) -> None:
        """SIGTERM: flush within the grace period (less a margin), then stop."""
        grace = self.cfg.grace_s if grace_s is None else grace_s
        with self.lock:
            deadline = time.monotonic() + max(0.5, grace - FINISH_MARGIN_S)
            if self.deadline is None or deadline < self.deadline:
                self.deadline = deadline
        self.stop_event.set()
        self.notify()

    def run(self) -> int:
        """The whole life: restore, follow the trial until ``done`` or SIGTERM, flush."""
        self.start()
        last_change = time.monotonic()
        while not self.stop_event.is_set():
            if self.scan():
                last_change = time.monotonic()
            if self.exit_info is not None:
                break
            quiet = time.monotonic() - last_change > QUIET_AFTER_S
            poll = self.cfg.poll_interval_s
            self.stop_event.wait(max(poll, IDLE_POLL_S) if quiet else poll)
        return self.finish()

    def finish(self, timeout: float | None = None) -> int:
        if timeout is not None:
            with self.lock:
                self.deadline = time.monotonic() + timeout
        self.scan()
        self.stop_event.set()
        for t in self.threads:
            if t.name == "sidecar-gpu":  # its last sample goes into the final upload
                t.join(timeout=5.0)
            if t.name == "sidecar-requirements":  # the installed requirements, for the next pods
                t.join(timeout=max(1.0, self.cfg.grace_s / 2))
        with self.lock:
            self.finishing = True
            self.upload_urgent = True
        self.notify()
        # rescans until uploads and the final report are done, or the deadline passes
        while True:
            self.scan()
            with self.lock:
                if self.final_reported or (self.api is None and self.uploaded_all):
                    break
                if self._past_deadline():
                    log.error("grace period over before everything was stored")
                    break
                self.wake.wait(self.cfg.poll_interval_s)
        with self.lock:
            self.state.finished = self.uploaded_all
            self.save()
        return 0


__all__ = ["Sidecar", "TrialApi", "checkpoint_name", "open_trial_storage", "sidecar_s3_overrides"]
