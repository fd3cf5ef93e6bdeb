"""An in-process sidecar next to a real trial subprocess, storage in a local directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kubetune.sidecar import Sidecar, SidecarConfig

REPO = str(Path(__file__).resolve().parents[3])


class FakeApi:
    """Records status reports; answers gate requests with ``answer(request) -> verdict``."""

    def __init__(self, answer: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.reports: list[dict[str, Any]] = []
        self.answer = answer or (lambda req: {"seq": req["seq"], "action": "continue"})
        self.pins: set[str] = set()
        self.pin_reads = 0
        self.lock = threading.Lock()

    def patch_report(self, report: dict[str, Any]) -> dict[str, Any] | None:
        with self.lock:
            self.reports.append(json.loads(json.dumps(report, allow_nan=False)))
        return None

    def wait_verdict(self, seq: int, timeout: float) -> dict[str, Any] | None:
        gate = next((r["gate"] for r in reversed(self.reports) if r.get("gate")), None)
        if gate is None or gate["seq"] != seq:
            time.sleep(0.01)
            return None
        return self.answer(gate)

    def pinned_checkpoints(self) -> set[str]:
        self.pin_reads += 1
        return set(self.pins)

    @property
    def last(self) -> dict[str, Any]:
        return self.reports[-1]


def trial_spec(root: Path, trainable: str, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    spec = {
        "trial_id": "t0",
        "trial_name": "trial_0",
        "trainable": trainable,
        "config": config,
        "out_dir": str(root / "out"),
        "gate": {"kind": "file", "dir": str(root / "gate")},
        "done_marker": str(root / "done"),
        "python_path": [REPO],
        "chdir_to_trial_dir": False,
    }
    spec.update(extra)
    return spec


@dataclass
class Pod:
    """One 'pod': a sidecar thread and (after it is ready) the trial process."""

    root: Path
    storage_dir: Path
    cfg: SidecarConfig
    api: FakeApi
    sidecar: Sidecar | None = None
    thread: threading.Thread | None = None
    trial: subprocess.Popen[bytes] | None = None
    code: list[int] = field(default_factory=list)

    def start_sidecar(self) -> Sidecar:
        self.sidecar = Sidecar(self.cfg, api=self.api)
        self.thread = threading.Thread(target=lambda: self.code.append(self.sidecar.run()))
        self.thread.start()
        deadline = time.monotonic() + 30
        while not (self.root / ".ready").exists():
            assert time.monotonic() < deadline, "sidecar not ready"
            assert self.thread.is_alive(), "sidecar died"
            time.sleep(0.01)
        return self.sidecar

    def start_trial(self, env_extra: dict[str, str] | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": REPO, **(env_extra or {})}
        self.trial = subprocess.Popen(
            [sys.executable, "-m", "kubetune.trial", str(self.root / "trial.json")],
            env=env,
            stderr=subprocess.PIPE,
        )

    def wait(self, timeout: float = 60) -> int:
        assert self.trial is not None and self.thread is not None
        code = self.trial.wait(timeout)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "sidecar did not exit after the trial"
        return code

    def stored_lines(self) -> list[dict[str, Any]]:
        path = self.storage_dir / "result.json"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def stored_checkpoints(self) -> list[str]:
        return sorted(
            p.name for p in self.storage_dir.iterdir() if p.name.startswith("checkpoint_")
        )


@pytest.fixture
def make_pod(tmp_path: Path) -> Iterator[Callable[..., Pod]]:
    made: list[Pod] = []

    def make(
        trainable: str,
        config: dict[str, Any],
        *,
        name: str = "pod",
        api: FakeApi | None = None,
        spec_extra: dict[str, Any] | None = None,
        **cfg: Any,
    ) -> Pod:
        root = tmp_path / name
        root.mkdir()
        storage = tmp_path / "storage" / "exp" / "trial_0"
        cfg.setdefault("upload_interval_s", 0.2)
        cfg.setdefault("report_interval_s", 0.05)
        cfg.setdefault("poll_interval_s", 0.02)
        sc = SidecarConfig(
            root=str(root),
            storage_uri=str(storage),
            trial_spec=trial_spec(root, trainable, config, **(spec_extra or {})),
            **cfg,
        )
        pod = Pod(root, storage, sc, api or FakeApi())
        made.append(pod)
        return pod

    yield make
    for pod in made:
        if pod.trial is not None and pod.trial.poll() is None:
            pod.trial.kill()
            pod.trial.wait()
        if pod.sidecar is not None:
            pod.sidecar.terminate(0.5)
        if pod.thread is not None:
            pod.thread.join(10)
