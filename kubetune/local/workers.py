"""The other workers of a multi-worker trial in local mode (ranks 1..N-1; rank 0 is the
trial's :class:`kubetune.local.process.TrialProcess`).

Each is ``python -m kubetune.trial`` on the same trial spec, with its own scratch output
directory and no decision pipe: the runner sees its rank (``kubetune.train._context``) and
drops its reports, as Ray drops the reports of ranks other than 0. All workers share
rank 0's trial directory (``train.get_context().get_trial_dir()``), its restore checkpoint
and its GPUs (``LOCAL_RANK`` picks one, as Ray Train's workers on one node do). The
rendezvous is this machine: ``MASTER_ADDR=127.0.0.1`` and a free port.

The group lives and dies with rank 0: a worker that fails ends the attempt (rank 0 is
stopped and the trial fails, to be retried from its latest checkpoint like any failure), and
when rank 0 ends the others are stopped.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import IO

from kubetune.train._context import WorkerPlace, rendezvous_env
from kubetune.trial.output import ERROR_FILE
from kubetune.trial.spec import TrialSpec

LOCALHOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def local_env(rank: int, world_size: int, port: int) -> dict[str, str]:
    """One machine: every worker is on node 0, its local rank is its rank."""
    place = WorkerPlace(rank, world_size, rank, world_size, 0)
    return rendezvous_env(place, LOCALHOST, port)


class WorkerGroup:
    def __init__(
        self,
        spec: TrialSpec,
        world_size: int,
        port: int,
        scratch: str,
        env: dict[str, str],
    ) -> None:
        self.scratch = scratch
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []
        self._failed: list[int] = []  # ranks in the order their failures were seen
        shutil.rmtree(scratch, ignore_errors=True)
        for rank in range(1, world_size):
            out = os.path.join(scratch, f"rank_{rank}")
            os.makedirs(out, exist_ok=True)
            worker = dataclasses.replace(
                spec,
                out_dir=out,
                trial_dir=spec.trial_dir or spec.out_dir,
                gate=None,
                decision_points=None,
                done_marker=os.path.join(out, ".done.json"),
                reuse=False,
            )
            path = os.path.join(out, "spec.json")
            worker.dump(path)
            log = open(os.path.join(out, "trial.log"), "ab")  # noqa: SIM115
            self._logs.append(log)
            self.procs[rank] = subprocess.Popen(
                [sys.executable, "-m", "kubetune.trial", path],
                env={
                    **os.environ,
                    **env,
                    **local_env(rank, world_size, port),
                    "KUBETUNE_PARENT_PID": str(os.getpid()),
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def failure(self) -> str | None:
        """The first worker seen ending with an error, as a message (None: all well). The
        first one is the cause: the others then fail on the broken rendezvous."""
        for rank, proc in self.procs.items():
            code = proc.poll()
            if code not in (None, 0) and rank not in self._failed:
                self._failed.append(rank)
        if not self._failed:
            return None
        rank = self._failed[0]
        text = ""
        try:
            with open(
                os.path.join(self.scratch, f"rank_{rank}", ERROR_FILE), encoding="utf-8"
            ) as f:
                text = f.read().strip()
        except OSError:
            pass
        code = self.procs[rank].poll()
        return f"worker rank {rank} of the trial failed (exit code {code})" + (
            f":\n{text}" if text else ""
        )

    def stop(self, grace_s: float, settle_s: float = 0.0) -> str | None:
        """Stop every worker still running (SIGTERM, SIGKILL after ``grace_s``); returns
        :meth:`failure` as it was before the stop. ``settle_s``: first give the workers that
        long to end by themselves (rank 0 failed: one of them may be failing, and its error
        says more than rank 0's broken connection)."""
        settle = time.monotonic() + settle_s
        while time.monotonic() < settle and any(p.poll() is None for p in self.procs.values()):
            self.failure()
            time.sleep(0.05)
        failed = self.failure()
        for proc in self.procs.values():
            if proc.poll() is None:
                _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait()
            _signal(proc, signal.SIGKILL)  # what the worker started and left behind
        for log in self._logs:
            log.close()
        self._logs = []
        return failed


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except OSError:
        pass
