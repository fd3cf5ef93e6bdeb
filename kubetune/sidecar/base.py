"""What the sidecar's parts share: its state (set by :class:`kubetune.sidecar.core.Sidecar`),
the helpers every thread uses (retries with backoff, sleeping on the wake-up condition), and
the storage and CSV helpers.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from kubetune.sidecar.config import SidecarConfig
from kubetune.sidecar.state import SidecarState
from kubetune.trial.output import CHECKPOINT_RE

if TYPE_CHECKING:
    from kubetune.storage.base import Storage

log = logging.getLogger("kubetune.sidecar")

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


class SidecarBase:
    """The state the sidecar's threads share (all set by ``Sidecar.__init__``) and their
    helpers; ``lock`` guards the state, ``wake`` (on the same lock) wakes waiting threads."""

    cfg: SidecarConfig
    storage: Storage
    api: TrialApi | None
    out: str
    gate_dir: str
    state_dir: str
    state_path: str
    state: SidecarState
    lock: threading.RLock
    wake: threading.Condition
    stop_event: threading.Event
    deadline: float | None
    finishing: bool
    threads: list[threading.Thread]
    lines: list[bytes]
    results: list[dict[str, Any]]
    reportable: int
    log_uploaded_lines: int
    log_uploaded_other: dict[str, tuple[float, int]]
    upload_due: float
    upload_urgent: bool
    gate: dict[str, Any] | None
    gate_lines: int
    gate_reported: bool
    dirty: bool
    last_report: float
    reported_state: tuple[Any, ...] | None
    gpu: dict[str, Any] | None
    exit_info: dict[str, Any] | None
    errors: dict[str, str]
    uploaded_all: bool
    final_reported: bool
    _pending_since: dict[str, float]

    def scan(self) -> bool:
        """Read what the trial wrote; True when anything changed (kubetune.sidecar.core)."""
        raise NotImplementedError

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

    def _base_bytes(self, name: str) -> bytes:
        try:
            with open(os.path.join(self.state_dir, "base", name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return b""
        if data and not data.endswith(b"\n"):
            data += b"\n"
        return data

    def _pins(self) -> set[str]:
        if self.api is None:
            return set()
        try:
            return set(self.api.pinned_checkpoints())
        except Exception as exc:  # unknown pins: keep everything this time
            log.warning("cannot read pinned checkpoints: %s", exc)
            return {e[2] for e in self.state.keep}

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
