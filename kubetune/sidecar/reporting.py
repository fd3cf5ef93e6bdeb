"""The sidecar's reports and verdicts: ``status.report`` of its TuneTrial (rate-limited, at
once for a gate request and at the end), the verdict a pending decision waits for, handed to
the trial through the gate directory, and the trial's GPU samples.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from kubetune.engine.checkpoints import best_checkpoint, lookup
from kubetune.sidecar.base import (
    IDLE_WAIT_S,
    Backoff,
    SidecarBase,
    _finite,
    _now_rfc3339,
    log,
)
from kubetune.trial.telemetry import GPU_FILE

GPU_FILE_MAX_BYTES = 64 * 1024  # a sample of 16 GPUs is ~3 KiB


class ReportingMixin(SidecarBase):
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
        """The trial container samples its GPUs (kubetune.trial.telemetry: only it sees them)
        into ROOT/out/gpu.json; the latest sample goes into status.report.gpu."""
        while not self.stop_event.wait(self.cfg.gpu_interval_s):
            self._read_gpu()
        self._read_gpu()  # the last sample, for the final report

    def _read_gpu(self) -> None:
        path = os.path.join(self.out, GPU_FILE)
        try:
            if os.path.getsize(path) > GPU_FILE_MAX_BYTES:  # the trial's code can write there
                return
            with open(path, encoding="utf-8") as f:
                sample = json.load(f)
        except (OSError, ValueError):
            return
        if isinstance(sample, dict) and isinstance(sample.get("gpus"), list):
            with self.lock:
                if sample != self.gpu:
                    self.gpu = sample
                    self.dirty = True
