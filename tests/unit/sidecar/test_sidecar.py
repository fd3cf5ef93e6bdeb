"""The sidecar in-process against a real trial process; storage is a local directory."""

from __future__ import annotations

import json

from kubetune.engine.checkpoints import register_checkpoint
from kubetune.trial import exit_codes
from tests.unit.nvidia_smi import gpu_line, write_nvidia_smi

from .conftest import FakeApi

SCORED = "tests.unit.sidecar.trainables:scored"


def expected_kept(scores: list[float], keep: int, attr: str | None) -> list[str]:
    entries: list = []
    for i, s in enumerate(scores):
        entries, _ = register_checkpoint(
            entries,
            f"checkpoint_{i:06d}",
            {"score": s},
            i + 1,
            num_to_keep=keep,
            score_attribute=attr,
        )
    return sorted(e[2] for e in entries)


def test_results_checkpoints_and_keep_rule_reach_storage(make_pod) -> None:
    scores = [1, 5, 3, 4, 2, 6, 0, 7]
    pod = make_pod(
        SCORED, {"n": 8, "scores": scores}, num_to_keep=2, score_attribute="score", metric="score"
    )
    pod.start_sidecar()
    pod.start_trial()
    assert pod.wait() == exit_codes.FINISHED
    lines = pod.stored_lines()
    assert [r["i"] for r in lines] == list(range(8))
    assert pod.stored_checkpoints() == expected_kept(scores, 2, "score")
    assert (
        sorted(p.name for p in (pod.root / "out").iterdir() if p.name.startswith("checkpoint_"))
        == pod.stored_checkpoints()
    )
    last = pod.api.last
    assert last["uploaded"] is True
    assert last["resultCount"] == 8 and last["uploadedResults"] == 8
    assert last["results"][-1]["i"] == 7 and "config" not in last["results"][-1]
    assert last["bestCheckpoint"].endswith("checkpoint_000007")
    assert last["latestCheckpoint"].endswith("checkpoint_000007")
    assert last["metric"] == 7
    assert last["exit"]["status"] == "finished"
    seqs = [r["sequence"] for r in pod.api.reports]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for report in pod.api.reports:  # a result names only stored checkpoints
        for r in report["results"]:
            name = r.get("checkpoint_dir_name")
            assert name is None or r["i"] <= lines[-1]["i"]
    assert (pod.storage_dir / "params.json").exists()
    assert (pod.storage_dir / "progress.csv").read_text().count("\n") == 9


def test_under_the_operator_the_keep_rule_only_frees_the_pods_disk(make_pod) -> None:
    """DELETE_STORED=0: the engine deletes from storage (it knows pending PBT restores)."""
    scores = [1, 5, 3, 4, 2, 6, 0, 7]
    pod = make_pod(
        SCORED,
        {"n": 8, "scores": scores},
        num_to_keep=2,
        score_attribute="score",
        metric="score",
        delete_stored=False,
    )
    pod.start_sidecar()
    pod.start_trial()
    assert pod.wait() == exit_codes.FINISHED
    assert pod.stored_checkpoints() == [f"checkpoint_{i:06d}" for i in range(8)]  # all stored
    local = sorted(p.name for p in (pod.root / "out").iterdir() if p.name.startswith("checkpoint_"))
    assert local == expected_kept(scores, 2, "score")  # the surplus left the pod's disk
    assert pod.api.last["uploaded"] is True
    assert pod.api.pin_reads == 0  # no pins needed: nothing is deleted from storage here


def test_gate_request_is_relayed_and_the_verdict_written_back(make_pod) -> None:
    def answer(req):
        return {"seq": req["seq"], "action": "stop", "reason": "asha"}

    pod = make_pod(
        SCORED,
        {"n": 8},
        api=FakeApi(answer),
        spec_extra={"decision_points": [3]},
    )
    pod.start_sidecar()
    pod.start_trial()
    assert pod.wait() == exit_codes.STOPPED
    gated = [r for r in pod.api.reports if r.get("gate")]
    assert gated and gated[0]["gate"]["value"] == 3
    assert gated[0]["results"][-1]["training_iteration"] == 3  # the gated result came along
    assert pod.api.last["gate"] is None and pod.api.last["verdictSeq"] == 1
    assert [r["i"] for r in pod.stored_lines()] == [0, 1, 2]


def test_next_attempt_appends_to_the_log_and_restores(make_pod) -> None:
    first = make_pod(SCORED, {"n": 3}, name="a0")
    first.start_sidecar()
    first.start_trial()
    assert first.wait() == 0
    uri = str(first.storage_dir / "checkpoint_000001")
    second = make_pod(
        SCORED,
        {"n": 5},
        name="a1",
        restore_from=uri,
        attempt=1,
        spec_extra={"restore_from": str(first.root.parent / "a1" / "restore")},
    )
    second.start_sidecar()
    spec = json.loads((second.root / "trial.json").read_text())
    assert spec["checkpoint_index_start"] == 3  # past every stored checkpoint
    second.start_trial()
    assert second.wait() == 0
    lines = second.stored_lines()
    assert [r["i"] for r in lines] == [0, 1, 2, 2, 3, 4]
    assert second.api.last["resultCount"] == 6
    assert second.stored_checkpoints() == [f"checkpoint_{i:06d}" for i in range(6)]


def test_restarted_sidecar_neither_loses_nor_repeats(make_pod) -> None:
    pod = make_pod(SCORED, {"n": 6}, num_to_keep=3)
    pod.cfg.trial_spec["config"]["waits"] = {"3": str(pod.root / "go")}
    first = pod.start_sidecar()
    pod.start_trial()
    deadline = __import__("time").monotonic() + 30
    while len(first.state.uploaded) < 3:
        assert __import__("time").monotonic() < deadline
        __import__("time").sleep(0.02)
    first.terminate(0.0)  # as good as a kill: the deadline is already over
    pod.thread.join(10)
    pod.sidecar = None
    pod.start_sidecar()  # the same volume: picks up its state
    (pod.root / "go").write_text("")
    assert pod.wait() == 0
    assert [r["i"] for r in pod.stored_lines()] == list(range(6))
    assert pod.stored_checkpoints() == [
        "checkpoint_000003",
        "checkpoint_000004",
        "checkpoint_000005",
    ]


class FlakyApi(FakeApi):
    """An API server that is down until ``up`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.up = False
        self.failures = 0

    def patch_report(self, report):
        if not self.up:
            self.failures += 1
            raise ConnectionError("API server unreachable")
        return super().patch_report(report)


def test_api_outage_is_retried_and_the_final_report_has_everything(make_pod) -> None:
    import threading
    import time

    api = FlakyApi()
    pod = make_pod(SCORED, {"n": 5}, api=api, metric="score")
    pod.start_sidecar()
    pod.start_trial()
    while api.failures < 3:
        time.sleep(0.01)
    threading.Timer(0.3, lambda: setattr(api, "up", True)).start()
    assert pod.wait() == 0
    assert api.reports and api.last["resultCount"] == 5 and api.last["uploaded"] is True
    assert "API server unreachable" not in str(api.last.get("error"))


def test_sigterm_without_done_marker_flushes_what_was_written(make_pod) -> None:
    import time

    pod = make_pod(SCORED, {"n": 6})
    pod.cfg.trial_spec["config"]["waits"] = {"3": str(pod.root / "never")}
    sidecar = pod.start_sidecar()
    pod.start_trial()
    result = pod.root / "out" / "result.json"
    while not (result.exists() and result.read_text().count("\n") == 3):
        time.sleep(0.02)
    pod.trial.kill()  # the trial container dies without a done marker
    pod.trial.wait()
    sidecar.terminate(10.0)  # the kubelet's SIGTERM
    pod.thread.join(15)
    assert not pod.thread.is_alive()
    assert [r["i"] for r in pod.stored_lines()] == [0, 1, 2]
    assert pod.stored_checkpoints() == [
        "checkpoint_000000",
        "checkpoint_000001",
        "checkpoint_000002",
    ]
    assert pod.api.last["uploaded"] is True and pod.api.last["exit"] is None


def test_parameters_are_restored_and_a_missing_checkpoint_fails_the_trial(
    make_pod, tmp_path
) -> None:
    params = tmp_path / "params-src"
    params.mkdir()
    (params / "data.pkl").write_bytes(b"pickled")
    pod = make_pod(
        SCORED,
        {"n": 2},
        params_from=str(params),
        restore_from=str(tmp_path / "no-such-checkpoint"),
        spec_extra={"restore_from": str(tmp_path / "pod" / "restore")},
    )
    pod.start_sidecar()
    assert (pod.root / "params" / "data.pkl").read_bytes() == b"pickled"
    pod.start_trial()
    assert pod.wait() == exit_codes.ERRORED
    assert "restore_from" in (pod.storage_dir / "error.txt").read_text()
    assert "cannot restore" in pod.api.last["error"]


def test_gpu_telemetry_from_a_stand_in_nvidia_smi(make_pod, tmp_path, monkeypatch) -> None:
    """The trial container samples its GPUs (only it sees them) into gpu.json, which the
    sidecar reports and uploads; the sidecar itself runs no nvidia-smi."""
    import os

    from kubetune.trial.telemetry import sample_gpus

    smi = gpu_line(0, "GPU-aaaa", utilization=50, used=4000, free=12000, name="Fake GPU")
    folder = write_nvidia_smi(tmp_path / "bin", smi)
    pod = make_pod(SCORED, {"n": 4, "sleep": 0.2}, gpus=1, gpu_interval_s=0.05)
    pod.start_sidecar()
    # the sidecar's PATH has no nvidia-smi; the trial's has one
    gpu_env = {"KUBETUNE_TRIAL_GPUS": "1", "KUBETUNE_TRIAL_GPU_INTERVAL_S": "0.05"}
    pod.start_trial({"PATH": f"{folder}:{os.environ['PATH']}", **gpu_env})
    assert pod.wait() == 0
    gpu = json.loads((pod.storage_dir / "gpu.json").read_text())
    assert gpu["gpus"][0]["uuid"] == "GPU-aaaa" and gpu["gpus"][0]["memoryUsedMiB"] == 4000
    assert gpu["gpus"][0]["utilization"] == 0.5
    assert pod.api.last["gpu"]["gpus"][0]["name"] == "Fake GPU"
    assert "utilization" not in json.dumps(pod.stored_lines())  # user results untouched
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "no GPU visible" in sample_gpus(requested=1)["error"]


def test_a_trial_without_gpus_samples_nothing(make_pod) -> None:
    pod = make_pod(SCORED, {"n": 2})
    pod.start_sidecar()
    pod.start_trial()
    assert pod.wait() == 0
    assert not (pod.storage_dir / "gpu.json").exists()
    assert pod.api.last["gpu"] is None
