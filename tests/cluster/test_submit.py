"""From a notebook to the cluster: unchanged Tuner scripts, run with ``kubetune submit`` (or
KUBETUNE_MODE=cluster), run their trials as pods of the real operator on the real control
plane (process kubelet, real sidecar, real S3 server) and give local mode's answers.

Every script here runs twice where it matters, as a subprocess: ``python script.py`` (local
mode) and ``kubetune submit script.py`` (cluster mode); only the environment differs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import operator_helpers
from tests.cluster.operator_helpers import get_experiment, phase_of
from tests.testenv.helpers import s3_secret, wait_for

crds = operator_helpers.crds  # fixtures
operator_process = operator_helpers.operator_process

REPO = Path(__file__).resolve().parents[2]
PREFIX = "submitted"

README_EXAMPLE = """
from kubetune import air, tune
from kubetune.air import session


def trainable(config):
    for x in range(20):
        session.report({"score": config["a"] * x**0.5 + config["b"]})


tuner = tune.Tuner(
    trainable,
    param_space={"a": tune.grid_search([1, 2, 3]), "b": tune.uniform(0, 4)},
    tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=2, seed=7),
    run_config=air.RunConfig(name="readme"),
)
results = tuner.fit()  # a ResultGrid, as in Ray
print(results.get_best_result().config)
"""

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

# appended to the reference examples (which only call fit()) so the test can compare
REPORT_BEST = """
import json as _json
_best = results.get_best_result(metric="score", mode="max")
print("BEST " + _json.dumps({"config": _best.config, "score": _best.metrics["score"],
                             "n": len(results), "path": results.experiment_path}))
"""


@pytest.fixture
def cluster_env(
    control_plane, kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process, tmp_path
):
    """The environment of a user whose kubeconfig and storage point at the test cluster."""
    s3_secret(kube_api, namespace, s3_server)
    operator_process()
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KUBETUNE_", "AWS_"))},
        "HOME": str(home),
        "KUBECONFIG": str(control_plane.kubeconfig),
        "KUBETUNE_NAMESPACE": namespace,
        "KUBETUNE_STORAGE": f"s3://{s3_bucket}/{PREFIX}",
        "KUBETUNE_STORAGE_SECRET": "s3",
        "KUBETUNE_IMAGE": "kubetune/test",
        "KUBETUNE_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "KUBETUNE_S3_REGION": s3_server.region,
        "KUBETUNE_S3_ADDRESSING_STYLE": "path",
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "KUBETUNE_RESULTS_DIR": str(tmp_path / "local_results"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return env


def write(path: Path, text: str, tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text) + tail)
    return path


def run(args: list[str], env: dict[str, str], timeout: float = 240, **kw: Any) -> Any:
    proc = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout, cwd=kw.pop("cwd", None)
    )
    return proc


def submit(script: Path, env: dict[str, str], *extra: str, timeout: float = 300) -> Any:
    return run([sys.executable, "-m", "kubetune.cli", "submit", *extra, str(script)], env, timeout)


def local(script: Path, env: dict[str, str]) -> Any:
    return run([sys.executable, str(script)], env, cwd=str(script.parent))


def best_of(proc: Any) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("BEST "))
    return dict(json.loads(line[5:]))


def s3_keys(s3_server: Any, bucket: str, prefix: str) -> dict[str, int]:
    client = s3_server.client()
    out: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj["Size"]
    return out


def use_env(monkeypatch: Any, env: dict[str, str]) -> None:
    for key in [k for k in os.environ if k.startswith(("KUBETUNE_", "AWS_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(("KUBETUNE_", "AWS_")) or key in ("HOME", "KUBECONFIG"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("KUBETUNE_MODE", "cluster")  # what a notebook user sets once


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


# -- detach, reattach, restore ----------------------------------------------------------------
SLOW_SCRIPT = """
import time
from kubetune import air, tune
from kubetune.air import session

def trainable(config):
    for i in range(config["steps"]):
        time.sleep(0.5)
        session.report({"score": config["k"] * 10 + i})

results = tune.Tuner(
    trainable,
    param_space={"k": tune.grid_search([1, 2, 3, 4]), "steps": STEPS},
    tune_config=tune.TuneConfig(metric="score", mode="max", max_concurrent_trials=2),
    run_config=air.RunConfig(name="NAME"),
).fit()
"""


def _start_and_interrupt(script: Path, env: dict[str, str], kube_api, namespace, name) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetune.cli", "submit", str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: _running(kube_api, namespace, name), 120, f"{name} has a running trial", 0.5
        )
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    return err


def _running(kube_api: Any, namespace: str, name: str) -> bool:
    try:
        status = get_experiment(kube_api, namespace, name).get("status") or {}
    except Exception:
        return False
    return bool((status.get("trials") or {}).get("running"))


def test_ctrl_c_detaches_then_restore_reattaches(
    cluster_env, tmp_path, kube_api, namespace, monkeypatch, s3_bucket
):
    script = write(
        tmp_path / "slow" / "tune_slow.py",
        SLOW_SCRIPT.replace("NAME", "detach").replace("STEPS", "6"),
    )
    err = _start_and_interrupt(script, cluster_env, kube_api, namespace, "detach")
    uri = f"s3://{s3_bucket}/{PREFIX}/detach"
    assert "detached; TuneExperiment detach keeps running" in err
    assert f"tune.Tuner.restore('{uri}').fit()" in err
    assert f"kubectl delete tuneexperiment detach -n {namespace}" in err
    assert phase_of(kube_api, namespace, "detach") in ("Pending", "Running", None)
    use_env(monkeypatch, cluster_env)
    from kubetune import tune

    wait_for(lambda: tune.Tuner.can_restore(uri), 60, "the snapshot in storage", 0.5)
    grid = tune.Tuner.restore(uri).fit()
    assert len(grid) == 4 and grid.num_terminated == 4
    assert grid.get_best_result().config["k"] == 4
    assert phase_of(kube_api, namespace, "detach") == "Succeeded"


def test_restore_of_a_finished_experiment_returns_its_results(
    cluster_env, tmp_path, kube_api, namespace, monkeypatch, s3_bucket
):
    script = write(
        tmp_path / "fin" / "tune_fin.py",
        SLOW_SCRIPT.replace("NAME", "finished").replace("STEPS", "2") + REPORT_BEST,
    )
    first = best_of(submit(script, cluster_env))
    use_env(monkeypatch, cluster_env)
    from kubetune import tune

    uri = f"s3://{s3_bucket}/{PREFIX}/finished"
    assert tune.Tuner.can_restore(uri)
    tuner = tune.Tuner.restore(uri)
    grid = tuner.fit()  # finished: nothing runs, the stored results come back
    assert len(grid) == 4 and grid.num_terminated == 4
    assert grid.get_best_result().config == first["config"]
    assert tune.Tuner.restore(uri).get_results().get_best_result().config == first["config"]
    best = grid.get_best_result()
    assert best.metrics_dataframe["score"].tolist() == [
        best.config["k"] * 10,
        best.config["k"] * 10 + 1,
    ]


def test_restore_of_an_interrupted_experiment_continues_it(
    cluster_env, tmp_path, kube_api, namespace, monkeypatch, s3_bucket
):
    from kubernetes import client

    script = write(
        tmp_path / "int" / "tune_int.py",
        SLOW_SCRIPT.replace("NAME", "interrupted").replace("STEPS", "6"),
    )
    _start_and_interrupt(script, cluster_env, kube_api, namespace, "interrupted")
    uri = f"s3://{s3_bucket}/{PREFIX}/interrupted"
    use_env(monkeypatch, cluster_env)
    from kubetune import tune

    wait_for(lambda: tune.Tuner.can_restore(uri), 60, "the snapshot in storage", 0.5)
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        "kubetune.io", "v1alpha1", namespace, "tuneexperiments", "interrupted"
    )
    wait_for(lambda: not _exists(kube_api, namespace, "interrupted"), 60, "deletion")
    grid = tune.Tuner.restore(uri).fit()
    assert grid.experiment_path == f"s3://{s3_bucket}/{PREFIX}/interrupted-r1"
    assert len(grid) == 4 and grid.num_terminated == 4
    assert sorted(r.config["k"] for r in grid) == [1, 2, 3, 4]
    assert phase_of(kube_api, namespace, "interrupted-r1") == "Succeeded"


def _exists(kube_api: Any, namespace: str, name: str) -> bool:
    from kubernetes.client import ApiException

    try:
        get_experiment(kube_api, namespace, name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


# -- refusals -------------------------------------------------------------------------------
def test_a_refused_experiment_creates_nothing(
    cluster_env, tmp_path, kube_api, namespace, s3_server, s3_bucket
):
    script = write(
        tmp_path / "refuse" / "tune_refused.py",
        """
        from kubetune import air, tune
        from kubetune.air import session
        from kubetune.search import Searcher

        class MySearcher(Searcher):
            def suggest(self, trial_id):
                return {"x": 1}

        def trainable(config):
            session.report({"score": 1})

        tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=MySearcher(), num_samples=1),
            run_config=air.RunConfig(name="refused"),
        ).fit()
        """,
    )
    proc = submit(script, cluster_env)
    assert proc.returncode != 0
    assert "MySearcher is user code, which the operator does not run" in proc.stderr
    assert "OptunaSearch" in proc.stderr
    assert not _exists(kube_api, namespace, "refused")
    assert s3_keys(s3_server, s3_bucket, f"{PREFIX}/refused/") == {}


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


# -- callbacks run in the submitting process, each hook once across a detach ------------------
JOURNAL_SCRIPT = SLOW_SCRIPT.replace(
    "results = tune.Tuner(",
    """import json as _json, os as _os


class Journal(tune.Callback):
    def __init__(self, path):
        self.path = path

    def _write(self, *event):
        with open(self.path, "a") as f:
            f.write(_json.dumps(event) + "\\n")

    def on_trial_start(self, iteration, trials, trial, **info):
        self._write("start", trial.config["k"])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._write("result", trial.config["k"], result["training_iteration"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write("complete", trial.config["k"])

    def on_experiment_end(self, trials, **info):
        self._write("end", len(trials))


results = tune.Tuner(""",
).replace(
    'run_config=air.RunConfig(name="NAME")',
    'run_config=air.RunConfig(name="NAME", callbacks=[Journal(_os.environ["JOURNAL"])])',
)


def _journal(path: Path) -> list[list[Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_callbacks_run_here_once_each_across_ctrl_c_and_reattach(
    cluster_env, tmp_path, kube_api, namespace, monkeypatch, s3_bucket
):
    journal = tmp_path / "journal.jsonl"
    env = {**cluster_env, "JOURNAL": str(journal)}
    script = write(
        tmp_path / "cb" / "tune_cb.py",
        JOURNAL_SCRIPT.replace("NAME", "callbacks").replace("STEPS", "6"),
    )
    assert "callbacks=[Journal(" in script.read_text()

    def some_results() -> bool:
        return _running(kube_api, namespace, "callbacks") and any(
            e[0] == "result" for e in _journal(journal)
        )

    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetune.cli", "submit", str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(some_results, 120, "the callback saw a result", 0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    before = _journal(journal)
    assert before and ["end", 4] not in before
    use_env(monkeypatch, cluster_env)
    from kubetune import tune

    uri = f"s3://{s3_bucket}/{PREFIX}/callbacks"
    grid = tune.Tuner.restore(uri).fit()  # the submitted Journal comes back from storage
    assert len(grid) == 4 and grid.num_terminated == 4
    events = _journal(journal)
    assert len(events) > len(before)
    for k in (1, 2, 3, 4):
        results = [e[2] for e in events if e[0] == "result" and e[1] == k]
        assert results == [1, 2, 3, 4, 5, 6], (k, events)
        assert events.count(["complete", k]) == 1
        assert events.count(["start", k]) == 1
    assert events.count(["end", 4]) == 1 and events[-1] == ["end", 4]


# -- the operator refuses shipped URIs outside the experiment's storage -----------------------
def test_code_from_outside_the_storage_stalls_naming_the_field(
    kube_api, namespace, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    s3_secret(kube_api, namespace, s3_server)
    body = operator_helpers.experiment("elsewhere", s3_bucket, s3_server.endpoint_url)
    body["spec"]["storage"]["prefix"] = "team-a"
    body["spec"]["trainable"] = {
        "entrypoint": "shipped:trainable",
        "codeFrom": f"s3://{s3_bucket}/team-b/their-experiment/.kubetune/code",
    }
    operator_helpers.create_experiment(kube_api, namespace, body)
    operator_process()
    wait_for(lambda: phase_of(kube_api, namespace, "elsewhere") == "Failed", 60, "Stalled")
    status = get_experiment(kube_api, namespace, "elsewhere")["status"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert stalled["message"].startswith("spec.trainable.codeFrom: ")
    assert f"s3://{s3_bucket}/team-a/" in stalled["message"]
    trials = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        "kubetune.io", "v1alpha1", namespace, "tunetrials"
    )["items"]
    assert trials == []
    assert client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items == []


# -- no image anywhere: the trials run the trial base image the operator names ---------------
@pytest.fixture
def trial_base_image(monkeypatch: Any) -> str:
    """The operator's trial base image (the chart's trial.sidecarImage), set before the
    operator starts."""
    monkeypatch.setenv("KUBETUNE_SIDECAR_IMAGE", "kubetune/trial:base")
    return "kubetune/trial:base"


def test_without_an_image_the_trials_run_the_trial_base_image(
    trial_base_image, cluster_env, tmp_path, kube_api, namespace
):
    from kubernetes import client

    env = {k: v for k, v in cluster_env.items() if k != "KUBETUNE_IMAGE"}
    script = write(
        tmp_path / "noimage" / "tune_noimage.py",
        README_EXAMPLE.replace('name="readme"', 'name="noimage"') + REPORT_BEST,
    )
    theirs = best_of(submit(script, env))
    assert theirs["n"] == 6
    spec = get_experiment(kube_api, namespace, "noimage")["spec"]
    assert "image" not in spec["trainable"] and spec["trainable"]["codeFrom"]
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items
    assert pods
    for pod in pods:
        images = {c.image for c in [*pod.spec.init_containers, *pod.spec.containers]}
        assert images == {trial_base_image}, images


def test_a_submission_the_operator_refuses_fails_with_its_reason(cluster_env, tmp_path):
    """No image given and none configured on the operator: the experiment stalls, and fit()
    raises with the operator's message (not an empty result)."""
    env = {k: v for k, v in cluster_env.items() if k != "KUBETUNE_IMAGE"}
    script = write(
        tmp_path / "stall" / "tune_stall.py",
        README_EXAMPLE.replace('name="readme"', 'name="stalled"'),
    )
    proc = submit(script, env)
    assert proc.returncode != 0
    assert "the operator did not run" in proc.stderr and "spec.trainable.image" in proc.stderr
