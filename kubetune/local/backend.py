"""The local backend: the engine's actions carried out with trial subprocesses.

One loop, no threads: launch what fits, read each trial's new result lines and decision
requests, feed results to the engine, answer requests with its verdicts, turn process exits
into engine events, and save the experiment state. A STOP or PAUSE for a trial that is not
waiting at a decision point is sent as SIGTERM, which the runner honours at once.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubetune.engine import (
    Action,
    CheckpointRef,
    CreateTrial,
    DeleteCheckpoint,
    ExperimentEngine,
    ExperimentFinished,
    PauseTrial,
    RestartTrial,
    ResumeTrial,
    StopTrial,
    Verdict,
)
from kubetune.local.forkserver import ForkServer
from kubetune.local.process import TrialProcess
from kubetune.local.reaper import Reaper
from kubetune.local.resources import ResourceError, ResourcePool
from kubetune.local.result_grid import STATE_FILE
from kubetune.local.state_file import trial_entries
from kubetune.local.workers import WorkerGroup, free_port, local_env
from kubetune.trial.output import ERROR_FILE
from kubetune.trial.spec import TrialSpec
from kubetune.tune.resources import PlacementGroupFactory

GATE_ANSWERS = {
    Verdict.CONTINUE: "continue",
    Verdict.STOP: "stop",
    Verdict.PAUSE: "pause",
    Verdict.RESTART: "restart",
}
STATE_SAVE_INTERVAL_S = 0.5
TICK_INTERVAL_S = 0.25
KILL_GRACE_S = float(os.environ.get("KUBETUNE_KILL_GRACE_S", "10"))
WORKER_SETTLE_S = 2.0  # a failed rank 0 waits this long for its workers' own errors


@dataclass
class TrialTemplate:
    """What every trial of the experiment shares."""

    experiment_name: str
    experiment_dir: str
    trainable_pickle: str
    params_dir: str | None
    stop: dict[str, float] | None
    checkpoint_frequency: int
    checkpoint_at_end: bool
    chdir_to_trial_dir: bool
    python_path: list[str]
    reuse_actors: bool
    resources_for: Callable[[dict[str, Any], dict[str, Any]], PlacementGroupFactory]


@dataclass
class LocalTrial:
    trial_id: str
    name: str
    tag: str
    config: dict[str, Any]
    base_resources: dict[str, Any]
    restore_from: CheckpointRef | None = None
    decision_points: dict[str, Any] | None = None
    proc: TrialProcess | None = None
    pgf: PlacementGroupFactory | None = None
    gpus: list[int] = field(default_factory=list)
    attempt: int = 0
    verdicts: dict[int, str] = field(default_factory=dict)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    ended_by_engine: str | None = None  # "stop" | "pause" | "restart"
    relaunch: bool = False
    checkpoints_seen: set[str] = field(default_factory=set)
    # the runner wrote a result with done=True: it ends this trial by itself (stop criteria,
    # done), so an engine STOP needs no signal (which could hit a reused process's next trial)
    self_ending: bool = False
    dir_name: str = ""  # trial_dirname_creator's, when not the name
    workers: WorkerGroup | None = None  # ranks 1..N-1 of a multi-worker trial
    # resources the scheduler gave it (ResourceChangingScheduler): they replace the template's
    # (with_resources) from the next start on; `new_resources` waits for the process to end
    resources: dict[str, Any] | None = None
    new_resources: dict[str, Any] | None = None

    @property
    def dirname(self) -> str:
        return self.dir_name or self.name


class LocalBackend:
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

    # -- engine actions -------------------------------------------------------------------
    def apply(self, actions: list[Action] | Any) -> None:
        for action in actions:
            self._dirty = True
            if isinstance(action, CreateTrial):
                trial = LocalTrial(
                    trial_id=action.trial_id,
                    name=action.trial_name,
                    dir_name=self.engine.trials[action.trial_id].dirname or "",
                    tag=action.experiment_tag,
                    config=action.config,
                    base_resources=action.resources,
                    restore_from=action.restore_from,
                    decision_points=action.decision_points.to_dict(),
                )
                self.trials[trial.trial_id] = trial
                self.queue.append(trial.trial_id)
            elif isinstance(action, ResumeTrial):
                trial = self.trials[action.trial_id]
                if action.resources is not None:
                    trial.new_resources = action.resources
                trial.config = action.config
                trial.restore_from = action.restore_from
                trial.decision_points = action.decision_points.to_dict()
                trial.ended_by_engine = None
                self._queue_or_relaunch(trial)
            elif isinstance(action, RestartTrial):
                trial = self.trials[action.trial_id]
                trial.config = action.new_config
                trial.restore_from = action.restore_from
                trial.decision_points = action.decision_points.to_dict()
                if trial.proc is not None:
                    trial.ended_by_engine = "restart"
                    self._end_running(trial, "restart")
                self._queue_or_relaunch(trial)
            elif isinstance(action, StopTrial):
                self._stop(action.trial_id, "stop")
            elif isinstance(action, PauseTrial):
                self._stop(action.trial_id, "pause")
            elif isinstance(action, DeleteCheckpoint):
                owner = self.trials.get(action.trial_id)
                if owner is not None:
                    path = os.path.join(self.trial_dir(owner), action.checkpoint_dir_name)
                    shutil.rmtree(path, ignore_errors=True)
            elif isinstance(action, ExperimentFinished):
                self.finished = action

    def _queue_or_relaunch(self, trial: LocalTrial) -> None:
        if trial.proc is not None:
            trial.relaunch = True  # start again once the current process has exited
        elif trial.trial_id not in self.queue:
            self.queue.append(trial.trial_id)

    def _stop(self, trial_id: str, how: str) -> None:
        trial = self.trials.get(trial_id)
        if trial is None:
            return
        if trial.trial_id in self.queue:
            self.queue.remove(trial.trial_id)
        trial.relaunch = False
        if trial.proc is not None:
            trial.ended_by_engine = how
            if not trial.self_ending:
                self._end_running(trial, how)

    def _end_running(self, trial: LocalTrial, action: str) -> None:
        """Answer a waiting decision with ``action``; otherwise end the process now."""
        assert trial.proc is not None
        if trial.waiting:
            for request in trial.waiting:
                trial.proc.answer(request["seq"], action, "scheduler")
            trial.waiting.clear()
        else:
            trial.proc.terminate(action)

    # -- launching --------------------------------------------------------------------------
    def trial_dir(self, trial: LocalTrial) -> str:
        return os.path.join(self.template.experiment_dir, trial.dirname)

    def checkpoint_path(self, ref: CheckpointRef) -> str:
        owner = self.trials.get(ref.trial_id)
        dirname = owner.dirname if owner is not None else ref.trial_id
        return os.path.join(self.template.experiment_dir, dirname, ref.checkpoint_dir_name)

    def _launch_queued(self) -> None:
        # FIFO, as Ray: the first trial that does not fit waits, and so do those behind it
        while self.queue:
            trial = self.trials[self.queue[0]]
            if trial.new_resources is not None and trial.proc is None:
                trial.resources, trial.new_resources = trial.new_resources, None
                trial.pgf = None  # the pool released the old ones when the process ended
            if trial.pgf is None:
                trial.pgf = self._resources_of(trial)
                try:
                    self.pool.check_fits(trial.pgf, f"trial {trial.name}")
                except ResourceError as exc:
                    self.queue.popleft()
                    self.apply(self.engine.on_trial_error(trial.trial_id, str(exc), time.time()))
                    continue
            gpus = self.pool.try_acquire(trial.pgf)
            if gpus is None:
                return
            self.queue.popleft()
            self._launch(trial, gpus)

    def _resources_of(self, trial: LocalTrial) -> PlacementGroupFactory:
        if trial.resources is not None:
            return PlacementGroupFactory.from_dict(trial.resources)
        return self.template.resources_for(trial.config, trial.base_resources)

    def _prepare_attempt(self, trial: LocalTrial, gpus: list[int]) -> None:
        trial.attempt += 1
        trial.gpus = gpus
        trial.verdicts.clear()
        trial.waiting.clear()
        trial.ended_by_engine = None
        trial.relaunch = False
        trial.self_ending = False

    def _spec(self, trial: LocalTrial) -> TrialSpec:
        t = self.template
        assert trial.pgf is not None
        return TrialSpec(
            trial_id=trial.trial_id,
            out_dir=self.trial_dir(trial),
            trainable_pickle=t.trainable_pickle,
            config=trial.config,
            trial_name=trial.name,
            experiment_name=t.experiment_name,
            experiment_tag=trial.tag,
            params_dir=t.params_dir,
            restore_from=self.checkpoint_path(trial.restore_from) if trial.restore_from else None,
            stop=t.stop,
            checkpoint_frequency=t.checkpoint_frequency,
            checkpoint_at_end=t.checkpoint_at_end,
            resources=trial.pgf.to_dict(),
            chdir_to_trial_dir=t.chdir_to_trial_dir,
            decision_points=trial.decision_points,
            python_path=t.python_path,
            # a worker group lives as long as its trial: no process takes over another trial
            reuse=t.reuse_actors and trial.pgf.num_workers == 1,
            termination_grace_s=KILL_GRACE_S,
        )

    def _record_before_start(self, trial: LocalTrial) -> None:
        """A trial's process starts only once the state file knows the trial: a driver killed
        right after the start must not re-create it under the same name on resume."""
        if trial.trial_id not in self._saved_ids:
            self.save_state(force=True)

    def _launch(self, trial: LocalTrial, gpus: list[int]) -> None:
        self._record_before_start(trial)
        self._prepare_attempt(trial, gpus)
        spec = self._spec(trial)
        env = {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus)} if gpus else {}
        if not gpus and self.pool.gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU trial must not grab a GPU
        if self.reaper is not None:
            env.update(self.reaper.env)
        world_size = trial.pgf.num_workers if trial.pgf is not None else 1
        port = free_port() if world_size > 1 else 0
        if world_size > 1:
            trial.workers = WorkerGroup(
                spec,
                world_size,
                port,
                os.path.join(self._specs_dir, "..", "workers", trial.trial_id),
                env,
            )
            env.update(local_env(0, world_size, port))
        spec_path = os.path.join(self._specs_dir, f"{trial.trial_id}.json")
        log_path = os.path.join(spec.out_dir, "trial.log")
        if self.forkserver is not None and not self.forkserver.alive():
            self.selector.unregister(self.forkserver.fileno())
            self.forkserver = None  # it died: fall back to a process per trial
        trial.proc = TrialProcess(
            spec, spec_path, env=env, log_path=log_path, forkserver=self.forkserver
        )
        self.selector.register(trial.proc.gate_fd, selectors.EVENT_READ, trial.trial_id)
        if trial.proc.exit_fd is not None:  # wake up the moment the process exits
            self.selector.register(trial.proc.exit_fd, selectors.EVENT_READ, trial.trial_id)
        self.running[trial.trial_id] = trial
        self.apply(self.engine.on_trial_started(trial.trial_id, time.time()))

    # -- following running trials -----------------------------------------------------------
    def _poll(self) -> None:
        if self.forkserver is not None:
            self.forkserver.drain()
        for trial in list(self.running.values()):
            proc = trial.proc
            assert proc is not None
            requests = proc.read_gate()  # read before the results: they were written first
            if proc.echo is not None:
                proc.echo.pump()
            self._feed_results(trial)
            for request in requests:
                if request.get("event") == "next":
                    self._hand_over(trial, request)
                    break
                trial.waiting.append(request)
            else:
                self._answer_waiting(trial)
                workers = trial.workers
                if workers is not None and proc.kill_requested is None and workers.failure():
                    proc.terminate("a worker failed")  # the attempt fails as a whole
                if proc.poll() is not None:
                    self._feed_results(trial)
                    self._on_exit(trial)
                elif proc.kill_requested is not None:
                    proc.kill_if_overdue(KILL_GRACE_S)

    def _feed_results(self, trial: LocalTrial) -> None:
        proc = trial.proc
        assert proc is not None
        for result in proc.tail.read():
            self.results_seen += 1
            if result.get("done"):
                trial.self_ending = True
            name = result.get("checkpoint_dir_name")
            if name:
                trial.checkpoints_seen.add(name)
            if trial.ended_by_engine is not None:
                continue  # the engine already ended this attempt
            response = self.engine.on_result(trial.trial_id, result, time.time())
            iteration = result.get("training_iteration")
            if isinstance(iteration, int):
                trial.verdicts[iteration] = GATE_ANSWERS[response.verdict]
            self.apply(response.actions)
            self._dirty = True

    def _answer_waiting(self, trial: LocalTrial) -> None:
        if not trial.waiting or trial.proc is None:
            return
        still: list[dict[str, Any]] = []
        for request in trial.waiting:
            answer = trial.verdicts.pop(request["training_iteration"], None)
            if answer is None:
                still.append(request)
            else:
                trial.proc.answer(request["seq"], answer)
        trial.waiting = still

    def _on_exit(self, trial: LocalTrial) -> None:
        proc = trial.proc
        assert proc is not None and trial.pgf is not None
        status = proc.status()
        self.selector.unregister(proc.gate_fd)
        if proc.exit_fd is not None:
            self.selector.unregister(proc.exit_fd)
        proc.kill_group()  # what the trial started and left behind
        proc.close()
        if trial.workers is not None:
            ok = status.get("status") in ("finished", "stopped", "paused", "restart")
            failed = trial.workers.stop(KILL_GRACE_S, settle_s=0.0 if ok else WORKER_SETTLE_S)
            trial.workers = None
            if failed is not None and status.get("status") not in ("finished", "stopped"):
                status = {"status": "worker_failed", "error": failed}
        self.pool.release(trial.pgf, trial.gpus)
        trial.proc = None
        del self.running[trial.trial_id]
        self._trial_ended(trial, status)

    def _hand_over(self, trial: LocalTrial, request: dict[str, Any]) -> None:
        """reuse_actors: the trial ended and its process asks for more work."""
        proc = trial.proc
        assert proc is not None and trial.pgf is not None
        status = proc.status()
        trial.proc = None
        del self.running[trial.trial_id]
        self._trial_ended(trial, status)  # may queue new trials: they can take this process
        successor = None
        for candidate_id in list(self.queue):
            candidate = self.trials[candidate_id]
            if candidate.pgf is None:
                candidate.pgf = self._resources_of(candidate)
            if candidate.pgf == trial.pgf:
                successor = candidate
                self.queue.remove(candidate_id)
                break
        if successor is None or self.engine.is_finished():
            if successor is not None:
                self.queue.appendleft(successor.trial_id)
            proc.reply(request["seq"], {"action": "exit"})
            # the process exits by itself; keep following it as the finished trial's
            trial.proc = proc
            trial.ended_by_engine = trial.ended_by_engine or "done"
            self.running[trial.trial_id] = trial
            return
        self._record_before_start(successor)
        self._prepare_attempt(successor, trial.gpus)
        spec = self._spec(successor)
        message = proc.retarget(spec)
        self.selector.modify(proc.gate_fd, selectors.EVENT_READ, successor.trial_id)
        successor.proc = proc
        trial.gpus = []
        self.running[successor.trial_id] = successor
        proc.reply(request["seq"], {"action": "next", "spec": message})
        self.apply(self.engine.on_trial_started(successor.trial_id, time.time()))

    def _trial_ended(self, trial: LocalTrial, status: dict[str, Any]) -> None:
        self._dirty = True
        now = time.time()
        last = status.get("last_checkpoint")
        if last and last not in trial.checkpoints_seen:
            trial.checkpoints_seen.add(last)
            self.apply(self.engine.on_checkpoint(trial.trial_id, last))
        if trial.relaunch:
            trial.relaunch = False
            self.queue.append(trial.trial_id)
            return
        if trial.ended_by_engine is not None:
            return
        kind = status.get("status")
        if kind == "reset_refused":  # reuse_actors: run it again in a fresh process
            self.queue.appendleft(trial.trial_id)
            return
        if kind in ("finished", "stopped"):
            self.apply(self.engine.on_trial_complete(trial.trial_id, now))
        elif kind in ("paused", "restart"):
            return  # only ever on the engine's word, handled above
        elif kind == "terminated" and status.get("reason") == "SIGTERM":
            # someone else sent SIGTERM (as Kubernetes does to a preempted pod): the trial
            # reached a checkpoint if it could; retried from it, not counted as a failure
            self.apply(self.engine.on_trial_preempted(trial.trial_id, "SIGTERM", now))
        else:
            self.apply(
                self.engine.on_trial_error(trial.trial_id, self._error_text(trial, status), now)
            )

    def _error_text(self, trial: LocalTrial, status: dict[str, Any]) -> str:
        if status.get("status") == "worker_failed":
            return str(status["error"])
        try:
            with open(os.path.join(self.trial_dir(trial), ERROR_FILE), encoding="utf-8") as f:
                text = f.read()
            if text:
                return text
        except FileNotFoundError:
            pass
        if status.get("error"):  # sent over the pipe when error.txt could not be written
            return str(status["error"])
        return f"trial process ended ({status.get('status')}): {status.get('reason')}"

    # -- state ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        trials = trial_entries(self.engine)
        return {
            "format": 1,
            "updated": time.time(),
            "finished": self.finished.to_dict() if self.finished else None,
            "engine": self.engine.to_state(),
            "trials": trials,
            **self.extra_state,
        }

    def save_state(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self._dirty or now - self._last_save < STATE_SAVE_INTERVAL_S):
            return
        self._last_save = now
        self._dirty = False
        path = os.path.join(self.template.experiment_dir, STATE_FILE)
        tmp = f"{path}.tmp"
        ids = set(self.engine.trial_ids())
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.state(), f)
            os.replace(tmp, path)
        except BaseException:
            self._dirty = True
            try:
                os.unlink(tmp)  # a full disk: give back what the half-written copy took
            except OSError:
                pass
            raise
        self._saved_ids = ids
