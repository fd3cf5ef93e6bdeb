"""Restore after the driver dies, retry after a trial process dies, Ctrl-C and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from kubetune import air, tune
from tests.testenv.helpers import ctrl_c_reaches_it

from . import trainables as T

REPO = str(Path(__file__).resolve().parents[3])

DRIVER = textwrap.dedent(
    """
    import sys
    from kubetune import air, tune
    from tests.unit.local import trainables as T
    tune.Tuner(
        T.slow_checkpointing,
        param_space={"pid_dir": sys.argv[2], "steps": 40, "k": tune.grid_search([1, 2, 3])},
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=air.RunConfig(name="restore-me", storage_path=sys.argv[1], verbose=0),
    ).fit()
    """
)


def _results(trial_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (trial_dir / "result.json").read_text().splitlines()]


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_restore_after_the_driver_is_killed(tmp_path):
    storage, pids = tmp_path / "results", tmp_path / "pids"
    pids.mkdir()
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(storage), str(pids)], cwd=REPO)
    exp = storage / "restore-me"
    # wait until two trials have checkpoints, then kill the driver hard
    _wait_for(lambda: len(list(exp.glob("*/checkpoint_000005"))) >= 2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    trial_pids = [int(p.read_text()) for p in pids.iterdir()]
    _wait_for(lambda: not any(_pid_alive(p) for p in trial_pids), 10)  # no orphans
    before = {d.name: len(_results(d)) for d in exp.iterdir() if (d / "result.json").exists()}
    assert Tuner_can_restore(exp)

    results = tune.Tuner.restore(str(exp), T.slow_checkpointing).fit()
    assert len(results) == 3 and results.num_errors == 0
    for result in results:
        rows = _results(Path(result.log_dir))
        assert rows[-1]["step"] == 39
        if before.get(Path(result.log_dir).name, 40) < 40:
            # resumed from a checkpoint, not from scratch: no step 0 after the restart (a
            # trial that had finished before the kill, as one may on a loaded machine, is not)
            restarted = rows[before[Path(result.log_dir).name] :]
            assert restarted and restarted[0]["step"] > 0
            assert restarted[0]["iterations_since_restore"] == 1


def Tuner_can_restore(path: Path) -> bool:
    return tune.Tuner.can_restore(str(path))


def test_trial_killed_with_sigkill_is_retried_from_its_checkpoint(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    killed: list[int] = []

    def killer() -> None:
        _wait_for(lambda: any(pids.iterdir()))
        pid = int(next(pids.iterdir()).read_text())
        time.sleep(0.5)  # let it write a few checkpoints
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    thread = threading.Thread(target=killer)
    thread.start()
    results = tune.Tuner(
        T.slow_checkpointing,
        param_space={"pid_dir": str(pids), "steps": 30},
        run_config=air.RunConfig(failure_config=air.FailureConfig(max_failures=1), verbose=0),
    ).fit()
    thread.join()
    assert killed
    result = results[0]
    assert result.error is None
    rows = _results(Path(result.log_dir))
    steps = [r["step"] for r in rows]
    assert steps[-1] == 29
    restart = next(i for i in range(1, len(rows)) if rows[i]["iterations_since_restore"] == 1)
    assert steps[restart] == steps[restart - 1] + 1 or steps[restart] <= steps[restart - 1]
    assert steps[restart] > 0  # resumed from a checkpoint
    state = json.loads((Path(results.experiment_path) / "experiment_state.json").read_text())
    assert state["trials"][0]["num_failures"] == 1


MANIFEST = textwrap.dedent(
    """\
    apiVersion: kubetune.io/v1alpha1
    kind: TuneExperiment
    metadata:
      name: {name}
    spec:
      trainable:
        image: example/trial:1
        entrypoint: tests.unit.local.trainables:{entry}
      paramSpace:
        a: {{gridSearch: [1, 2]}}
        b: {{uniform: {{lower: 0, upper: 4}}}}
        pid_dir: {{constant: {pid_dir}}}
        steps: {{constant: 60}}
      tuneConfig:
        metric: score
        mode: max
        numSamples: 3
        seed: 11
    """
)


def _cli(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubetune.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def test_cli_run_matches_the_python_script_with_the_same_seed(tmp_path):
    manifest = tmp_path / "exp.yaml"
    manifest.write_text(MANIFEST.format(name="cli", entry="every_step", pid_dir=tmp_path))
    out = _cli("run", str(manifest), "--storage-path", str(tmp_path / "cli"))
    assert out.returncode == 0, out.stderr
    from kubetune.local.result_grid import ResultGrid

    cli_best = ResultGrid.from_directory(str(tmp_path / "cli" / "cli")).get_best_result()
    script = tune.Tuner(
        T.every_step,
        param_space={
            "a": tune.grid_search([1, 2]),
            "b": tune.uniform(0, 4),
            "pid_dir": str(tmp_path),
            "steps": 60,
        },
        tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=3, seed=11),
        run_config=air.RunConfig(storage_path=str(tmp_path / "py"), verbose=0),
    ).fit()
    assert script.get_best_result().config == cli_best.config
    table = _cli("results", str(tmp_path / "cli" / "cli"))
    assert table.returncode == 0 and "TERMINATED" in table.stdout and "finished" in table.stdout
    png = tmp_path / "curves.png"
    plotted = _cli("plot", str(tmp_path / "cli" / "cli"), "--metric", "score", "-o", str(png))
    assert plotted.returncode == 0, plotted.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ctrl_c_leaves_an_experiment_that_resume_continues(tmp_path):
    manifest = tmp_path / "exp.yaml"
    pids = tmp_path / "pids"
    pids.mkdir()
    manifest.write_text(MANIFEST.format(name="intr", entry="slow_checkpointing", pid_dir=pids))
    storage = tmp_path / "s"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubetune.cli",
            "run",
            str(manifest),
            "--storage-path",
            str(storage),
            "-q",
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_reaches_it,
    )
    exp = storage / "intr"
    _wait_for(lambda: len(list(exp.glob("*/checkpoint_000003"))) >= 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Tuner.restore" in err and "--resume" in err
    trial_pids = [int(p.read_text()) for p in pids.iterdir()]
    assert not any(_pid_alive(p) for p in trial_pids)  # every trial process stopped
    again = _cli("run", str(manifest), "--storage-path", str(storage))
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = _cli("run", str(manifest), "--storage-path", str(storage), "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    from kubetune.local.result_grid import ResultGrid

    grid = ResultGrid.from_directory(str(exp))
    assert len(grid) == 6 and grid.num_errors == 0
    assert all(r.metrics["step"] == 59 for r in grid)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("    mode: max", "    mode: best"), ":16: spec.tuneConfig.mode: 'best' is not one of"),
        (("        numSamples: 3", "        numSamples: 0"), "numSamples must be positive"),
        (("    a: {gridSearch: [1, 2]}", "    a: {uniform: {lower: 3, upper: 1}}"), "paramSpace.a"),
        (
            (
                "    entrypoint: tests.unit.local.trainables:every_step",
                "    entrypoint: tests.unit.local.trainables:nope",
            ),
            "spec.trainable.entrypoint",
        ),
        (
            ("  trainable:", "  restoreFrom: s3://results/old\n  trainable:"),
            ":6: spec.restoreFrom: continuing an experiment from its storage URI is the operator",
        ),
    ],
)
def test_invalid_manifests_name_the_field_and_line(tmp_path, edit, message):
    text = MANIFEST.format(name="bad", entry="every_step", pid_dir=tmp_path)
    old, new = edit
    old, new = old.strip(), new.strip()
    assert old in text
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(text.replace(old, new))
    out = _cli("run", str(manifest), "--storage-path", str(tmp_path / "r"))
    assert out.returncode == 2
    assert message in out.stderr, out.stderr
    assert str(manifest) in out.stderr
