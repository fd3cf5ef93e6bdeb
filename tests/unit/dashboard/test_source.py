"""The dashboard's reading of an experiment tree: incremental, cursor-based, same layout as
ResultGrid (pure: a local directory, no server, no browser)."""

from __future__ import annotations

import json
import os

from kubetune.dashboard import api
from kubetune.dashboard.importance import param_importance
from kubetune.dashboard.source import ExperimentView, find_experiments
from kubetune.storage import open_storage
from tests.testenv.experiments import SyntheticExperiment


def _view(root, key="exp"):
    view = ExperimentView(open_storage(str(root)), key, min_interval_s=0)
    view.refresh()
    return view


def test_payload_after_a_cursor_carries_only_new_rows(tmp_path):
    exp = SyntheticExperiment(str(tmp_path / "exp"), trials=3)
    for i in range(3):
        exp.grow(i, 5)
    exp.write_state()
    view = _view(tmp_path)
    first = api.experiment_payload(view, "exp", 0, None)
    assert first["metric"] == "loss" and len(first["changed"]) == 3
    assert all(len(c["y"]) == 5 and c["start"] == 0 for c in first["curves"].values())
    exp.grow(1, 2)
    with open(os.path.join(exp.path, exp.dirname(1), "result.json"), "a") as f:
        f.write('{"loss": 1.0, "training_iteration": 8')  # a line still being written
    view.refresh()
    second = api.experiment_payload(view, "exp", first["seq"], None)
    assert [row["id"] for row in second["changed"]] == ["synth_00001"]
    assert second["curves"]["synth_00001"]["start"] == 5
    assert second["curves"]["synth_00001"]["x"] == [6, 7]  # the torn line is not read yet
    view.refresh()
    assert api.experiment_payload(view, "exp", second["seq"], None)["changed"] == []
    with open(os.path.join(exp.path, exp.dirname(1), "result.json"), "a") as f:
        f.write("}\n")
    view.refresh()
    third = api.experiment_payload(view, "exp", second["seq"], None)
    assert third["curves"]["synth_00001"]["x"] == [8]


def test_best_trial_and_early_stop_match_the_records(tmp_path):
    exp = SyntheticExperiment(str(tmp_path / "exp"), trials=9, seed=3)
    exp.fill(results=40)
    view = _view(tmp_path)
    payload = api.experiment_payload(view, "exp", 0, "loss")
    rows = {r["id"]: r for r in payload["changed"]}
    lasts = {tid: r["last"] for tid, r in rows.items()}
    assert payload["best_id"] == min(lasts, key=lambda t: lasts[t])
    assert rows["synth_00001"]["iterations"] == 10 and rows["synth_00001"]["stopped_by_scheduler"]
    assert rows["synth_00000"]["iterations"] == 40
    summary = api.experiment_summary(view, "exp")
    assert summary["state"] == "FINISHED" and summary["counts"] == {"TERMINATED": 9}


def test_importance_ranks_the_parameter_that_drives_the_metric(tmp_path):
    exp = SyntheticExperiment(str(tmp_path / "exp"), trials=40, seed=1)
    exp.fill(results=5, early_stop_every=0)
    out = param_importance(_view(tmp_path), "loss")
    assert set(out["importance"]) == {"lr", "layers"}
    assert out["importance"]["lr"] > out["importance"]["layers"]


def test_lineage_from_config_changes(tmp_path):
    exp = SyntheticExperiment(str(tmp_path / "exp"), trials=2)
    exp.grow(0, 3)
    exp.configs[0] = {**exp.configs[0], "lr": 0.5}  # as after an exploit
    exp.grow(0, 2)
    exp.grow(1, 5)
    exp.write_state()
    events = api.lineage(_view(tmp_path))["events"]
    assert len(events) == 1
    assert events[0]["trial"] == "synth_00000" and events[0]["iteration"] == 4
    assert events[0]["change"]["lr"][1] == 0.5


def test_experiments_are_found_under_a_root(tmp_path):
    for name in ("a", "b"):
        SyntheticExperiment(str(tmp_path / name), trials=1).write_state()
    (tmp_path / "notes").mkdir()
    assert find_experiments(open_storage(str(tmp_path))) == ["a", "b"]
    assert find_experiments(open_storage(str(tmp_path / "a"))) == [""]


def test_operator_snapshot_with_segments_is_read(tmp_path):
    """What the operator stores reads like local mode's: its head ``{"engine": head,
    "experiment": name}`` with sealed segments, and each trial's folder named after its
    TuneTrial (``dns_name(experiment, trial_id)``), not after the trial."""
    from kubetune.local.stored_state import operator_trial_dirname

    root = tmp_path / "exp"
    exp = SyntheticExperiment(str(root), trials=3)
    for i in range(3):
        exp.grow(i, 4)
    exp.write_state()
    state = json.loads((root / "experiment_state.json").read_text())
    records = state["engine"]["trials"]
    for rec in records:
        os.rename(root / rec["name"], root / operator_trial_dirname("exp", rec["trial_id"]))
    (root / "experiment_state").mkdir()
    (root / "experiment_state" / "trials-000000.json").write_text(
        json.dumps({"trials": records[:2]})
    )
    head = {
        **state["engine"],
        "trials": records[2:],
        "segments": ["experiment_state/trials-000000.json"],
    }
    (root / "experiment_state.json").write_text(json.dumps({"engine": head, "experiment": "exp"}))
    view = _view(tmp_path)
    assert view.order == ["synth_00000", "synth_00001", "synth_00002"]
    assert all(view.trials[t].n == 4 for t in view.order)
    assert view.trials["synth_00000"].name == "train_synth_00000"  # the trial's own name


def test_pbt_lineage_names_each_exploits_donor(tmp_path):
    """A real local PBT run: every exploit in the lineage names its donor (the engine records
    it in the state), a member of the population other than the exploited trial, and goes with
    the config change of the row after it (none where the explored config came out equal to
    the old one: lr clipped at 1.0 twice)."""
    from kubetune import air, tune
    from kubetune.tune.schedulers import PopulationBasedTraining
    from tests.unit.local import trainables as T

    pbt = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=3,
        hyperparam_mutations={"lr": tune.uniform(0.01, 1.0)},
        quantile_fraction=0.5,
        seed=5,
    )
    grid = tune.Tuner(
        tune.with_resources(T.PBTCounter, {"cpu": 0.5}),
        param_space={"lr": tune.grid_search([0.01, 0.02, 0.5, 1.0])},
        tune_config=tune.TuneConfig(metric="value", mode="max", scheduler=pbt),
        run_config=air.RunConfig(
            storage_path=str(tmp_path), name="pbt", stop={"training_iteration": 12}, verbose=0
        ),
    ).fit()
    assert grid.num_errors == 0
    view = _view(tmp_path, "pbt")
    events = api.lineage(view)["events"]
    assert events, "PBT never exploited"
    names = {view.trials[t].name for t in view.order}
    for e in events:
        assert e["donor"] in view.trials and e["donor"] != e["trial"], e
        assert e["donor_name"] in names and e["donor_checkpoint"].startswith("checkpoint_"), e
        assert e["exploited_at"] % 3 == 0, e
        if e["change"]:
            assert list(e["change"]) == ["lr"], e
            assert e["change"]["lr"][1] == view.trials[e["trial"]].values("lr")[e["row"]], e
        else:
            assert e["row"] is None, e
    assert any(e["change"] for e in events)
