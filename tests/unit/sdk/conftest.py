from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = str(Path(__file__).resolve().parents[3])


@dataclass
class TrialRun:
    code: int
    out: Path
    stderr: str

    @property
    def results(self) -> list[dict[str, Any]]:
        path = self.out / "result.json"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    @property
    def status(self) -> dict[str, Any]:
        return json.loads((self.out.parent / f"{self.out.name}.done").read_text())

    @property
    def error(self) -> str:
        return (self.out / "error.txt").read_text()

    def checkpoints(self) -> list[str]:
        return sorted(p.name for p in self.out.iterdir() if p.name.startswith("checkpoint_"))


def spec_for(tmp: Path, name: str, entry: str, config: dict[str, Any], **extra: Any) -> dict:
    spec = {
        "trial_id": name,
        "out_dir": str(tmp / name),
        "trainable": f"tests.unit.sdk.trainables:{entry}",
        "config": config,
        "python_path": [REPO],
        "done_marker": str(tmp / f"{name}.done"),
        "chdir_to_trial_dir": False,
    }
    spec.update(extra)
    return spec


def launch(spec: dict, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kubetune.trial", "--spec-json", json.dumps(spec)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


@pytest.fixture
def run_trial(tmp_path: Path):
    counter = iter(range(1000))

    def run(entry: str, config: dict[str, Any] | None = None, **extra: Any) -> TrialRun:
        name = extra.pop("name", f"t{next(counter)}")
        spec = spec_for(tmp_path, name, entry, config or {}, **extra)
        proc = launch(spec)
        _, err = proc.communicate(timeout=60)
        return TrialRun(proc.returncode, Path(spec["out_dir"]), err)

    return run


@pytest.fixture(autouse=True)
def _keep_cwd():
    cwd = os.getcwd()
    yield
    os.chdir(cwd)
