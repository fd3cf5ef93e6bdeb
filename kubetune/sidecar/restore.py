"""The sidecar's first phase: restore the trial's inputs, then the keep-rule's bookkeeping.

Before the trial starts: earlier attempts' ``result.json`` and ``progress.csv`` are snapshotted,
the keep-rule is rebuilt from them and from what is stored, the checkpoint to restore, the
parameters and the shipped code are downloaded, the trial spec is written and then ``.ready``
(which the startup probe waits for). :meth:`RestoreMixin._register` is the keep-rule itself.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from kubetune.engine.checkpoints import register_checkpoint
from kubetune.sidecar import shipped_env
from kubetune.sidecar.base import SPEC_FILE, SidecarBase, _now_rfc3339, log, open_trial_storage
from kubetune.sidecar.config import READY_FILE
from kubetune.trial.output import CHECKPOINT_RE, PROGRESS_FILE, RESULT_FILE


class RestoreMixin(SidecarBase):
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
