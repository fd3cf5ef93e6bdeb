"""The sidecar's phases: restore, then upload + report + gate relay until the trial ends.

Threads: the main loop scans ``ROOT`` (results, checkpoints, gate, done marker); one thread
uploads checkpoints, one uploads logs and deletes surplus checkpoints, one writes the status
report (rate-limited), one waits for verdicts while a decision is pending, one samples GPUs.
Storage and API failures are retried with backoff by the thread that met them; the others go
on. Everything that must not be redone is recorded in :class:`SidecarState` first.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from kubetune.engine.checkpoints import best_checkpoint, lookup, register_checkpoint
from kubetune.sidecar import shipped_env
from kubetune.sidecar.config import READY_FILE, STATE_DIR, SidecarConfig
from kubetune.sidecar.state import SidecarState
from kubetune.trial.output import (
    CHECKPOINT_RE,
    ERROR_FILE,
    PARAMS_FILE,
    PROGRESS_FILE,
    RESULT_FILE,
    checkpoint_name,
)

if TYPE_CHECKING:
    from kubetune.storage.base import Storage

log = logging.getLogger("kubetune.sidecar")

GPU_FILE = "gpu.json"
SPEC_FILE = "trial.json"
FINISH_MARGIN_S = 2.0
IDLE_WAIT_S = 1.0  # worker threads re-check at least this often; scan() wakes them sooner
QUIET_AFTER_S = 2.0  # no change for this long: scan every IDLE_POLL_S instead
IDLE_POLL_S = 0.25


class TrialApi(Protocol):
    """Where the report goes and verdicts come from (the TuneTrial, or a stand-in)."""

    def patch_report(self, report: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch ``status.report``; returns the object when the transport has one."""

    def wait_verdict(self, seq: int, timeout: float) -> dict[str, Any] | None:
        """The verdict for decision ``seq`` once the operator gave it, else None on timeout."""

    def pinned_checkpoints(self) -> set[str]:
        """Checkpoint names the operator still needs (never deleted by the keep-rule)."""


def _now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _finite(value: Any) -> Any:
    """JSON for the API server: non-finite floats become strings float() reads back."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class Backoff:
    def __init__(self, first: float = 0.1, cap: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return delay


class Sidecar:
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

    # ------------------------------------------------------------------------------ helpers
    def save(self) -> None:
        with self.lock:
            self.state.save(self.state_path)

    def notify(self) -> None:
        with self.wake:
            self.wake.notify_all()

    def _sleep(self, seconds: float) -> None:
        with self.wake:
            self.wake.wait(seconds)

    def _retry(self, what: str, fn: Callable[[], Any], give_up: Callable[[], bool]) -> Any:
        backoff = Backoff(cap=self.cfg.retry_max_s)
        while True:
            try:
                result = fn()
            except FileNotFoundError:
                raise
            except Exception as exc:
                with self.lock:
                    self.errors[what] = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("%s failed (will retry): %s", what, exc)
                if give_up():
                    raise
                self._sleep(backoff.next())
                continue
            with self.lock:
                self.errors.pop(what, None)
            return result

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    # ------------------------------------------------------------------------------ restore
    def restore(self) -> None:
        """Restore inputs, snapshot earlier attempts' logs, write the trial spec and .ready."""
        if self.state.ready:
            return
        cfg = self.cfg
        deadline = time.monotonic() + cfg.restore_timeout_s

        def give_up() -> bool:
            return time.monotonic() > deadline or self.stop_event.is_set()

        base_dir = os.path.join(self.state_dir, "base")
        if not os.path.isdir(base_dir):
            tmp = base_dir + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            for name in (RESULT_FILE, PROGRESS_FILE):
                try:
                    data = self._retry(
                        f"read stored {name}",
                        functools.partial(self.storage.get_bytes, name),
                        give_up,
                    )
                except FileNotFoundError:
                    continue
                with open(os.path.join(tmp, name), "wb") as fb:
                    fb.write(data)
            os.rename(tmp, base_dir)
        base = self._base_bytes(RESULT_FILE)
        base_lines = [ln for ln in base.split(b"\n") if ln.strip()]
        stored = self._retry("list stored checkpoints", self.storage.list_children, give_up)
        stored_ckpts = sorted(n for n in stored if CHECKPOINT_RE.match(n))
        with self.lock:
            self.state.base_lines = len(base_lines)
            self._rebuild_keep(base_lines, set(stored_ckpts))
        for what, uri, target in (
            ("restore", cfg.restore_from, "restore"),
            ("parameters", cfg.params_from, "params"),
            ("fetch the shipped code", cfg.code_from, "code"),
        ):
            if not uri:
                continue
            try:
                self._download_tree(uri, cfg.path(target), give_up)
            except Exception as exc:
                # Become ready all the same: the trial then fails on the missing input with
                # its own error (error.txt, exit code), which the operator counts as a failure;
                # a sidecar that never became ready would hold the pod in Init forever.
                message = f"cannot {what} from {uri}: {type(exc).__name__}: {exc}"
                log.error("%s", message)
                with self.lock:
                    self.errors[what] = message[:500]
        shipped_env.restore_site(cfg.code_from, cfg.path(), open_trial_storage)
        if cfg.trial_spec is not None:
            spec = dict(cfg.trial_spec)
            used = [int(m.group(1)) for n in stored_ckpts if (m := CHECKPOINT_RE.match(n))]
            if used:
                start = int(spec.get("checkpoint_index_start") or 0)
                spec["checkpoint_index_start"] = max(start, max(used) + 1)
            path = cfg.path(SPEC_FILE)
            with open(path + ".tmp", "w", encoding="utf-8") as ft:
                json.dump(spec, ft)
            os.replace(path + ".tmp", path)
        for sub in ("out", "gate"):
            os.makedirs(cfg.path(sub), exist_ok=True)
        self.state.ready = True
        self.save()
        ready = cfg.path(READY_FILE)
        with open(ready, "w", encoding="utf-8") as fr:
            fr.write(_now_rfc3339())

    def _base_bytes(self, name: str) -> bytes:
        try:
            with open(os.path.join(self.state_dir, "base", name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return b""
        if data and not data.endswith(b"\n"):
            data += b"\n"
        return data

    def _rebuild_keep(self, base_lines: list[bytes], stored: set[str]) -> None:
        """The keep-rule's entries from earlier attempts' log and what is still stored."""
        st = self.state
        if st.registered:
            return
        for raw in base_lines:
            try:
                result = json.loads(raw)
            except json.JSONDecodeError:
                continue
            name = result.get("checkpoint_dir_name") if isinstance(result, dict) else None
            if name and name in stored:
                self._register(name, result, delete=False)
        for name in sorted(stored):  # stored but never named by a line (e.g. a pause save)
            if name not in st.registered:
                self._register(name, {}, delete=False)

    def _download_tree(self, uri: str, target: str, give_up: Callable[[], bool]) -> None:
        from kubetune.storage import open_storage

        src = open_trial_storage(uri) if uri.startswith("s3://") else open_storage(uri)
        tmp = target.rstrip("/") + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        keys = self._retry(f"list {uri}", lambda: src.list_keys(""), give_up)
        if not keys:
            raise FileNotFoundError(f"nothing stored under {uri}")
        for key in keys:
            dest = os.path.join(tmp, *key.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            self._retry(f"download {uri}", functools.partial(src.get_file, key, dest), give_up)
        shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)

    # ------------------------------------------------------------------------------ keep-rule
    def _register(self, name: str, result: dict[str, Any], delete: bool = True) -> None:
        st = self.state
        if name in st.registered:
            return
        pinned: set[str] = set()
        cfg = self.cfg
        if cfg.num_to_keep is not None and len(st.keep) + 1 > cfg.num_to_keep:
            # rebuilding from earlier attempts deletes nothing: pins are unknown there
            if not delete:
                pinned = {e[2] for e in st.keep}
            elif cfg.delete_stored:
                pinned = self._pins()
        st.keep_seq += 1
        st.keep, victims = register_checkpoint(
            st.keep,
            name,
            result,
            st.keep_seq,
            num_to_keep=cfg.num_to_keep,
            score_attribute=cfg.score_attribute,
            score_order=cfg.score_order,
            pinned=pinned,
        )
        st.registered.append(name)
        for victim in victims:
            if victim not in st.pending_delete and victim not in st.deleted:
                st.pending_delete.append(victim)
        if victims:
            self.upload_urgent = True

    def _pins(self) -> set[str]:
        if self.api is None:
            return set()
        try:
            return set(self.api.pinned_checkpoints())
        except Exception as exc:  # unknown pins: keep everything this time
            log.warning("cannot read pinned checkpoints: %s", exc)
            return {e[2] for e in self.state.keep}

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

    def pending_checkpoints(self) -> list[str]:
        try:
            names = os.listdir(self.out)
        except FileNotFoundError:
            return []
        with self.lock:
            done = set(self.state.uploaded) | set(self.state.deleted)
        return sorted(n for n in names if CHECKPOINT_RE.match(n) and n not in done)

    # ------------------------------------------------------------------------------ threads
    def _start_thread(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=self._guard(target), name=f"sidecar-{name}", daemon=True)
        self.threads.append(t)
        t.start()

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception:
                log.exception("sidecar thread %s died", threading.current_thread().name)

        return run

    def _checkpoint_loop(self) -> None:
        while True:
            pending = self.pending_checkpoints()
            if not pending:
                if self.stop_event.is_set():
                    return
                self._sleep(IDLE_WAIT_S)  # scan() wakes us when a checkpoint appears
                continue
            name = pending[0]
            try:
                self._upload_checkpoint(name)
            except Exception:
                if self._past_deadline():
                    return
                continue
            with self.lock:
                if name not in self.state.uploaded:
                    self.state.uploaded.append(name)
                self.state.partial.pop(name, None)
                self.dirty = True
            self.save()
            self.scan()

    def _upload_checkpoint(self, name: str) -> None:
        local = os.path.join(self.out, name)
        with self.lock:
            done = set(self.state.partial.setdefault(name, []))
        files = []
        for dirpath, _dirs, names in os.walk(local):
            for fname in names:
                full = os.path.join(dirpath, fname)
                rel = os.path.relpath(full, local).replace(os.sep, "/")
                if rel not in done:
                    files.append((full, f"{name}/{rel}"))
        if not files and not done:  # an empty checkpoint still leaves a trace
            marker = os.path.join(self.state_dir, "empty")
            open(marker, "wb").close()
            files.append((marker, f"{name}/.kubetune_empty"))

        def stored(local_path: str, key: str) -> None:
            rel = key.split("/", 1)[1]
            with self.lock:
                self.state.partial.setdefault(name, []).append(rel)
                self.state.save(self.state_path)

        def attempt() -> None:
            with self.lock:
                have = set(self.state.partial.get(name, []))
            todo = [(p, k) for p, k in files if k.split("/", 1)[1] not in have]
            self.storage.put_files(todo, on_done=stored)

        self._retry(f"upload {name}", attempt, self._past_deadline)

    def _log_loop(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                due = self.upload_urgent or now >= self.upload_due or self.finishing
            if due:
                try:
                    self._upload_logs()
                    self._delete_surplus()
                except Exception:
                    if self._past_deadline():
                        return
                    continue
                with self.lock:
                    self.upload_due = time.monotonic() + self.cfg.upload_interval_s
                    self.upload_urgent = False
                    if self.finishing and self._flushed():
                        self.uploaded_all = True
                        self.dirty = True
                        self.wake.notify_all()
                        return
                continue
            self._sleep(min(IDLE_WAIT_S, max(0.0, self.upload_due - now)))

    def _flushed(self) -> bool:
        return (
            self.log_uploaded_lines == len(self.lines)
            and self.reportable == len(self.lines)
            and not self.state.pending_delete
            and not self.pending_checkpoints()
            and not self._other_changed()
        )

    def _other_changed(self) -> list[str]:
        changed = []
        for name in (PROGRESS_FILE, PARAMS_FILE, ERROR_FILE, GPU_FILE):
            try:
                st = os.stat(os.path.join(self.out, name))
            except FileNotFoundError:
                continue
            if self.log_uploaded_other.get(name) != (st.st_mtime, st.st_size):
                changed.append(name)
        return changed

    def _upload_logs(self) -> None:
        with self.lock:
            n = self.reportable
            lines = self.lines[:n]
        if n != self.log_uploaded_lines:
            body = self._base_bytes(RESULT_FILE) + b"".join(ln + b"\n" for ln in lines)
            self._retry(
                "upload result.json",
                lambda: self.storage.put_bytes(RESULT_FILE, body),
                self._past_deadline,
            )
            with self.lock:
                self.log_uploaded_lines = n
                self.dirty = True
        for name in self._other_changed():
            path = os.path.join(self.out, name)
            st = os.stat(path)
            if name == PROGRESS_FILE:
                with open(path, "rb") as f:
                    data = _merge_csv(self._base_bytes(PROGRESS_FILE), f.read())
            else:
                with open(path, "rb") as f:
                    data = f.read()
            self._retry(
                f"upload {name}",
                functools.partial(self.storage.put_bytes, name, data),
                self._past_deadline,
            )
            self.log_uploaded_other[name] = (st.st_mtime, st.st_size)

    def _delete_surplus(self) -> None:
        if not self.cfg.delete_stored:
            self._free_surplus()
            return
        now = time.monotonic()
        with self.lock:
            victims = list(self.state.pending_delete)
            final = self.finishing
        due = [
            v
            for v in victims
            if final or now - self._pending_since.setdefault(v, now) >= self.cfg.delete_grace_s
        ]
        pins = self._pins() if due and self.cfg.delete_grace_s > 0 else set()
        for name in due:
            if name in pins:  # an exploit restores it: it stays, and this sidecar forgets it
                with self.lock:
                    self.state.pending_delete.remove(name)
                    self.dirty = True
                continue
            self._retry(
                f"delete {name}",
                functools.partial(self.storage.delete_prefix, name),
                self._past_deadline,
            )
            shutil.rmtree(os.path.join(self.out, name), ignore_errors=True)
            with self.lock:
                self.state.pending_delete.remove(name)
                self.state.deleted.append(name)
                self.dirty = True
            self.save()

    def _free_surplus(self) -> None:
        """The engine deletes surplus checkpoints from storage; here they only leave the pod's
        disk, once stored (a victim still uploading is stored first: an exploit may need it)."""
        with self.lock:
            done = [v for v in self.state.pending_delete if v in self.state.uploaded]
        for name in done:
            shutil.rmtree(os.path.join(self.out, name), ignore_errors=True)
            with self.lock:
                self.state.pending_delete.remove(name)
                self.state.freed.append(name)
                self.dirty = True
        if done:
            self.save()

    # ------------------------------------------------------------------------------ report
    def build_report(self) -> dict[str, Any]:
        with self.lock:
            st = self.state
            n = self.reportable
            window = self.results[max(0, n - self.cfg.report_results) : n]
            first = st.base_lines + n - len(window)
            report: dict[str, Any] = {
                "attempt": self.cfg.attempt,
                "results": [_finite({k: v for k, v in r.items() if k != "config"}) for r in window],
                "firstResult": first,
                "resultCount": st.base_lines + n,
                "uploadedResults": st.base_lines + self.log_uploaded_lines,
                "verdictSeq": st.verdict_seq,
                "uploaded": self.uploaded_all,
            }
            if window:
                newest = window[-1]
                it = newest.get("training_iteration")
                if isinstance(it, int):
                    report["iteration"] = it
                if self.cfg.metric:
                    value = lookup(newest, self.cfg.metric)
                    number = isinstance(value, (int, float)) and not isinstance(value, bool)
                    if number and math.isfinite(value):
                        report["metric"] = value
            stored = [e for e in st.keep if e[2] not in st.pending_delete]
            if st.registered:
                latest = next((r for r in reversed(st.registered) if r not in st.deleted), None)
                if latest:
                    report["latestCheckpoint"] = self.storage.uri(latest)
            best = best_checkpoint(stored)
            if best:
                report["bestCheckpoint"] = self.storage.uri(best)
            gate_ready = self.gate is not None and n >= self.gate_lines
            report["gate"] = self.gate if gate_ready else None
            report["gpu"] = self.gpu
            report["exit"] = self.exit_info
            report["error"] = "; ".join(f"{k}: {v}" for k, v in self.errors.items()) or None
            return report

    def _report_loop(self) -> None:
        backoff = Backoff(cap=self.cfg.retry_max_s)
        while True:
            with self.lock:
                gate_now = (
                    self.gate is not None
                    and not self.gate_reported
                    and self.reportable >= self.gate_lines
                )
                wait = self.last_report + self.cfg.report_interval_s - time.monotonic()
                final = self.stop_event.is_set() and (self.uploaded_all or self._past_deadline())
                if not self.dirty and not final:
                    self.wake.wait(IDLE_WAIT_S)
                    continue
                if wait > 0 and not gate_now and not final:
                    self.wake.wait(wait)
                    continue
                self.dirty = False
                report = self.build_report()
                self.state.report_seq += 1
                report["sequence"] = self.state.report_seq
                report["updateTime"] = _now_rfc3339()
                self.last_report = time.monotonic()
            try:
                if self.api is not None:
                    self.api.patch_report(report)
            except Exception as exc:
                log.warning("status report failed (will retry): %s", exc)
                with self.lock:
                    self.dirty = True
                if self._past_deadline():
                    return
                self._sleep(backoff.next())
                continue
            backoff.reset()
            self.save()  # the sequence never goes back, even after a kill
            with self.lock:
                sent = report["gate"]
                if (
                    sent is not None
                    and self.gate is not None
                    and sent.get("seq") == self.gate.get("seq")
                ):
                    self.gate_reported = True
                if final and (report["uploaded"] or self._past_deadline()):
                    self.final_reported = True
                    self.save()
                    self.wake.notify_all()
                    return

    # ------------------------------------------------------------------------------ gate
    def _verdict_loop(self) -> None:
        backoff = Backoff(cap=self.cfg.retry_max_s)
        while not self.stop_event.is_set():
            with self.lock:
                gate = self.gate
            if gate is None:
                return
            seq = int(gate["seq"])
            if self.api is None:
                return
            try:
                verdict = self.api.wait_verdict(seq, timeout=30.0)
            except Exception as exc:
                log.warning("waiting for verdict %d failed (will retry): %s", seq, exc)
                self._sleep(backoff.next())
                continue
            backoff.reset()
            if verdict is None:
                continue
            self.deliver_verdict(verdict)
            return

    def deliver_verdict(self, verdict: dict[str, Any]) -> None:
        seq = int(verdict["seq"])
        path = os.path.join(self.gate_dir, f"verdict-{seq}.json")
        tmp = os.path.join(self.gate_dir, f".verdict-{seq}.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(verdict, f)
        os.replace(tmp, path)
        with self.lock:
            self.state.verdict_seq = max(self.state.verdict_seq, seq)
            if self.gate is not None and self.gate.get("seq") == seq:
                self.gate = None
            self.dirty = True
        self.save()
        self.notify()

    # ------------------------------------------------------------------------------ gpu
    def _gpu_loop(self) -> None:
        from kubetune.sidecar.gpu import sample_gpus

        while not self.stop_event.is_set():
            sample = sample_gpus(self.cfg.gpus)
            path = os.path.join(self.out, GPU_FILE)
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(sample, f)
            os.replace(path + ".tmp", path)
            with self.lock:
                self.gpu = sample
                self.dirty = True
            self.stop_event.wait(self.cfg.gpu_interval_s)

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


def _merge_csv(base: bytes, current: bytes) -> bytes:
    """Earlier attempts' progress.csv + this attempt's rows (one header; columns united)."""
    if not base.strip():
        return current
    if not current.strip():
        return base
    base_head, _, _rest = base.partition(b"\n")
    cur_head, _, cur_rest = current.partition(b"\n")
    if base_head == cur_head:
        return base + cur_rest
    rows_a = list(csv.DictReader(io.StringIO(base.decode("utf-8", "replace"))))
    rows_b = list(csv.DictReader(io.StringIO(current.decode("utf-8", "replace"))))
    fields = next(csv.reader([base_head.decode()]))
    fields += [f for f in next(csv.reader([cur_head.decode()])) if f not in fields]
    out = io.StringIO()
    writer = csv.DictWriter(out, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows_a + rows_b)
    return out.getvalue().encode()


def open_trial_storage(uri: str) -> Storage:
    """Storage rooted at ``uri``; S3 with the sidecar's transfer settings."""
    from kubetune.storage import open_storage

    if uri.startswith("s3://"):
        from kubetune.storage.s3 import S3Config

        return open_storage(uri, S3Config.from_env(**sidecar_s3_overrides()))
    return open_storage(uri)


def sidecar_s3_overrides() -> dict[str, Any]:
    """Transfer settings: 16 MiB parts, 10 in flight (``KUBETUNE_SIDECAR_PART_MIB``,
    ``KUBETUNE_SIDECAR_CONCURRENCY``); short connect timeouts and few botocore retries, since
    the sidecar retries with its own backoff and must not hang in an outage."""
    mib = 1024 * 1024
    part = int(float(os.environ.get("KUBETUNE_SIDECAR_PART_MIB") or 16) * mib)
    return {
        "multipart_threshold": part,
        "multipart_chunksize": part,
        "max_concurrency": int(os.environ.get("KUBETUNE_SIDECAR_CONCURRENCY") or 10),
        "connect_timeout": 2,
        "read_timeout": 30,
        "max_attempts": 2,
    }


def checkpoint_index(name: str) -> int:
    m = CHECKPOINT_RE.match(name)
    return int(m.group(1)) if m else -1


__all__ = ["Sidecar", "TrialApi", "checkpoint_name"]
