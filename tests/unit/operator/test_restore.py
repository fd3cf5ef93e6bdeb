"""spec.restoreFrom without a cluster: local directories stand in for the two S3 trees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubetune_operator import loop
from kubetune_operator.config import load
from kubetune_operator.controller import ExperimentRuntime, Observed
from kubetune_operator.objects import trial_object_name
from kubetune_operator.plan import BadSpec, build_engine
from kubetune_operator.restore import (
    RestoreSource,
    continue_experiment,
    load_carried,
    restore_source,
)
from kubetune_operator.state import OperatorState

from kubetune.engine import trial as states
from kubetune.storage import LocalStorage
from tests.unit.operator.test_controller import RecordingApi, build_pod, experiment

SOURCE = "s3://b/runs/exp"


def continued(name: str = "exp2", **options: Any) -> dict[str, Any]:
    exp = experiment()
    exp["metadata"] = {**exp["metadata"], "name": name, "uid": "e2-uid"}
    exp["spec"]["restoreFrom"] = SOURCE
    if options:
        exp["spec"]["restoreOptions"] = options
    return exp


def write_results(storage: LocalStorage, folder: str, rows: list[dict[str, Any]]) -> None:
    storage.put_bytes(f"{folder}/result.json", "".join(json.dumps(r) + "\n" for r in rows).encode())


def earlier_experiment(root: Path) -> tuple[LocalStorage, dict[str, str]]:
    """Experiment "exp" stopped mid-way: A finished, B ran 3 steps (the snapshot saw 2), C
    errored after a checkpoint. Returns its tree and {letter: trial id}."""
    storage = LocalStorage(str(root / "exp"))
    engine = build_engine(experiment())  # numSamples 3, maxConcurrentTrials 2, maxFailures 1
    engine.start(0.0)
    a, b = engine.trial_ids()
    for tid in (a, b):
        engine.on_trial_started(tid, 1.0)
    row_a = {"training_iteration": 1, "loss": 0.5, "trial_id": a}
    engine.on_result(a, row_a, 2.0)
    engine.on_trial_complete(a, 2.0)  # frees a slot: C
    write_results(storage, trial_object_name("exp", a), [row_a])
    c = engine.trial_ids()[2]
    engine.on_trial_started(c, 2.0)
    rows_b = []
    for i in range(3):
        ckpt = f"checkpoint_{i:06d}"
        rows_b.append(
            {"training_iteration": i + 1, "loss": 3.0, "checkpoint_dir_name": ckpt, "trial_id": b}
        )
        storage.put_bytes(f"{trial_object_name('exp', b)}/{ckpt}/state.json", b'{"i": %d}' % i)
    for row in rows_b[:2]:
        engine.on_result(b, row, 3.0)
    write_results(storage, trial_object_name("exp", b), rows_b)
    row_c = {"training_iteration": 1, "loss": 9.0, "checkpoint_dir_name": "checkpoint_000000"}
    engine.on_result(c, row_c, 3.0)
    storage.put_bytes(f"{trial_object_name('exp', c)}/checkpoint_000000/state.json", b"{}")
    engine.on_trial_error(c, "boom", 4.0)
    engine.on_trial_error(c, "boom again", 5.0)
    assert engine.trial_status(c) == states.ERROR
    state = {"engine": json.loads(engine.to_json()), "experiment": "exp"}
    storage.put_bytes("experiment_state.json", json.dumps(state).encode())
    return storage, {"A": a, "B": b, "C": c}


def continue_into(
    tmp_path: Path, exp: dict[str, Any]
) -> tuple[ExperimentRuntime, RecordingApi, LocalStorage, dict[str, str]]:
    source_storage, ids = earlier_experiment(tmp_path / "old")
    source = restore_source(exp)
    assert source is not None
    carried = load_carried(exp, source, source_storage)
    api = RecordingApi()
    storage = LocalStorage(str(tmp_path / "new" / "exp2"))
    rt = ExperimentRuntime(exp, carried.engine, storage, api, build_pod)
    continue_experiment(rt, carried, Observed({}, {}), 10.0)
    return rt, api, storage, ids


def test_restore_from_is_parsed_and_checked():
    assert restore_source(experiment()) is None
    src = restore_source(continued(resumeErrored=True))
    assert src == RestoreSource(SOURCE, "b", "runs/exp", resume_errored=True)
    exp = continued()
    exp["spec"]["restoreFrom"] = SOURCE + "/"
    assert restore_source(exp) == RestoreSource(SOURCE, "b", "runs/exp")
    for bad in ("/data/exp", "s3://bucket-only", "gs://b/exp"):
        exp["spec"]["restoreFrom"] = bad
        with pytest.raises(BadSpec, match=r"^spec\.restoreFrom: "):
            restore_source(exp)


def test_a_missing_or_garbled_snapshot_names_the_field(tmp_path):
    exp = continued()
    source = restore_source(exp)
    assert source is not None
    storage = LocalStorage(str(tmp_path))
    with pytest.raises(BadSpec, match=r"^spec\.restoreFrom: no experiment to continue"):
        load_carried(exp, source, storage)
    storage.put_bytes("experiment_state.json", b"{not json")
    with pytest.raises(BadSpec, match=r"^spec\.restoreFrom: .* is not an experiment snapshot"):
        load_carried(exp, source, storage)
    earlier_experiment(tmp_path / "old")
    exp["spec"]["tuneConfig"]["searchAlg"] = {"type": "optuna"}
    with pytest.raises(BadSpec, match=r"^spec\.restoreFrom: .* cannot be continued"):
        load_carried(exp, source, LocalStorage(str(tmp_path / "old" / "exp")))


def test_finished_trials_are_kept_and_unfinished_ones_resume(tmp_path):
    rt, api, storage, ids = continue_into(tmp_path, continued())
    new = {k: trial_object_name("exp2", v) for k, v in ids.items()}
    # the trial folders are copied under the new experiment's names
    assert storage.exists(f"{new['A']}/result.json")
    assert storage.exists(f"{new['B']}/checkpoint_000002/state.json")
    assert storage.exists(f"{new['C']}/checkpoint_000000/state.json")
    # the result the snapshot had not seen is replayed: B resumes from its newest checkpoint
    assert rt.engine.trial_summary(ids["B"])["num_results"] == 3
    # finished trials get a TuneTrial in their final phase, and no pod
    assert set(api.trials) == {new["A"], new["C"]}
    patches = [args for kind, args in api.calls if kind == "patch_trial_status"]
    assert {name: p["status"]["phase"] for name, p in patches} == {
        new["A"]: "TERMINATED",
        new["C"]: "ERROR",
    }
    report = next(p for name, p in patches if name == new["A"])["status"]["report"]
    assert report["metric"] == 0.5
    report = next(p for name, p in patches if name == new["C"])["status"]["report"]
    assert report["latestCheckpoint"] == storage.uri(f"{new['C']}/checkpoint_000000")
    # the new experiment has its own snapshot before anything runs
    state = json.loads(storage.get_bytes("experiment_state.json"))
    assert state["experiment"] == "exp2"

    rt.step(Observed({}, {}), 11.0)
    pods = [b for k, b in api.calls if k == "create_pod"]
    assert [p["metadata"]["ownerReferences"][0]["name"] for p in pods] == [new["B"]]
    spec = api.trials[new["B"]]["spec"]
    assert spec["restoreFrom"] == storage.uri(f"{new['B']}/checkpoint_000002")
    assert spec["checkpointIndexStart"] == 3
    status = rt.status(1)
    assert status["trials"] == {
        "total": 3,
        "pending": 1,
        "running": 0,
        "paused": 0,
        "terminated": 1,
        "error": 1,
    }
    assert status["bestTrial"]["name"] == new["A"]  # finished earlier, still counts
    assert status["bestTrial"]["metric"] == 0.5


@pytest.mark.parametrize(
    ("options", "restore"),
    [({"resumeErrored": True}, "checkpoint_000000"), ({"restartErrored": True}, None)],
)
def test_errored_trials_run_again_when_asked(tmp_path, options, restore):
    rt, api, storage, ids = continue_into(tmp_path, continued(**options))
    new_c = trial_object_name("exp2", ids["C"])
    assert rt.engine.trial_status(ids["C"]) == states.PENDING
    rt.step(Observed({}, {}), 11.0)
    owners = {
        b["metadata"]["ownerReferences"][0]["name"] for k, b in api.calls if k == "create_pod"
    }
    assert new_c in owners
    expected = storage.uri(f"{new_c}/{restore}") if restore else None
    assert api.trials[new_c]["spec"]["restoreFrom"] == expected


class SetupApi(RecordingApi):
    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        super().__init__()
        self.secrets = secrets

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.secrets.get(name)

    def ensure(self, body: dict[str, Any]) -> None:
        self.calls.append(("ensure", body))

    def list_trials(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        return []

    def list_pods(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def local_s3(tmp_path, monkeypatch):
    """setup() with both trees in local directories instead of S3."""
    monkeypatch.setattr(
        loop,
        "open_experiment_storage",
        lambda exp, spec, cred: LocalStorage(str(tmp_path / "new" / exp["metadata"]["name"])),
    )
    monkeypatch.setattr(
        loop,
        "open_source_storage",
        lambda source, spec, cred: LocalStorage(str(tmp_path / "old" / source.prefix)),
    )
    api = SetupApi({})
    return OperatorState(config=load(["--standalone"], {}), api=api), api


def test_setup_stalls_on_a_missing_snapshot_before_creating_anything(local_s3):
    state, api = local_s3
    with pytest.raises(BadSpec, match=r"spec\.restoreFrom"):
        loop.setup(continued(), state)
    assert api.calls == []


def test_setup_prefers_the_experiments_own_snapshot(tmp_path, local_s3):
    state, api = local_s3
    exp = continued()
    earlier_experiment(tmp_path / "old" / "runs")
    runtime = loop.setup(exp, state)  # continues exp: copies, adopts, own snapshot
    assert runtime.storage.exists("experiment_state.json")
    created = api.count("create_trial")
    assert created == 2
    # the operator restarts: its own state wins, even if the earlier tree is gone
    import shutil

    shutil.rmtree(tmp_path / "old")
    again = loop.setup(exp, state)
    assert api.count("create_trial") == created
    assert sorted(again.engine.trial_ids()) == sorted(runtime.engine.trial_ids())
