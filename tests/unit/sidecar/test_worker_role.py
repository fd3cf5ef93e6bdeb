"""The sidecar of a multi-worker trial's other workers (role ``worker``): it holds its worker
until the operator published rank 0's address for this attempt, hands the address on, then
restores the same inputs as rank 0's sidecar; it writes nothing to storage."""

from __future__ import annotations

import json
import threading
from typing import Any

from kubetune.sidecar import SidecarConfig
from kubetune.sidecar.worker import run_worker


class Trial:
    def __init__(self) -> None:
        self.obj: dict[str, Any] = {"status": {}}
        self.gets = 0

    def get(self) -> dict[str, Any]:
        self.gets += 1
        return json.loads(json.dumps(self.obj))


def test_the_worker_waits_for_its_attempts_rank_0_then_restores(tmp_path):
    storage = tmp_path / "storage"
    (storage / "checkpoint_000002").mkdir(parents=True)
    (storage / "checkpoint_000002" / "state.json").write_text('{"step": 2}')
    root = tmp_path / "pod"
    root.mkdir()
    cfg = SidecarConfig(
        root=str(root),
        storage_uri=str(storage),
        trial_spec={"trial_id": "t0", "out_dir": "/kubetune/out", "trainable": "m:f"},
        restore_from=str(storage / "checkpoint_000002"),
        attempt=2,
    )
    trial, stop = Trial(), threading.Event()
    thread = threading.Thread(target=run_worker, args=(cfg, trial, stop))
    thread.start()
    try:
        # the previous attempt's address is not this attempt's
        trial.obj = {"status": {"workers": {"attempt": 1, "masterAddr": "10.0.0.1"}}}
        while trial.gets < 2:
            threading.Event().wait(0.05)
        assert not (root / ".ready").exists() and not (root / "rendezvous.json").exists()
        trial.obj = {"status": {"workers": {"attempt": 2, "masterAddr": "10.0.0.9"}}}
        for _ in range(200):
            if (root / ".ready").exists():
                break
            threading.Event().wait(0.05)
        assert json.loads((root / "rendezvous.json").read_text())["masterAddr"] == "10.0.0.9"
        assert json.loads((root / "restore" / "state.json").read_text()) == {"step": 2}
        assert json.loads((root / "trial.json").read_text())["trial_id"] == "t0"
        assert thread.is_alive()  # until the pod ends
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert sorted(p.name for p in storage.iterdir()) == ["checkpoint_000002"]  # nothing stored
