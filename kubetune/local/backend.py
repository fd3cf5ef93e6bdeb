"""The local backend: the engine's actions carried out with trial subprocesses.

One loop, no threads: launch what fits, read each trial's new result lines and decision
requests, feed results to the engine, answer requests with its verdicts, turn process exits
into engine events, and save the experiment state. A STOP or PAUSE for a trial that is not
waiting at a decision point is sent as SIGTERM, which the runner honours at once.

The loop is here; its parts, one class on top of the other: ``backend_actions`` (the
engine's actions, trial paths, the state file), ``backend_launch`` (starting trial
processes), ``backend_follow`` (their results, decision requests and exits). The trials
themselves are ``backend_trial``'s.
"""

from __future__ import annotations

import os
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from kubetune.engine import Action, ExperimentEngine, ExperimentFinished
from kubetune.local.backend_follow import BackendFollow
from kubetune.local.backend_launch import KILL_GRACE_S
from kubetune.local.backend_trial import LocalTrial, TrialTemplate
from kubetune.local.forkserver import ForkServer
from kubetune.local.reaper import Reaper
from kubetune.local.resources import ResourcePool

TICK_INTERVAL_S = 0.25


class LocalBackend(BackendFollow):
    def __init__(
        self,
        engine: ExperimentEngine,
        template: TrialTemplate,
        pool: ResourcePool,
        on_progress: Callable[[LocalBackend], None] | None = None,
        extra_state: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.template = template
        self.pool = pool
        self.on_progress = on_progress
        self.extra_state = extra_state or {}
        self.trials: dict[str, LocalTrial] = {}
        self.queue: deque[str] = deque()
        self.running: dict[str, LocalTrial] = {}
        self.selector = selectors.DefaultSelector()
        self.finished: ExperimentFinished | None = None
        self.results_seen = 0
        self._dirty = True
        self._last_save = 0.0
        self._last_tick = 0.0
        self._specs_dir = os.path.join(template.experiment_dir, ".kubetune", "specs")
        os.makedirs(self._specs_dir, exist_ok=True)
        self.forkserver: ForkServer | None = None
        self.reaper: Reaper | None = None
        self._saved_ids: set[str] = set()  # trials the state file on disk knows
        # what trials are scheduled on, for schedulers that share it out (Ray's totals)
        engine.resource_totals = {"CPU": pool.total_cpu, "GPU": float(len(pool.gpu_ids))}

    # -- the loop ---------------------------------------------------------------------------
    def _adopt_existing(self) -> None:
        """Know the trials a restored engine already has (their processes are gone)."""
        for trial_id in self.engine.trial_ids():
            if trial_id in self.trials:
                continue
            summary = self.engine.trial_summary(trial_id)
            latest = summary.get("latest_checkpoint")
            trial = LocalTrial(
                trial_id=trial_id,
                name=summary["trial_name"],
                dir_name=summary["trial_dirname"],
                tag=summary["experiment_tag"],
                config=summary["config"],
                base_resources=self.engine.trials[trial_id].resources,
            )
            if self.engine.scheduler.resources_for(trial_id) is not None:
                trial.resources = self.engine.trials[trial_id].resources  # reallocated ones
            if latest:
                trial.checkpoints_seen.add(latest["checkpoint_dir_name"])
            self.trials[trial_id] = trial

    def _start_forkserver(self) -> None:
        if os.environ.get("KUBETUNE_FORKSERVER", "1") == "0" or not hasattr(socket, "send_fds"):
            return  # every trial then starts its own interpreter
        self.forkserver = ForkServer(env=self.reaper.env if self.reaper else None)
        self.selector.register(self.forkserver.fileno(), selectors.EVENT_READ, None)

    def run(self, initial: list[Action]) -> None:
        try:
            self.reaper = Reaper(KILL_GRACE_S)  # ends our trials if this process dies
            self._start_forkserver()
            self._adopt_existing()
            self.apply(initial)
            while True:
                self._launch_queued()
                self._poll()
                now = time.time()
                if now - self._last_tick >= TICK_INTERVAL_S:
                    self._last_tick = now
                    self.apply(self.engine.on_tick(now))
                    if self.on_progress is not None:
                        self.on_progress(self)
                self.save_state()
                if self.engine.is_finished() and not self.running:
                    break
                if not self.running and not self.queue and not self.engine.is_finished():
                    # Nothing runs and nothing waits: only the engine's clock can move it on.
                    time.sleep(0.01)
                    continue
                self._wait(0.01)
        except BaseException:
            self.shutdown()
            raise
        finally:
            self.save_state(force=True)
            if self.forkserver is not None:
                self.selector.unregister(self.forkserver.fileno())
                self.forkserver.close()
                self.forkserver = None
            if self.reaper is not None:
                self.reaper.close()
                self.reaper = None
            if self.on_progress is not None:
                self.on_progress(self)

    def shutdown(self) -> None:
        """Stop every trial process (SIGTERM, then SIGKILL after a grace period)."""
        for trial in self.running.values():
            if trial.proc is not None:
                trial.proc.terminate("driver stopped")
        deadline = time.monotonic() + KILL_GRACE_S
        for trial in list(self.running.values()):
            proc = trial.proc
            if proc is None:
                continue
            try:
                proc.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                proc.kill_if_overdue(0)
                proc.proc.wait()
            proc.kill_group()
            proc.close()
            if trial.workers is not None:
                trial.workers.stop(0)
                trial.workers = None
        self.running.clear()

    def _wait(self, timeout: float) -> None:
        if self.selector.get_map():
            self.selector.select(timeout)
        else:
            time.sleep(timeout)
