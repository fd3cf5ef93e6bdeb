"""Shared by the durability unit tests and the chaos suite: drivers, step accounting, orphans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])
GRACE_S = 1.0  # KUBETUNE_KILL_GRACE_S for the drivers these tests start


def driver_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "KUBETUNE_KILL_GRACE_S": str(GRACE_S), **extra}
    env.pop("KUBETUNE_DRIVER_TOKEN", None)
    return env


def start_driver(storage: Path, name: str, mode: str, cfg: dict, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.chaos.driver", str(storage), name, mode, json.dumps(cfg)],
        cwd=REPO,
        env=driver_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def recorded_pids(pid_dir: Path) -> list[int]:
    return [int(p.name.split(".")[-2]) for p in pid_dir.glob("*.pid")]


def orphans(pid_dir: Path, timeout: float) -> list[int]:
    """Trial processes (and their children) still alive after ``timeout`` seconds."""
    pids = recorded_pids(pid_dir)
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout, 0.05)
    return [p for p in pids if pid_alive(p)]


def kill_all(pids: list[int]) -> None:
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def steps_of(trial_dir: Path) -> list[int]:
    rows = []
    path = trial_dir / "result.json"
    if path.exists():
        for line in path.read_text().splitlines():
            rows.append(json.loads(line)["step"])
    return rows


def trial_dirs(exp: Path) -> list[Path]:
    return sorted(d for d in exp.iterdir() if d.is_dir() and not d.name.startswith("."))


def account(exp: Path, trials: int, steps: int) -> tuple[int, int]:
    """(steps lost, steps duplicated) over the experiment's trials, against ``steps`` each."""
    dirs = trial_dirs(exp)
    lost = steps * max(0, trials - len(dirs))
    dup = 0
    for d in dirs:
        seen = steps_of(d)
        dup += len(seen) - len(set(seen))
        lost += len(set(range(steps)) - set(seen))
    return lost, dup


def state_of(exp: Path) -> dict:
    return json.loads((exp / "experiment_state.json").read_text())
