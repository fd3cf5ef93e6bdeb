"""The sidecar's uploads: checkpoints (one thread, resumable per file), logs and surplus
checkpoints (another thread: ``result.json`` up to the lines whose checkpoints are stored,
``progress.csv`` merged with earlier attempts', the other outputs, then the keep-rule's
victims deleted, or only freed from the pod's disk when the engine deletes from storage).
"""

from __future__ import annotations

import functools
import os
import shutil
import time

from kubetune.sidecar.base import IDLE_WAIT_S, SidecarBase, _merge_csv
from kubetune.trial.output import CHECKPOINT_RE, ERROR_FILE, PARAMS_FILE, PROGRESS_FILE, RESULT_FILE
from kubetune.trial.telemetry import GPU_FILE


class UploadsMixin(SidecarBase):
    def pending_checkpoints(self) -> list[str]:
        try:
            names = os.listdir(self.out)
        except FileNotFoundError:
            return []
        with self.lock:
            done = set(self.state.uploaded) | set(self.state.deleted)
        return sorted(n for n in names if CHECKPOINT_RE.match(n) and n not in done)

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
