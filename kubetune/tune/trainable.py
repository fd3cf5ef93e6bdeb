"""``tune.Trainable``: Ray Tune's Class API.

Subclasses implement ``setup``, ``step``, ``save_checkpoint`` and ``load_checkpoint`` (and
optionally ``reset_config``, ``cleanup``, ``_export_model``, ``log_result``); the driver methods
(``train``, ``save``, ``restore``, ...) are what the trial runner and tests call.

A checkpoint made by ``save`` is a directory holding what ``save_checkpoint`` wrote (or the
pickled dict it returned) plus ``.tune_metadata.json`` with the iteration counters and the form
the checkpoint took, so ``restore`` gives ``load_checkpoint`` exactly what ``save_checkpoint``
returned, relative to wherever the directory now lives.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubetune.air import session as _session
from kubetune.air.checkpoint import (
    DICT_FILE,
    Checkpoint,
    _pack_directory,
    _unpack_directory,
)
from kubetune.tune._autofill import AutoFiller
from kubetune.tune.resources import PlacementGroupFactory
from kubetune.tune.result import DATE_FORMAT, DONE, SHOULD_CHECKPOINT

TRIAL_META_FILE = ".tune_metadata.json"
DEBUG_METRICS = (
    "trial_id",
    "experiment_id",
    "date",
    "timestamp",
    "pid",
    "hostname",
    "node_ip",
    "config",
)


@dataclass
class TrialInfo:
    """Who a trainable is running as; set by the trial runner."""

    trial_id: str
    trial_name: str
    experiment_name: str
    logdir: str
    resources: PlacementGroupFactory | None = None


@contextlib.contextmanager
def _no_session_report() -> Iterator[None]:
    previous = _session._inside_trainable_class
    _session._inside_trainable_class = True
    try:
        yield
    finally:
        _session._inside_trainable_class = previous


class Trainable:
    """Base class of Class-API trainables (Ray's ``tune.Trainable``)."""

    _checkpoint_cls = Checkpoint

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        logger_creator: Any = None,
        remote_checkpoint_dir: str | None = None,
        custom_syncer: Any = None,
        sync_timeout: int | None = None,
        *,
        trial_info: TrialInfo | None = None,
    ) -> None:
        self.config: dict[str, Any] = config if config is not None else {}
        self._owns_logdir = trial_info is None
        if trial_info is None:
            logdir = tempfile.mkdtemp(prefix=f"{type(self).__name__}_")
            trial_info = TrialInfo("default", "default", "default", logdir)
        self._trial_info = trial_info
        self._filler = AutoFiller(trial_info.trial_id, self.config)
        self._restored = False
        self._stopped = False
        with _no_session_report():
            self.setup(copy.deepcopy(self.config))
        self._filler.mark_start()

    # -- methods subclasses override ----------------------------------------------------------
    def setup(self, config: dict[str, Any]) -> None:
        """Initialise the trainable from its config (called once, by the constructor)."""

    def step(self) -> dict[str, Any]:
        """Run one logical iteration of training and return its metrics."""
        raise NotImplementedError(f"{type(self).__name__} must implement step()")

    def save_checkpoint(self, checkpoint_dir: str) -> str | dict[str, Any] | None:
        """Save state into ``checkpoint_dir``; return a dict, a path inside it, or None."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement save_checkpoint() to be checkpointed"
        )

    def load_checkpoint(self, checkpoint: dict[str, Any] | str) -> None:
        """Restore state from what ``save_checkpoint`` returned (a dict or a path)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement load_checkpoint() to be restored"
        )

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Take a new config without a new process; return True if that worked."""
        return False

    def cleanup(self) -> None:
        """Release resources when the trial ends."""

    def log_result(self, result: dict[str, Any]) -> None:
        """Called with each result in the training process; override to log elsewhere."""

    def _export_model(self, export_formats: list[str], export_dir: str) -> dict[str, str]:
        return {}

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]) -> PlacementGroupFactory | None:
        """Resources a trial of this class needs for ``config`` (None: the default)."""
        return None

    @classmethod
    def resource_help(cls, config: dict[str, Any]) -> str:
        return ""

    # -- properties --------------------------------------------------------------------------
    @property
    def iteration(self) -> int:
        return self._filler.iteration

    @property
    def training_iteration(self) -> int:
        return self._filler.iteration

    @property
    def logdir(self) -> str:
        return self._trial_info.logdir

    @property
    def trial_id(self) -> str:
        return self._trial_info.trial_id

    @property
    def trial_name(self) -> str:
        return self._trial_info.trial_name

    @property
    def trial_resources(self) -> PlacementGroupFactory | None:
        return self._trial_info.resources

    def get_config(self) -> dict[str, Any]:
        return self.config

    # -- driver methods ----------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run ``step()`` once and return its result with the auto-filled fields."""
        start = time.time()
        with _no_session_report():
            result = self.step()
        if not isinstance(result, dict):
            raise TypeError(
                f"{type(self).__name__}.step() must return a dict of metrics,"
                f" got {type(result).__name__}"
            )
        result = self._filler.fill(result, time.time() - start)
        with _no_session_report():
            self.log_result(result)
        return result

    def train_buffered(
        self, buffer_time_s: float, max_buffer_length: int = 1000
    ) -> list[dict[str, Any]]:
        """Call ``train()`` until the time or length limit, a checkpoint request, or done."""
        results: list[dict[str, Any]] = []
        deadline = time.monotonic() + buffer_time_s
        while True:
            result = self.train()
            results.append(result)
            if (
                result.get(DONE)
                or result.get(SHOULD_CHECKPOINT)
                or len(results) >= max_buffer_length
                or time.monotonic() >= deadline
            ):
                return results

    def get_auto_filled_metrics(
        self,
        now: datetime | None = None,
        time_this_iter: float | None = None,
        debug_metrics_only: bool = False,
    ) -> dict[str, Any]:
        now = now or datetime.now()
        metrics = {
            "trial_id": self.trial_id,
            "date": now.strftime(DATE_FORMAT),
            "timestamp": int(time.mktime(now.timetuple())),
            "time_this_iter_s": time_this_iter,
            "time_total_s": self._filler.time_total,
            "pid": self._filler.pid,
            "hostname": self._filler.hostname,
            "node_ip": self._filler.node_ip,
            "config": self.config,
            "time_since_restore": self._filler.time_since_restore,
            "iterations_since_restore": self._filler.iterations_since_restore,
        }
        if debug_metrics_only:
            return {k: v for k, v in metrics.items() if k in DEBUG_METRICS}
        return metrics

    def save(self, checkpoint_dir: str | None = None, prevent_upload: bool = False) -> str:
        """Save state into a checkpoint directory and return that directory."""
        if checkpoint_dir is None:
            checkpoint_dir = tempfile.mkdtemp(prefix="checkpoint_tmp_", dir=self.logdir)
        os.makedirs(checkpoint_dir, exist_ok=True)
        checkpoint_dir = os.path.abspath(checkpoint_dir)
        with _no_session_report():
            returned = self.save_checkpoint(checkpoint_dir)
        meta: dict[str, Any] = self._filler.snapshot()
        if returned is None or (
            isinstance(returned, str) and os.path.abspath(returned) == checkpoint_dir
        ):
            meta["saved_as"] = "directory"
        elif isinstance(returned, dict):
            import cloudpickle

            with open(os.path.join(checkpoint_dir, DICT_FILE), "wb") as f:
                f.write(cloudpickle.dumps(returned))
            meta["saved_as"] = "dict"
        elif isinstance(returned, str):
            full = os.path.abspath(returned)
            if not full.startswith(checkpoint_dir + os.sep):
                raise ValueError(
                    f"{type(self).__name__}.save_checkpoint() returned {returned!r}, which is not"
                    f" inside the checkpoint directory {checkpoint_dir!r}: return a path under"
                    " the directory it was given (or the directory itself, or a dict)"
                )
            meta["saved_as"] = "path"
            meta["relative_path"] = os.path.relpath(full, checkpoint_dir)
        else:
            raise TypeError(
                f"{type(self).__name__}.save_checkpoint() must return a dict, a path or None,"
                f" got {type(returned).__name__}"
            )
        with open(os.path.join(checkpoint_dir, TRIAL_META_FILE), "w") as f:
            json.dump(meta, f)
        return checkpoint_dir

    def restore(
        self,
        checkpoint_path: str | Checkpoint,
        checkpoint_node_ip: str | None = None,
        fallback_to_latest: bool = False,
    ) -> None:
        """Restore state from a checkpoint made by ``save`` (or a checkpoint directory)."""
        if isinstance(checkpoint_path, Checkpoint):
            with checkpoint_path.as_directory() as directory:
                self._restore_directory(directory)
            return
        path = os.fspath(checkpoint_path)
        if not os.path.exists(path):
            latest = _latest_checkpoint(self.logdir) if fallback_to_latest else None
            if latest is None:
                raise FileNotFoundError(f"checkpoint does not exist: {path!r}")
            path = latest
        self._restore_directory(_checkpoint_root(path))

    def _restore_directory(self, directory: str) -> None:
        meta: dict[str, Any] = {}
        meta_path = os.path.join(directory, TRIAL_META_FILE)
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                meta = json.load(f)
        saved_as = meta.get("saved_as")
        if saved_as is None and os.path.exists(os.path.join(directory, DICT_FILE)):
            saved_as = "dict"
        arg: dict[str, Any] | str
        if saved_as == "dict":
            with open(os.path.join(directory, DICT_FILE), "rb") as f:
                arg = pickle.load(f)
        elif saved_as == "path":
            arg = os.path.join(directory, meta["relative_path"])
        else:
            arg = directory
        with _no_session_report():
            self.load_checkpoint(arg)
        self._filler.restore_counters(
            int(meta.get("training_iteration", 0)), float(meta.get("time_total_s", 0.0))
        )
        self._filler.mark_start()
        self._restored = True

    def save_to_object(self) -> bytes:
        """Save state into an in-memory object (used when a trial is paused)."""
        tmp = tempfile.mkdtemp(prefix="checkpoint_obj_")
        try:
            self.save(tmp)
            return pickle.dumps(_pack_directory(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def restore_from_object(self, obj: bytes) -> None:
        tmp = tempfile.mkdtemp(prefix="checkpoint_obj_")
        try:
            _unpack_directory(pickle.loads(obj), tmp)
            self._restore_directory(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def delete_checkpoint(self, checkpoint_path: str | Checkpoint) -> None:
        """Delete the local copy of a checkpoint."""
        if isinstance(checkpoint_path, Checkpoint):
            if checkpoint_path.path is None:
                return
            checkpoint_path = checkpoint_path.path
        root = _checkpoint_root(os.fspath(checkpoint_path))
        shutil.rmtree(root, ignore_errors=True)

    def export_model(
        self, export_formats: list[str] | str, export_dir: str | None = None
    ) -> dict[str, str]:
        formats = [export_formats] if isinstance(export_formats, str) else list(export_formats)
        return self._export_model(formats, export_dir or self.logdir)

    def reset(self, new_config: dict[str, Any], logger_creator: Any = None) -> bool:
        """Switch to a new config in the same process; False if ``reset_config`` refused."""
        self.config = new_config
        with _no_session_report():
            ok = self.reset_config(new_config)
        if not ok:
            return False
        self._filler = AutoFiller(self._trial_info.trial_id, new_config)
        self._restored = False
        return True

    def _set_trial_info(self, info: TrialInfo) -> None:
        self._trial_info = info
        self._filler.trial_id = info.trial_id

    def stop(self) -> None:
        """Release everything: calls ``cleanup()`` once."""
        if self._stopped:
            return
        self._stopped = True
        with _no_session_report():
            self.cleanup()
        if self._owns_logdir:
            shutil.rmtree(self.logdir, ignore_errors=True)


def _checkpoint_root(path: str) -> str:
    """The checkpoint directory that holds ``path`` (which may be a file inside it)."""
    path = os.path.abspath(path)
    probe = path if os.path.isdir(path) else os.path.dirname(path)
    while True:
        if os.path.exists(os.path.join(probe, TRIAL_META_FILE)):
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            return path if os.path.isdir(path) else os.path.dirname(path)
        probe = parent


def _latest_checkpoint(logdir: str) -> str | None:
    candidates = [
        os.path.join(logdir, n) for n in os.listdir(logdir) if n.startswith("checkpoint_")
    ]
    candidates = [c for c in candidates if os.path.isdir(c)]
    return max(candidates, key=os.path.getmtime) if candidates else None
