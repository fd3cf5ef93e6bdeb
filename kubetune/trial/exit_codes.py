"""Exit codes of ``python -m kubetune.trial``: how the trial ended, for the backend to read."""

from __future__ import annotations

FINISHED = 0  # the trainable returned, or reported done=True
ERRORED = 1  # user code raised, or the trainable could not be loaded; see error.txt
INVALID_SPEC = 2  # the trial spec itself is unusable; see error.txt
STOPPED = 10  # a stop criterion was met or the scheduler said STOP
PAUSED = 11  # the scheduler said PAUSE; the newest checkpoint holds the state
RESTART = 12  # the scheduler said RESTART (PBT exploit): start again with a new config
TERMINATED = 13  # SIGTERM: the write in progress was finished, then the runner exited
RESET_REFUSED = 14  # reuse_actors: reset_config returned False; run the trial in a new process
DISK_FULL = 15  # a write failed with ENOSPC/EDQUOT: the disk, not the trial, is at fault

NAMES = {
    FINISHED: "finished",
    ERRORED: "errored",
    INVALID_SPEC: "invalid_spec",
    STOPPED: "stopped",
    PAUSED: "paused",
    RESTART: "restart",
    TERMINATED: "terminated",
    RESET_REFUSED: "reset_refused",
    DISK_FULL: "disk_full",
}
