"""Chaos suite for local mode (issue 15): drivers killed at random points, concurrent drivers, a
full disk, damaged files. Exact step accounting: every trial's result.json must hold each step
exactly once, and no trial process may outlive its driver.

The default run is CI-sized (well under two minutes); ``KUBETUNE_CHAOS_SCALE=N`` multiplies
the number of cases (``KUBETUNE_CHAOS_SEED`` picks the random sequence). The counts are printed
at the end (run with ``-s`` to see them):

    chaos: cases=.. clean_errors=.. crashes=0 steps_lost=0 steps_duplicated=0 orphans=0
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chaos import helpers as H

SCALE = int(os.environ.get("KUBETUNE_CHAOS_SCALE", "1"))
SEED = int(os.environ.get("KUBETUNE_CHAOS_SEED", str(int(time.time()))))
STEPS = 25
CLEAN_EXITS = {0: "ok", 3: "refused", 4: "clean error", 130: "interrupted"}


@dataclass
class Counts:
    cases: int = 0
    clean_errors: int = 0
    crashes: int = 0
    steps_lost: int = 0
    steps_duplicated: int = 0
    orphans: int = 0

    def line(self) -> str:
        return (
            f"chaos: cases={self.cases} clean_errors={self.clean_errors} crashes={self.crashes}"
            f" steps_lost={self.steps_lost} steps_duplicated={self.steps_duplicated}"
            f" orphans={self.orphans} (seed={SEED}, scale={SCALE})"
        )


COUNTS = Counts()
CRASH_LOG: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\n" + COUNTS.line())
    for entry in CRASH_LOG:
        print("  crash:", entry[-2000:])


def _judge_exit(proc: subprocess.Popen, err: str, killed: bool) -> None:
    """A driver's end: clean (known code, no traceback) or a crash."""
    code = proc.returncode
    if killed and code == -signal.SIGKILL:
        return
    if code == -signal.SIGTERM and not err:
        return  # SIGTERM before fit() set its handler: nothing had started yet
    if code not in CLEAN_EXITS or "Traceback" in err:
        COUNTS.crashes += 1
        CRASH_LOG.append(f"exit {code}: {err}")
        log = os.environ.get("KUBETUNE_CHAOS_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"--- exit {code}\n{err}\n")
    elif code in (3, 4):
        COUNTS.clean_errors += 1


def _settle(pids: Path) -> None:
    left = H.orphans(pids, H.GRACE_S + 8)
    COUNTS.orphans += len(left)
    H.kill_all(left)


def _final_accounting(exp: Path, trials: int) -> None:
    lost, dup = H.account(exp, trials, STEPS)
    COUNTS.steps_lost += lost
    COUNTS.steps_duplicated += dup


def _cfg(pids: Path, rng: random.Random, trials: int) -> dict:
    cfg = {
        "pid_dir": str(pids),
        "steps": STEPS,
        "sleep": rng.choice([0.01, 0.03]),
        "trials": trials,
        "concurrent": 2,
    }
    if rng.random() < 0.3:
        cfg["ignore_term"] = True
    if rng.random() < 0.3:
        cfg["child"] = rng.choice(["group", "session"])
    return cfg


def _finish(storage: Path, name: str, cfg: dict, pids: Path) -> None:
    for _ in range(3):  # a clean run to the end (a retry only if it was refused)
        proc = H.start_driver(storage, name, "auto", cfg)
        _, err = proc.communicate(timeout=300)
        _judge_exit(proc, err, killed=False)
        _settle(pids)
        if proc.returncode != 3:
            return


@pytest.mark.parametrize("case", range(5 * SCALE))
def test_driver_killed_at_random_points(tmp_path, case):
    rng = random.Random(SEED * 1000 + case)
    storage, pids, name = tmp_path / "r", tmp_path / "p", f"kill{case}"
    pids.mkdir()
    trials = rng.choice([1, 2, 3])
    cfg = _cfg(pids, rng, trials)
    COUNTS.cases += 1
    for _ in range(rng.randint(1, 3)):
        proc = H.start_driver(storage, name, "auto", cfg)
        time.sleep(rng.uniform(0.05, 2.5))
        sig = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGTERM])
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        _judge_exit(proc, err, killed=sig == signal.SIGKILL)
        _settle(pids)
    _finish(storage, name, cfg, pids)
    _final_accounting(storage / name, trials)
    assert COUNTS.crashes == 0, CRASH_LOG
    assert (COUNTS.steps_lost, COUNTS.steps_duplicated, COUNTS.orphans) == (0, 0, 0)


@pytest.mark.parametrize("case", range(2 * SCALE))
def test_concurrent_drivers(tmp_path, case):
    rng = random.Random(SEED * 2000 + case)
    storage, pids, name = tmp_path / "r", tmp_path / "p", f"conc{case}"
    pids.mkdir()
    trials = 2
    cfg = _cfg(pids, rng, trials)
    COUNTS.cases += 1
    procs = []
    for _ in range(rng.randint(2, 3)):
        procs.append(H.start_driver(storage, name, "auto", cfg))
        time.sleep(rng.uniform(0, 0.8))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        _judge_exit(proc, err, killed=False)
    _settle(pids)
    _finish(storage, name, cfg, pids)
    _final_accounting(storage / name, trials)
    assert COUNTS.crashes == 0, CRASH_LOG
    assert (COUNTS.steps_lost, COUNTS.steps_duplicated, COUNTS.orphans) == (0, 0, 0)


@pytest.mark.parametrize("case", range(1 * SCALE))
def test_full_disk(tmp_path, case):
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        pytest.skip("mounting a small tmpfs needs root on Linux")
    rng = random.Random(SEED * 3000 + case)
    mnt = tmp_path / "small"
    mnt.mkdir()
    size = rng.choice(["2m", "3m", "5m"])
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]).returncode:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        pids = tmp_path / "p"
        pids.mkdir()
        cfg = {
            "pid_dir": str(pids),
            "steps": 100000,
            "sleep": 0,
            "blob": rng.choice([2000, 20000, 200000]),
            "trials": 2,
        }
        COUNTS.cases += 1
        proc = H.start_driver(mnt, "full", "fresh", cfg)
        _, err = proc.communicate(timeout=120)
        _judge_exit(proc, err, killed=False)
        _settle(pids)
        assert proc.returncode == 4 and "no space left" in err, err
        state = H.state_of(mnt / "full")
        assert state["finished"]["status"] == "FAILED"
        errored = [t for t in state["trials"] if t["status"] == "ERROR"]
        assert all("No space left" in (t["error"] or "") for t in errored)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


MUTATIONS = (
    "truncate_state",
    "flip_state",
    "truncate_tuner",
    "garbage_line",
    "torn_line",
    "delete_checkpoint",
    "delete_state",
    "empty_state",
)


@pytest.fixture(scope="module")
def finished_experiment(tmp_path_factory) -> Path:
    from kubetune import air, tune
    from tests.chaos.trainables import stepper

    root = tmp_path_factory.mktemp("fin")
    grid = tune.Tuner(
        stepper,
        param_space={"steps": 6, "sleep": 0, "k": tune.grid_search([0, 1])},
        tune_config=tune.TuneConfig(metric="score", mode="max"),
        run_config=air.RunConfig(name="fin", storage_path=str(root), verbose=0),
    ).fit()
    return Path(grid.experiment_path)


def _mutate(exp: Path, what: str, rng: random.Random) -> None:
    state = exp / "experiment_state.json"
    trial = H.trial_dirs(exp)[rng.randrange(2)]
    if what == "truncate_state":
        data = state.read_bytes()
        state.write_bytes(data[: rng.randrange(len(data))])
    elif what == "flip_state":
        data = bytearray(state.read_bytes())
        for _ in range(rng.randint(1, 5)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        state.write_bytes(bytes(data))
    elif what == "truncate_tuner":
        pkl = exp / ".kubetune" / "tuner.pkl"
        data = pkl.read_bytes()
        pkl.write_bytes(data[: rng.randrange(len(data))])
    elif what == "garbage_line":
        lines = (trial / "result.json").read_bytes().splitlines(keepends=True)
        lines.insert(rng.randrange(len(lines) + 1), bytes(rng.randrange(256) for _ in range(30)))
        (trial / "result.json").write_bytes(b"".join(lines) + b"\n")
    elif what == "torn_line":
        with open(trial / "result.json", "ab") as f:
            f.write(b'{"step": 3, "sco')
    elif what == "delete_checkpoint":
        ckpts = sorted(trial.glob("checkpoint_*"))
        shutil.rmtree(rng.choice(ckpts))
    elif what == "delete_state":
        state.unlink()
    elif what == "empty_state":
        state.write_text("{}")


def _in_process(fn) -> str:
    """'ok', 'clean' (an error with a message) or 'crash' (anything else escaping)."""
    from kubetune.local.state_file import StateFileError
    from kubetune.storage import StorageError

    err = io.StringIO()
    with (
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        try:
            code = fn()
        except (StateFileError, StorageError, FileNotFoundError, ValueError):
            return "clean"
        except BaseException as exc:  # that is what is counted
            CRASH_LOG.append(f"{type(exc).__name__}: {exc}")
            return "crash"
    if code not in (None, 0):
        return "clean" if code == 2 and "Traceback" not in err.getvalue() else "crash"
    return "ok"


@pytest.mark.parametrize("case", range(8 * SCALE))
def test_damaged_files(finished_experiment, tmp_path, case):
    from kubetune import cli, tune
    from tests.chaos.trainables import stepper

    rng = random.Random(SEED * 4000 + case)
    exp = tmp_path / "fin"
    shutil.copytree(finished_experiment, exp)
    what = MUTATIONS[case % len(MUTATIONS)] if case < len(MUTATIONS) else rng.choice(MUTATIONS)
    _mutate(exp, what, rng)
    COUNTS.cases += 1
    outcomes = [
        _in_process(lambda: cli.main(["results", str(exp)])),
        _in_process(lambda: tune.Tuner.restore(str(exp), stepper).fit() and 0),
        _in_process(lambda: cli.main(["repair", str(exp)])),
        _in_process(lambda: cli.main(["results", str(exp)])),
    ]
    COUNTS.clean_errors += outcomes.count("clean")
    COUNTS.crashes += outcomes.count("crash")
    assert "crash" not in outcomes, (what, CRASH_LOG[-3:])
    assert outcomes[3] == "ok" or what == "truncate_tuner", (what, outcomes)
