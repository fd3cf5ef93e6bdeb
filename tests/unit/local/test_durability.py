"""Nothing lost, nothing run twice, every damaged file a clear error (issue 15, local mode).

Each test is one class of failure that broke before: torn result lines, trials started before
the state knew them, two drivers on one experiment, SIGTERM and orphans, ``os._exit(0)``,
resuming a finished experiment, a deleted state file, bad metrics, damaged state files,
repair and checkpoint fallback. Drivers run as subprocesses (``tests.chaos.driver``) so they
can be killed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from kubetune import air, tune
from kubetune.local.lock import ExperimentLockedError
from kubetune.local.result_grid import CorruptResultWarning, ResultGrid
from kubetune.local.state_file import StateFileError
from kubetune.schedulers import ASHAScheduler
from kubetune.trial.output import OutputWriter
from tests.chaos import helpers as H
from tests.chaos import trainables as CT

STEPS = 30


def _cfg(pids: Path, **kw) -> dict:
    return {"pid_dir": str(pids), "steps": STEPS, "sleep": 0.03, "trials": 2, **kw}


def _kill_when(driver: subprocess.Popen, predicate, sig=signal.SIGKILL) -> None:
    assert H.wait_for(predicate, 60), "the driver never got there"
    driver.send_signal(sig)
    driver.communicate(timeout=60)


def _finish(storage: Path, name: str, cfg: dict) -> subprocess.CompletedProcess:
    proc = H.start_driver(storage, name, "restore", cfg)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# -- torn lines ------------------------------------------------------------------------------
def test_an_append_never_extends_a_torn_last_line(tmp_path):
    writer = OutputWriter(str(tmp_path))
    writer.append(json.dumps({"step": 0}), {"step": 0})
    writer.close()
    with open(tmp_path / "result.json", "a") as f:
        f.write('{"step": 1, "half')  # a SIGKILL or a full disk mid-write
    with open(tmp_path / "progress.csv", "a") as f:
        f.write("1,ha")
    writer = OutputWriter(str(tmp_path))
    writer.append(json.dumps({"step": 1}), {"step": 1})
    writer.close()
    lines = (tmp_path / "result.json").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 1]
    assert "half" in (tmp_path / "result.json.torn").read_text()  # kept aside, not lost
    assert (tmp_path / "progress.csv").read_text().splitlines() == ["step", "0", "1"]


def test_a_resume_after_a_torn_line_continues_cleanly(tmp_path):
    storage, pids = tmp_path / "r", tmp_path / "p"
    pids.mkdir()
    steps = 100  # the kill comes long before either trial ends, even on a loaded machine
    driver = H.start_driver(storage, "torn", "fresh", _cfg(pids, steps=steps))
    exp = storage / "torn"
    _kill_when(driver, lambda: len(list(exp.glob("*/checkpoint_000005"))) >= 2)
    H.orphans(pids, 10)
    # a torn line is the last write of a trial killed mid-run, never of one that finished
    unfinished = [t for t in H.state_of(exp)["trials"] if t["status"] != "TERMINATED"]
    assert unfinished, "both trials finished before the kill"
    victim = exp / unfinished[0]["dirname"]
    with open(victim / "result.json", "a") as f:
        f.write('{"step": 999, "torn')
    done = _finish(storage, "torn", _cfg(pids, steps=steps))
    assert done.returncode == 0, done.stderr
    assert H.account(exp, 2, steps) == (0, 0)
    grid = ResultGrid.from_directory(str(exp))
    assert grid.num_errors == 0 and all(r.metrics["step"] == steps - 1 for r in grid)


def test_a_corrupt_line_is_named_and_skipped_and_the_rest_stays_readable(tmp_path):
    grid = tune.Tuner(
        CT.stepper,
        param_space={"steps": 5, "sleep": 0, "k": tune.grid_search([0, 1])},
        run_config=air.RunConfig(name="bad-line", storage_path=str(tmp_path), verbose=0),
    ).fit()
    exp = Path(grid.experiment_path)
    victim = H.trial_dirs(exp)[0]
    lines = (victim / "result.json").read_text().splitlines(keepends=True)
    lines.insert(2, '{"step": 7, "glued{"step": 8}\n')
    (victim / "result.json").write_text("".join(lines))
    with pytest.warns(CorruptResultWarning, match=rf"{victim.name}.*line 3"):
        again = ResultGrid.from_directory(str(exp))
    assert len(again) == 2 and again[0].metrics["step"] == 4
    cli = subprocess.run(
        [sys.executable, "-m", "kubetune.cli", "results", str(exp)],
        cwd=H.REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0 and "Traceback" not in cli.stderr
    assert "result.json" in cli.stderr and victim.name in cli.stderr


# -- trials recorded before they start ----------------------------------------------------------
def test_a_trial_is_in_the_state_before_its_process_starts(tmp_path):
    storage, pids = tmp_path / "r", tmp_path / "p"
    pids.mkdir()
    cfg = _cfg(pids, trials=3, concurrent=3)
    driver = H.start_driver(storage, "early", "fresh", cfg)
    exp = storage / "early"
    # kill the driver the moment the first trial process runs user code
    _kill_when(driver, lambda: any(pids.glob("*.pid")))
    started = {p.name.split(".")[0] for p in pids.glob("*.pid")}
    known = {t["trial_id"] for t in H.state_of(exp)["trials"]}
    assert started <= known
    H.orphans(pids, 10)
    done = _finish(storage, "early", cfg)
    assert done.returncode == 0, done.stderr
    assert H.account(exp, 3, STEPS) == (0, 0)


# -- one driver per experiment -----------------------------------------------------------------
def test_a_second_driver_is_refused_naming_the_holder_until_the_first_dies(tmp_path):
    storage, pids = tmp_path / "r", tmp_path / "p"
    pids.mkdir()
    cfg = _cfg(pids, sleep=0.05)
    first = H.start_driver(storage, "one", "fresh", cfg)
    exp = storage / "one"
    assert H.wait_for(lambda: (exp / "experiment_state.json").exists() and any(pids.iterdir()))
    with pytest.raises(
        ExperimentLockedError, match=rf"pid {first.pid} on host {socket.gethostname()}"
    ):
        tune.Tuner.restore(str(exp), CT.stepper).fit()
    with pytest.raises(ExperimentLockedError):  # not set aside while its driver runs
        tune.Tuner(
            CT.stepper,
            param_space={"steps": 3},
            run_config=air.RunConfig(name="one", storage_path=str(storage), verbose=0),
        ).fit()
    first.send_signal(signal.SIGKILL)
    first.communicate()
    H.orphans(pids, 10)
    done = _finish(storage, "one", cfg)  # the dead driver's lock is gone with it
    assert done.returncode == 0, done.stderr
    assert H.account(exp, 2, STEPS) == (0, 0)


def test_two_can_restore_scripts_started_together_corrupt_nothing(tmp_path):
    storage, pids = tmp_path / "r", tmp_path / "p"
    pids.mkdir()
    cfg = _cfg(pids)
    drivers = [H.start_driver(storage, "twice", "auto", cfg) for _ in range(2)]
    outs = [d.communicate(timeout=120) for d in drivers]
    codes = sorted(d.returncode for d in drivers)
    assert codes[0] == 0, outs
    if codes[1] != 0:  # refused (or ran after the first had finished)
        assert codes[1] in (3, 4), outs
        refused = next(o for d, o in zip(drivers, outs) if d.returncode != 0)[1]
        assert "Traceback" not in refused and ("pid" in refused or "already" in refused)
    exp = storage / "twice"
    assert H.account(exp, 2, STEPS) == (0, 0)
    assert ResultGrid.from_directory(str(exp)).num_errors == 0


# -- SIGTERM, process groups, orphans ------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_trial_outlives_its_driver(tmp_path, sig):
    storage, pids = tmp_path / "r", tmp_path / "p"
    pids.mkdir()
    # trials that ignore SIGTERM, one with a child in its group, one with a child in a session
    cfg = {
        "pid_dir": str(pids),
        "steps": 1000,
        "sleep": 0.05,
        "ignore_term": True,
        "child": tune.grid_search(["group", "session"]),
    }
    code = (
        "import sys, json\n"
        "from kubetune import air, tune\n"
        "from tests.chaos.trainables import stepper\n"
        "space = json.loads(sys.argv[2])\n"
        "space = {k: tune.grid_search(v['grid_search']) if isinstance(v, dict) else v"
        " for k, v in space.items()}\n"
        "try:\n"
        "    tune.Tuner(stepper, param_space=space, run_config=air.RunConfig("
        "name='orphans', storage_path=sys.argv[1], verbose=0)).fit()\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    driver = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "r"), json.dumps(cfg)],
        cwd=H.REPO,
        env=H.driver_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert H.wait_for(lambda: len(list(pids.glob("child.*"))) >= 2, 60)
    driver.send_signal(sig)
    _, err = driver.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert driver.returncode == 130, err
        assert "terminated (SIGTERM)" in err and "Traceback" not in err
        state = H.state_of(storage / "orphans")
        assert all(t["status"] in ("RUNNING", "PENDING") for t in state["trials"])
    left = H.orphans(pids, H.GRACE_S + 10)
    H.kill_all(left)
    assert left == []


# -- os._exit(0) -------------------------------------------------------------------------------
def test_exit_0_without_the_done_marker_is_an_error(tmp_path):
    grid = tune.Tuner(
        CT.stepper,
        param_space={"steps": 10, "sleep": 0, "exit0_at": 3},
        run_config=air.RunConfig(storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert grid.num_errors == 1
    assert "os._exit" in str(grid[0].error)


# -- resuming a finished experiment; a deleted state -------------------------------------------
def test_resuming_a_finished_experiment_is_a_no_op_that_says_so(tmp_path, capfd):
    tuner = tune.Tuner(
        CT.stepper,
        param_space={"steps": 4, "sleep": 0, "k": tune.grid_search([0, 1])},
        tune_config=tune.TuneConfig(metric="score", mode="max"),
        run_config=air.RunConfig(name="done", storage_path=str(tmp_path), verbose=0),
    )
    grid = tuner.fit()
    state_file = Path(grid.experiment_path) / "experiment_state.json"
    before = state_file.read_bytes()
    capfd.readouterr()
    again = tune.Tuner.restore(grid.experiment_path, CT.stepper).fit()
    assert "nothing to resume" in capfd.readouterr().err
    assert state_file.read_bytes() == before
    assert again.get_best_result().metrics["score"] == 3
    cli = subprocess.run(
        [sys.executable, "-m", "kubetune.cli", "results", grid.experiment_path],
        cwd=H.REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.stdout.strip().endswith("finished")


def test_a_deleted_state_file_does_not_let_a_new_run_into_the_old_trial_dirs(tmp_path):
    run = air.RunConfig(name="again", storage_path=str(tmp_path), verbose=0)
    space = {"steps": 4, "sleep": 0}
    grid = tune.Tuner(CT.stepper, param_space=space, run_config=run).fit()
    exp = Path(grid.experiment_path)
    (exp / "experiment_state.json").unlink()
    before = {d.name: (d / "result.json").read_bytes() for d in H.trial_dirs(exp)}
    with pytest.raises(FileExistsError, match="kubetune repair"):
        tune.Tuner(CT.stepper, param_space=space, run_config=run).fit()
    assert {d.name: (d / "result.json").read_bytes() for d in H.trial_dirs(exp)} == before


# -- metrics ---------------------------------------------------------------------------------
def test_a_string_metric_under_asha_errors_that_trial_only(tmp_path):
    grid = tune.Tuner(
        CT.stepper,
        param_space={"steps": 6, "sleep": 0, "value": tune.grid_search(["abc", 1.0])},
        tune_config=tune.TuneConfig(
            metric="score", mode="max", scheduler=ASHAScheduler(max_t=6, grace_period=1)
        ),
        run_config=air.RunConfig(storage_path=str(tmp_path), verbose=0),
    ).fit()
    errors = [str(r.error) for r in grid if r.error is not None]
    assert len(errors) == 1
    assert "`score` = 'abc' (a str)" in errors[0] and "Scheduler needs a number" in errors[0]
    assert sum(1 for r in grid if r.error is None) == 1


def test_a_metric_no_trial_reports_errors_the_trial_at_its_first_result(tmp_path):
    grid = tune.Tuner(
        CT.no_metric,
        tune_config=tune.TuneConfig(metric="score", mode="max"),
        run_config=air.RunConfig(storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert grid.num_errors == 1
    # decided at the first result (a trial without decision points may have run ahead)
    assert f"trial {grid[0].metrics['trial_id']} reported a result without `score`" in str(
        grid[0].error
    )


# -- damaged state files -----------------------------------------------------------------------
@pytest.fixture
def finished(tmp_path) -> Path:
    grid = tune.Tuner(
        CT.stepper,
        param_space={"steps": 3, "sleep": 0},
        run_config=air.RunConfig(name="fin", storage_path=str(tmp_path), verbose=0),
    ).fit()
    return Path(grid.experiment_path)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kubetune.cli", *args],
        cwd=H.REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "content, field",
    [
        ("[]", "(top level)"),
        ('{"trials": {}}', "trials"),
        ('{"trials": [{"trial_id": 1, "dirname": "x"}]}', "trials[0].trial_id"),
        ('{"trials": [{"trial_id": "a", "dirname": "../.."}]}', "trials[0].dirname"),
        ('{"trials": [', "not valid JSON"),
    ],
)
def test_a_state_file_of_the_wrong_shape_is_a_clear_error(finished, content, field):
    (finished / "experiment_state.json").write_text(content)
    with pytest.raises(StateFileError) as info:
        ResultGrid.from_directory(str(finished))
    assert "experiment_state.json" in str(info.value) and field in str(info.value)
    with pytest.raises(StateFileError, match=re.escape(field)):
        tune.Tuner.restore(str(finished), CT.stepper).fit()
    cli = _cli("results", str(finished))
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert field in cli.stderr


@pytest.mark.parametrize(
    "engine", [5, {"trials": []}, {"trials": [{"trial_id": "x"}], "version": 1}]
)
def test_an_engine_state_of_the_wrong_shape_is_a_clear_error_on_restore(finished, engine):
    path = finished / "experiment_state.json"
    state = json.loads(path.read_text())
    state["engine"] = engine
    path.write_text(json.dumps(state))
    assert len(ResultGrid.from_directory(str(finished))) == 1  # still readable
    with pytest.raises(StateFileError, match=r"experiment_state\.json: engine"):
        tune.Tuner.restore(str(finished), CT.stepper).fit()


def test_a_truncated_tuner_pkl_is_a_clear_error(finished):
    pkl = finished / ".kubetune" / "tuner.pkl"
    pkl.write_bytes(pkl.read_bytes()[:40])
    with pytest.raises(StateFileError, match=r"tuner\.pkl.*cannot be loaded"):
        tune.Tuner.restore(str(finished), CT.stepper)


def test_a_non_callable_entrypoint_is_a_clear_error(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "apiVersion: kubetune.io/v1alpha1\nkind: TuneExperiment\nmetadata:\n  name: nc\n"
        "spec:\n  trainable:\n    image: example/trial:1\n    entrypoint: os:sep\n"
        "  paramSpace:\n    a: {constant: 1}\n"
    )
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubetune.cli",
            "run",
            str(manifest),
            "--storage-path",
            str(tmp_path / "r"),
        ],
        cwd=H.REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert "entrypoint" in cli.stderr and "not a function" in cli.stderr


# -- repair and checkpoint fallback -------------------------------------------------------------
def test_repair_rebuilds_the_state_and_resume_finishes_without_duplicates(tmp_path):
    storage, pids = tmp_path / "r", tmp_path / "p"
    pids.mkdir()
    cfg = _cfg(pids)
    driver = H.start_driver(storage, "rebuild", "fresh", cfg)
    exp = storage / "rebuild"
    _kill_when(driver, lambda: len(list(exp.glob("*/checkpoint_000005"))) >= 2)
    H.orphans(pids, 10)
    (exp / "experiment_state.json").unlink()
    cli = subprocess.run(
        [sys.executable, "-m", "kubetune.cli", "repair", str(exp)],
        cwd=H.REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "rebuilt experiment_state.json: 2 trials, 2 unfinished" in cli.stdout
    done = _finish(storage, "rebuild", cfg)
    assert done.returncode == 0, done.stderr
    assert H.account(exp, 2, STEPS) == (0, 0)


def test_a_deleted_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path):
    storage, pids = tmp_path / "r", tmp_path / "p"
    pids.mkdir()
    cfg = _cfg(pids, trials=1)
    driver = H.start_driver(storage, "fallback", "fresh", cfg)
    exp = storage / "fallback"

    def saved_a_checkpoint() -> bool:  # the state file names one (it is saved at intervals)
        try:
            return bool(H.state_of(exp)["trials"][0]["latest_checkpoint"])
        except (OSError, ValueError, KeyError, IndexError):
            return False

    _kill_when(driver, saved_a_checkpoint)
    H.orphans(pids, 10)
    trial = H.trial_dirs(exp)[0]
    state = H.state_of(exp)
    latest = state["trials"][0]["latest_checkpoint"]
    import shutil

    shutil.rmtree(trial / latest)
    done = _finish(storage, "fallback", cfg)
    assert done.returncode == 0, done.stderr
    assert f"latest checkpoint {latest} is gone" in done.stderr
    steps = H.steps_of(trial)
    assert sorted(set(steps)) == list(range(STEPS))  # nothing lost; the step re-run is logged


# -- full disk ---------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        pytest.skip("mounting a small tmpfs needs root on Linux")
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)])
    if mounted.returncode != 0:
        pytest.skip("mount -t tmpfs is not permitted here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_a_clear_error_and_resume_continues_once_there_is_space(small_disk):
    """Whoever hits the full disk first, the driver writing the state or the trial writing
    its results, the experiment stops as FAILED with its state saved, the trial is not
    counted as failed, and a resume after space was freed finishes it with nothing lost."""
    from kubetune.storage import StorageError

    steps, space = 200, {"steps": 200, "sleep": 0, "blob": 20000}  # ~12 MB of results
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(StorageError, match="no space left on the device") as info:
            tune.Tuner(
                CT.stepper,
                param_space=space,
                run_config=air.RunConfig(name="full", storage_path=str(small_disk), verbose=0),
            ).fit()
    assert "Tuner.restore" in str(info.value)
    exp = small_disk / "full"
    state = H.state_of(exp)
    assert state["finished"]["status"] == "FAILED"
    assert "no space left" in state["finished"]["reason"]
    (trial,) = state["trials"]
    assert trial["status"] not in ("ERROR", "TERMINATED"), trial  # the disk failed, not it
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the torn last line is cut on resume, with a warning
        grid = tune.Tuner.restore(str(exp), CT.stepper).fit()
    assert grid.num_errors == 0
    assert H.state_of(exp)["trials"][0]["status"] == "TERMINATED"
    (trial_dir,) = H.trial_dirs(exp)
    assert sorted(set(H.steps_of(trial_dir))) == list(range(steps))


@pytest.mark.parametrize("path", ["s3://", "s3:///prefix", "s3:bucket", "S3://b"])
def test_an_s3_storage_path_without_a_bucket_is_refused_naming_the_field(path):
    from kubetune import air

    with pytest.raises(ValueError, match=r"RunConfig.storage_path .*s3://BUCKET"):
        air.RunConfig(storage_path=path)  # before: a local folder named "s3:"
