"""Following running local trials: decision requests, results, exits, reuse hand-overs."""

from __future__ import annotations

import errno
import os
import selectors
import time
from typing import Any

from kubetune.engine import Verdict
from kubetune.local.backend_launch import KILL_GRACE_S, BackendLaunch
from kubetune.local.backend_trial import LocalTrial
from kubetune.trial.output import ERROR_FILE

GATE_ANSWERS = {
    Verdict.CONTINUE: "continue",
    Verdict.STOP: "stop",
    Verdict.PAUSE: "pause",
    Verdict.RESTART: "restart",
}
WORKER_SETTLE_S = 2.0  # a failed rank 0 waits this long for its workers' own errors


class BackendFollow(BackendLaunch):
    """Follows running trials: feeds their results to the engine, answers their gates."""

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
        elif kind == "disk_full":
            # not the trial's failure: the experiment stops as for the driver's own full disk
            # (saved, resumable), and this trial continues from its checkpoint on resume
            where = self.trial_dir(trial)
            raise OSError(errno.ENOSPC, f"No space left on device (trial {trial.trial_id})", where)
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
