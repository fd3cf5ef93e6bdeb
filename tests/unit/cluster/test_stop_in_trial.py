"""``RunConfig(stop=function)`` in cluster mode: not refused, not in the manifest (the operator
never runs it); shipped as ``stopper.pkl`` beside the trainable, and the trial container's
bootstrap hands it to the trial runner, which calls it after each result. Run here as the
trial container runs it: ``python -m kubetune.cluster.bootstrap CODE_DIR`` on a spec file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest

from kubetune import air, tune
from kubetune.cluster.translate import NotOnCluster, experiment_spec
from kubetune.storage import open_storage
from kubetune.trial import exit_codes

REPO = Path(__file__).resolve().parents[3]


def reports_ten(config):
    from kubetune.air import session

    for i in range(10):
        session.report({"score": i * config["k"]})


def stop_at_three(trial_id, result):
    return result["training_iteration"] >= 3


def _tuner(stop):
    return tune.Tuner(
        reports_ten,
        param_space={"k": 2},
        run_config=air.RunConfig(name="stopfn", stop=stop),
    )


def test_a_stop_function_is_accepted_and_stays_out_of_the_manifest():
    spec = experiment_spec(_tuner(stop_at_three))
    assert "stop" not in (spec.get("runConfig") or {})
    from kubetune.cluster.roundtrip import check_round_trip, manifest_document

    spec["trainable"] = {"image": "x", "entrypoint": "shipped:reports_ten"}
    check_round_trip(_tuner(stop_at_three), manifest_document(_tuner(stop_at_three), "s", spec))


def test_a_stopper_object_is_still_refused_naming_it_and_the_alternatives():
    with pytest.raises(NotOnCluster) as info:
        experiment_spec(_tuner(tune.stopper.MaximumIterationStopper(3)))
    message = str(info.value)
    assert "MaximumIterationStopper" in message and "run_config.stop" in message
    assert "dict of thresholds" in message and "plain function" in message


def test_the_shipped_stop_function_stops_the_trial_inside_it(tmp_path):
    from kubetune.cluster.ship import ship

    store = open_storage(str(tmp_path / "exp"))
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # as __main__ or a notebook would travel
    try:
        ship(_tuner(stop_at_three), store, None, None)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    code = tmp_path / "exp" / ".kubetune" / "code"
    assert (code / "stopper.pkl").exists() and (code / "trainable.pkl").exists()

    out = tmp_path / "out"
    spec_file = tmp_path / "trial.json"  # what the sidecar writes
    spec_file.write_text(
        json.dumps(
            {
                "trial_id": "t1",
                "out_dir": str(out),
                "trainable_pickle": str(code / "trainable.pkl"),
                "config": {"k": 2},
                "chdir_to_trial_dir": False,
            }
        )
    )
    env = {**os.environ, "KUBETUNE_TRIAL_SPEC": str(spec_file)}
    proc = subprocess.run(
        [sys.executable, "-m", "kubetune.cluster.bootstrap", str(code)],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == exit_codes.STOPPED, proc.stderr[-3000:]  # as a dict's threshold
    rows = [json.loads(line) for line in (out / "result.json").read_text().splitlines()]
    assert [r["training_iteration"] for r in rows] == [1, 2, 3]
    assert rows[-1]["done"] is True
    assert json.loads((code / "trial.json").read_text())["stopper_pickle"] == str(
        code / "stopper.pkl"
    )
