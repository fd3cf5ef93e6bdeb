"""Launching local trials: the queue, their resources, their specs, their processes."""

from __future__ import annotations

import os
import selectors
import time

from kubetune.local.backend_actions import BackendActions
from kubetune.local.backend_trial import LocalTrial
from kubetune.local.process import TrialProcess
from kubetune.local.resources import ResourceError
from kubetune.local.workers import WorkerGroup, free_port, local_env
from kubetune.trial.spec import TrialSpec
from kubetune.tune.resources import PlacementGroupFactory

KILL_GRACE_S = float(os.environ.get("KUBETUNE_KILL_GRACE_S", "10"))


class BackendLaunch(BackendActions):
    """Starts queued trials whose resources fit, each in a trial process."""

    # -- launching --------------------------------------------------------------------------
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
