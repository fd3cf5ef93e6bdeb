"""What keeps a local experiment whole across crashes, full disks and careless restarts.

- :func:`earlier_trial_dirs`: trial directories left by a run whose state file is gone (a new
  run must not append into them);
- :func:`fall_back_to_intact_checkpoints`: a restored state whose latest checkpoint was deleted
  restores from the newest checkpoint still there;
- :class:`Ballast`: a little space held back, so that the state can still be saved when the
  disk fills up;
- :func:`disk_full`: whether an error is a full disk or quota.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

from kubetune.trial.output import CHECKPOINT_RE, PARAMS_FILE, RESULT_FILE

BALLAST_FILE = "ballast"
BALLAST_MIN = 1 << 20


def disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def earlier_trial_dirs(local_dir: str) -> list[str]:
    """Sub-directories that hold a trial's output (params.json or result.json)."""
    try:
        names = sorted(os.listdir(local_dir))
    except OSError:
        return []
    found = []
    for name in names:
        path = os.path.join(local_dir, name)
        if name.startswith(".") or not os.path.isdir(path):
            continue
        if os.path.exists(os.path.join(path, RESULT_FILE)) or os.path.exists(
            os.path.join(path, PARAMS_FILE)
        ):
            found.append(name)
    return found


def intact_checkpoints(trial_dir: str) -> list[str]:
    """The trial's committed checkpoint directories (oldest first) that are not empty."""
    try:
        names = os.listdir(trial_dir)
    except OSError:
        return []
    out = []
    for name in names:
        match = CHECKPOINT_RE.match(name)
        path = os.path.join(trial_dir, name)
        if match and os.path.isdir(path):
            try:
                if os.listdir(path):
                    out.append((int(match.group(1)), name))
            except OSError:
                continue
    return [name for _, name in sorted(out)]


def fall_back_to_intact_checkpoints(
    engine_state: dict[str, Any], local_dir: str, dirnames: dict[str, str]
) -> list[str]:
    """Edit a saved engine state so that no trial restores from a checkpoint that is gone.

    ``dirnames`` maps trial ids to their directory names. Returns one note per change.
    """
    notes = []
    for rec in engine_state.get("trials", []):
        trial_id = rec.get("trial_id")
        trial_dir = os.path.join(local_dir, dirnames.get(trial_id, rec.get("name") or ""))
        intact = intact_checkpoints(trial_dir)
        kept = [c for c in rec.get("checkpoints") or [] if len(c) == 3 and c[2] in intact]
        if len(kept) != len(rec.get("checkpoints") or []):
            rec["checkpoints"] = kept
        latest = rec.get("latest_checkpoint")
        if latest and latest not in intact:
            older = [c for c in intact if c < latest]
            rec["latest_checkpoint"] = older[-1] if older else None
            notes.append(
                f"trial {rec.get('name') or trial_id}: its latest checkpoint {latest} is gone;"
                + (
                    f" it resumes from {older[-1]}, the newest one still there"
                    if older
                    else " no older one is left: it starts again from scratch"
                )
            )
    # restore sources (PBT donors, pins) that are gone are forgotten
    for rec in engine_state.get("trials", []):
        pending = rec.get("pending_restore")
        if isinstance(pending, dict):
            donor_dir = os.path.join(local_dir, dirnames.get(pending.get("trial_id", ""), ""))
            if pending.get("name") not in intact_checkpoints(donor_dir):
                rec["pending_restore"] = None
    pins = engine_state.get("restore_pins")
    if isinstance(pins, dict):
        for target, pin in list(pins.items()):
            donor_dir = os.path.join(local_dir, dirnames.get(pin[0], ""))
            if pin[1] not in intact_checkpoints(donor_dir):
                del pins[target]
    return notes


class Ballast:
    """A file of reserved space in ``.kubetune/``, given back when the disk fills up."""

    def __init__(self, internal_dir: str, size: int = BALLAST_MIN) -> None:
        self.path = os.path.join(internal_dir, BALLAST_FILE)
        self.size = size

    def create(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            self._fill(fd)
        except BaseException:
            os.close(fd)
            self.release()
            raise
        os.close(fd)

    def _fill(self, fd: int) -> None:
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, self.size)
                return
            except OSError as exc:
                if disk_full(exc):
                    raise
        os.pwrite(fd, b"\0" * self.size, 0)  # where fallocate is not supported

    def release(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


def note(message: str) -> None:
    print(f"kubetune: {message}", file=sys.stderr)
