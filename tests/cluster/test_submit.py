"""From a notebook to the cluster: unchanged Tuner scripts, run with ``kubetune submit`` (or
KUBETUNE_MODE=cluster), run their trials as pods of the real operator on the real control
plane (process kubelet, real sidecar, real S3 server) and give local mode's answers.

Every script here runs twice where it matters, as a subprocess: ``python script.py`` (local
mode) and ``kubetune submit script.py`` (cluster mode); only the environment differs. Detach,
reattach and restore are in test_submit_detach.py, refusals in test_submit_refusals.py.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import operator_helpers, submit_helpers
from tests.cluster.submit_helpers import (
    PREFIX,
    README_EXAMPLE,
    REPORT_BEST,
    best_of,
    local,
    s3_keys,
    submit,
    write,
)

crds = operator_helpers.crds  # fixtures
operator_process = operator_helpers.operator_process
cluster_env = submit_helpers.cluster_env


FUNCTION_API = """
from kubetune import tune
from kubetune.air import session


def objective(x, a, b):
    return a * (x ** 0.5) + b


def trainable(config: dict):
    intermediate_score = 0
    for x in range(20):
        intermediate_score = objective(x, config["a"], config["b"])
        session.report({"score": intermediate_score})  # This sends the score to Tune.


tuner = tune.Tuner(trainable, param_space={"a": 2, "b": 4})
results = tuner.fit()
"""

CLASS_API = """
from kubetune import air, tune


def objective(x, a, b):
    return a * (x ** 0.5) + b


class Trainable(tune.Trainable):
    def setup(self, config: dict):
        # config (dict): A dict of hyperparameters
        self.x = 0
        self.a = config["a"]
        self.b = config["b"]

    def step(self):  # This is called iteratively.
        score = objective(self.x, self.a, self.b)
        self.x += 1
        return {"score": score}


tuner = tune.Tuner(
    Trainable,
    run_config=air.RunConfig(
        # Train for 20 steps
        stop={"training_iteration": 20},
        checkpoint_config=air.CheckpointConfig(
            # We haven't implemented checkpointing yet. See below!
            checkpoint_at_end=False
        ),
    ),
    param_space={"a": 2, "b": 4},
)
results = tuner.fit()
"""


# -- the same answers as local mode -----------------------------------------------------------
def test_readme_example_submitted_unchanged_matches_local_mode(cluster_env, tmp_path, s3_bucket):
    script = write(tmp_path / "readme" / "tune_readme.py", README_EXAMPLE + REPORT_BEST)
    here = local(script, cluster_env)
    there = submit(script, cluster_env)
    mine, theirs = best_of(here), best_of(there)
    assert theirs["n"] == mine["n"] == 6
    assert theirs["config"]["a"] == mine["config"]["a"]
    assert theirs["config"]["b"] == pytest.approx(mine["config"]["b"])
    assert theirs["score"] == pytest.approx(mine["score"])
    assert theirs["path"] == f"s3://{s3_bucket}/{PREFIX}/readme"
    assert "created TuneExperiment readme" in there.stdout


@pytest.mark.parametrize("source", [FUNCTION_API, CLASS_API], ids=["function", "class"])
def test_reference_examples_submitted_unchanged_match_local_mode(cluster_env, tmp_path, source):
    script = write(tmp_path / "ref" / "tune_ref.py", source + REPORT_BEST)
    mine, theirs = best_of(local(script, cluster_env)), best_of(submit(script, cluster_env))
    assert theirs["config"] == mine["config"] == {"a": 2, "b": 4}
    assert theirs["score"] == pytest.approx(mine["score"])
    assert theirs["n"] == mine["n"] == 1


def test_a_helper_module_of_the_working_dir_is_shipped(cluster_env, tmp_path, s3_server, s3_bucket):
    work = tmp_path / "project"
    write(work / "helpers" / "scoring.py", "def score(a, b):\n    return 10 * a + b\n")
    write(work / "helpers" / "__init__.py", "")
    write(work / "data.txt", "7\n")
    script = write(
        work / "tune_helper.py",
        """
        from kubetune import air, tune
        from kubetune.air import session
        from helpers.scoring import score

        def trainable(config):
            session.report({"score": score(config["a"], 7)})

        results = tune.Tuner(
            trainable,
            param_space={"a": tune.grid_search([1, 2])},
            tune_config=tune.TuneConfig(metric="score", mode="max"),
            run_config=air.RunConfig(name="helper"),
        ).fit()
        """,
        REPORT_BEST,
    )
    theirs = best_of(submit(script, cluster_env, "--working-dir", str(work)))
    assert theirs["config"] == {"a": 2} and theirs["score"] == 27
    keys = s3_keys(s3_server, s3_bucket, f"{PREFIX}/helper/.kubetune/code/")
    shipped = {k.rsplit("/code/", 1)[1] for k in keys}
    assert {
        "trainable.pkl",
        "workdir/data.txt",
        "workdir/helpers/scoring.py",
        "workdir/tune_helper.py",
    } <= shipped


def test_with_parameters_array_is_stored_once(cluster_env, tmp_path, s3_server, s3_bucket):
    script = write(
        tmp_path / "wp" / "tune_wp.py",
        """
        import numpy as np
        from kubetune import air, tune
        from kubetune.air import session

        def trainable(config, data=None):
            session.report({"score": float(data[config["i"]]) + config["i"], "nbytes": data.nbytes})

        data = np.arange(50 * 2**20 // 8, dtype=np.float64)  # 50 MiB
        results = tune.Tuner(
            tune.with_parameters(trainable, data=data),
            param_space={"i": tune.grid_search([0, 1, 2])},
            tune_config=tune.TuneConfig(metric="score", mode="max", max_concurrent_trials=3),
            run_config=air.RunConfig(name="withparams"),
        ).fit()
        assert all(r.metrics["nbytes"] == data.nbytes for r in results)
        """,
        REPORT_BEST,
    )
    theirs = best_of(submit(script, cluster_env, "--working-dir", ""))
    assert theirs["n"] == 3 and theirs["config"] == {"i": 2} and theirs["score"] == 4.0
    keys = s3_keys(s3_server, s3_bucket, f"{PREFIX}/withparams/")
    big = {k: v for k, v in keys.items() if v >= 50 * 2**20}
    assert list(big) == [f"{PREFIX}/withparams/.kubetune/params/data.pkl"], big
    # the trainable itself travels small: the array is not in its pickle
    assert keys[f"{PREFIX}/withparams/.kubetune/code/trainable.pkl"] < 1 * 2**20


def _wheel(directory: Path, name: str, version: str, module_source: str) -> Path:
    """A minimal pure-Python wheel, built here (no index, no network)."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = name.replace("-", "_")
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": module_source,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{k},,\n" for k in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for key, text in files.items():
            z.writestr(key, text)
        z.writestr(f"{info}/RECORD", record)
    return path


REQ_SCRIPT = """
from kubetune import air, tune
from kubetune.air import session

def trainable(config):
    import os
    import kubetune_probe  # installed in the pod from requirements.txt
    site = os.path.dirname(os.path.dirname(kubetune_probe.__file__))
    built = os.path.exists(os.path.join(site, ".built-here"))  # else: from the cache
    session.report({"score": kubetune_probe.VALUE * config["k"], "built_here": built})

results = tune.Tuner(
    trainable,
    param_space={"k": tune.grid_search([1, 2, 3])},
    tune_config=tune.TuneConfig(metric="score", mode="max", max_concurrent_trials=1),
    run_config=air.RunConfig(name="NAME"),
).fit()
"""


def test_requirements_are_installed_once_in_a_pod_before_the_trainable(
    cluster_env, tmp_path, s3_server, s3_bucket
):
    import importlib.util

    assert importlib.util.find_spec("kubetune_probe") is None  # the env lacks it
    wheels = tmp_path / "wheels"
    _wheel(wheels, "kubetune-probe", "0.1", "VALUE = 41\n")
    req = write(
        tmp_path / "req" / "requirements.txt",
        f"--no-index\n--find-links {wheels}\nkubetune-probe==0.1\n",
    )
    script = write(
        tmp_path / "req" / "tune_req.py",
        REQ_SCRIPT.replace("NAME", "reqs")
        + REPORT_BEST
        + "print('BUILT ' + _json.dumps([r.metrics['built_here'] for r in results]))\n",
    )
    proc = submit(script, cluster_env, "--requirements", str(req))
    theirs = best_of(proc)
    assert theirs["n"] == 3 and theirs["score"] == 123
    # one trial installed, the next ones restored the site its sidecar stored (one at a time)
    built = [line for line in proc.stdout.splitlines() if line.startswith("BUILT ")]
    assert len(built) == 1 and sorted(json.loads(built[0][6:])) == [False, False, True], built
    keys = s3_keys(s3_server, s3_bucket, f"{PREFIX}/reqs/.kubetune/env/")
    assert any(k.endswith("/.complete") for k in keys), keys


def test_a_failed_install_is_the_trial_error_with_pips_message(cluster_env, tmp_path):
    req = write(
        tmp_path / "bad" / "requirements.txt",
        f"--no-index\n--find-links {tmp_path / 'nowheels'}\nkubetune-missing-pkg==9.9\n",
    )
    (tmp_path / "nowheels").mkdir()
    script = write(
        tmp_path / "bad" / "tune_bad.py",
        REQ_SCRIPT.replace("NAME", "badreqs").replace("[1, 2, 3]", "[1]")
        + "\nprint('ERRORS', results.num_errors)\nprint('FIRST', str(results.errors[0])[:3000])\n",
    )
    proc = submit(script, cluster_env, "--requirements", str(req))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ERRORS 1" in proc.stdout
    first = proc.stdout.split("FIRST", 1)[1]
    assert "requirements.txt failed" in first
    assert "kubetune-missing-pkg" in first and "No matching distribution" in first


# -- the whole ResultGrid equals local mode's ------------------------------------------------
EQUAL_SCRIPT = """
import json, os, tempfile
from kubetune import air, tune
from kubetune.air import session
from kubetune.air.checkpoint import Checkpoint


def trainable(config):
    for i in range(1, 7):
        score = config["a"] * i + config["b"]
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as f:
                json.dump({"i": i, "score": score}, f)
            session.report({"score": score, "nested": {"i2": i * i}},
                           checkpoint=Checkpoint.from_directory(d))


def stop_after_four(trial_id, result):  # a function stopper: runs inside each trial there
    return result["training_iteration"] >= 4


results = tune.Tuner(
    trainable,
    param_space={"a": tune.grid_search([1, 2]), "b": tune.uniform(0, 1)},
    tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=2, seed=11),
    run_config=air.RunConfig(
        name="equal", stop=stop_after_four, checkpoint_config=air.CheckpointConfig(num_to_keep=2)
    ),
).fit()

# what differs by nature between two runs: clocks, hosts, processes, ids
VOLATILE = {"time_this_iter_s", "time_total_s", "time_since_restore", "timestamp", "date",
            "pid", "hostname", "node_ip", "trial_id"}
# "done" of the last logged row: the trial runner sets it when it stops the trial itself
# (the function stopper on the cluster), local mode's engine stops it after the row is
# written; the last result (metrics) says done either way
ROW_ONLY = {"done"}


def contents(checkpoint):
    with tempfile.TemporaryDirectory() as d:
        path = checkpoint.to_directory(os.path.join(d, "c"))
        with open(os.path.join(path, "state.json")) as f:
            return json.load(f)


trials = []
for r in results:
    df = r.metrics_dataframe
    columns = sorted(c for c in df.columns if c not in VOLATILE)
    compared = [c for c in columns if c not in ROW_ONLY]
    trials.append({
        "config": r.config,
        "columns": columns,
        "rows": json.loads(df[compared].to_json(orient="records")),
        "metrics": {k: v for k, v in r.metrics.items() if k not in VOLATILE},
        "checkpoint": contents(r.checkpoint),
        "kept": sorted(contents(c)["i"] for c, _ in r.best_checkpoints),
    })
best = results.get_best_result()
print("GRID " + json.dumps({
    "n": len(results),
    "errors": results.num_errors,
    "best": best.config,
    "best_checkpoint": contents(best.checkpoint),
    "trials": sorted(trials, key=lambda t: json.dumps(t["config"], sort_keys=True)),
}, sort_keys=True))
"""


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, as paths (a readable failure for big structures)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only one side" for k in sorted(set(a) ^ set(b), key=str)]
        for key in sorted(set(a) & set(b), key=str):
            out += _differences(a[key], b[key], f"{path}/{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _grid_of(proc: Any) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("GRID "))
    return dict(json.loads(line[5:]))


def test_the_result_grid_equals_local_modes(cluster_env, tmp_path):
    """Same seed: the same trials, metrics_dataframe columns and rows, last metrics, kept
    checkpoints and their contents (downloaded by to_directory), the same best result; and
    the same live table at the end. The function stopper runs in the engine here and inside
    each trial there, and stops both at iteration 4."""
    script = write(tmp_path / "eq" / "tune_equal.py", EQUAL_SCRIPT)
    here, there = local(script, cluster_env), submit(script, cluster_env)
    mine, theirs = _grid_of(here), _grid_of(there)
    assert mine["n"] == 4 and mine["errors"] == 0
    assert [len(t["rows"]) for t in mine["trials"]] == [4, 4, 4, 4]
    assert mine["trials"][0]["kept"] == [3, 4]  # num_to_keep=2
    assert _differences(mine, theirs) == []
    for out in (here.stdout, there.stdout):
        assert "equal: 4/4 trials done" in out
