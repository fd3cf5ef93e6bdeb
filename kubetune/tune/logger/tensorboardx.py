"""``TBXLoggerCallback``: TensorBoard event files in each trial's directory (tensorboardX).

As in Ray: numeric values of each result become scalars tagged ``ray/tune/<key>`` (nested
keys joined with ``/``; ``config``, ``pid``, ``timestamp``, ``time_total_s`` and
``training_iteration`` left out) at step ``timesteps_total`` or else ``training_iteration``;
non-empty lists and arrays become histograms (3-D arrays images, 4-D image batches, 5-D
videos). When the trial ends, its sampled hyperparameters and last scalars go into the HParams
plugin's records. Runs by default when tensorboardX is installed
(``pip install 'kubetune[tensorboard]'``); ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1`` turns the
default off.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import time
from typing import TYPE_CHECKING, Any

from kubetune._util import flatten_dict
from kubetune.tune.logger.logger import LoggerCallback

if TYPE_CHECKING:
    from kubetune.tune.experiment.trial import Trial

log = logging.getLogger(__name__)

INSTALL_HINT = "TBXLoggerCallback needs tensorboardX: pip install 'kubetune[tensorboard]'"
SKIPPED_KEYS = ("config", "pid", "timestamp", "time_total_s", "training_iteration")
# a result is written at once; the file is flushed at most this often (and when the trial ends)
FLUSH_INTERVAL_S = 2.0


def tensorboardx_available() -> bool:
    return importlib.util.find_spec("tensorboardX") is not None


def _is_number(value: Any, np: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float, np.integer, np.floating)):
        return not math.isnan(float(value))
    return False


class _EventWriter:
    """One trial's event file, written in this thread (tensorboardX's SummaryWriter hands
    every event through a multiprocessing queue: several times slower per result)."""

    def __init__(self, logdir: str) -> None:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2

        os.makedirs(logdir, exist_ok=True)
        self._event = event_pb2.Event
        self._writer = EventsWriter(os.path.join(logdir, "events"))

    def add_summary(self, summary: Any, step: int | None = None) -> None:
        event = self._event(wall_time=time.time(), summary=summary)
        if step is not None:
            event.step = int(step)
        self._writer.write_event(event)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class TBXLoggerCallback(LoggerCallback):
    """Writes ``events.out.tfevents.*`` for each trial (see the module docstring)."""

    _SAVED_FILE_TEMPLATES = ["events.out.tfevents.*"]
    VALID_HPARAMS = (str, bool, int, float, list, type(None))

    def __init__(self) -> None:
        if not tensorboardx_available():
            raise ImportError(INSTALL_HINT)
        self._modules: tuple[Any, Any, Any] | None = None  # numpy, tbx summary, Summary
        self._writers: dict[Trial, Any] = {}
        self._last_scalars: dict[Trial, dict[str, Any]] = {}
        self._flushed: dict[Trial, float] = {}

    def log_trial_start(self, trial: Trial) -> None:
        if trial in self._writers:
            self._writers.pop(trial).close()
        assert trial.local_path is not None
        self._writers[trial] = _EventWriter(trial.local_path)
        self._last_scalars[trial] = {}
        self._flushed[trial] = time.monotonic()

    def _libs(self) -> tuple[Any, Any, Any]:
        if self._modules is None:  # imported once, on the first result
            import numpy as np
            from tensorboardX import summary as tbx
            from tensorboardX.proto.summary_pb2 import Summary

            self._modules = (np, tbx, Summary)
        return self._modules

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        if trial not in self._writers:
            self.log_trial_start(trial)
        np, tbx, Summary = self._libs()

        writer = self._writers[trial]
        step = result.get("timesteps_total") or result.get("training_iteration") or 0
        shown = {k: v for k, v in result.items() if k not in SKIPPED_KEYS}
        scalars: dict[str, Any] = {}
        values = []  # every scalar of the result goes into one event
        for key, value in flatten_dict(shown, delimiter="/").items():
            tag = f"ray/tune/{key}"
            if _is_number(value, np):
                scalars[tag] = value
                values.append(Summary.Value(tag=tag, simple_value=float(value)))
                continue
            is_array = isinstance(value, np.ndarray)
            if not ((isinstance(value, list) and value) or (is_array and value.size)):
                continue
            try:
                if is_array and value.ndim == 3:
                    other = tbx.image(tag, value, dataformats="CHW")
                elif is_array and value.ndim == 4:
                    other = tbx.image(tag, value, dataformats="NCHW")
                elif is_array and value.ndim == 5:
                    other = tbx.video(tag, value, fps=20)
                else:
                    other = tbx.histogram(tag, np.asarray(value, dtype=float), bins="auto")
            except (ValueError, TypeError) as exc:
                log.warning("TBXLoggerCallback: cannot log %s=%r: %s", tag, value, exc)
                continue
            writer.add_summary(other, step)
        if values:
            writer.add_summary(Summary(value=values), step)
        self._last_scalars[trial] = scalars
        now = time.monotonic()
        if now - self._flushed.get(trial, 0.0) >= FLUSH_INTERVAL_S:
            self._flushed[trial] = now
            writer.flush()

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        writer = self._writers.pop(trial, None)
        if writer is None:
            return
        scalars = self._last_scalars.pop(trial, {})
        self._flushed.pop(trial, None)
        try:
            if trial.evaluated_params and scalars:
                self._log_hparams(writer, trial, scalars)
        finally:
            writer.close()

    def _log_hparams(self, writer: _EventWriter, trial: Trial, metrics: dict[str, Any]) -> None:
        import numpy as np
        from tensorboardX.summary import hparams

        params: dict[str, Any] = {}
        dropped: dict[str, Any] = {}
        for key, value in flatten_dict(trial.evaluated_params, delimiter="/").items():
            if isinstance(value, np.generic):
                value = value.item()
            if value is None:
                continue  # tensorboardX refuses None
            if isinstance(value, self.VALID_HPARAMS):
                params[key] = value
            else:
                dropped[key] = value
        if dropped:
            log.info("TBXLoggerCallback: hyperparameters not logged (types): %s", dropped)
        metric_values = {k: float(v) for k, v in metrics.items()}
        try:
            experiment, start, end = hparams(hparam_dict=params, metric_dict=metric_values)
        except Exception as exc:  # a value tensorboardX cannot encode: keep the scalars
            log.warning("TBXLoggerCallback: hparams of %s not logged: %s", trial, exc)
            return
        for summary in (experiment, start, end):
            writer.add_summary(summary)
