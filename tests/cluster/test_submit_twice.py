"""Two Tuners with one RunConfig.name in one script (as Ray's mlflow_example runs them),
submitted unchanged: each run is a TuneExperiment of its own, the earlier one kept."""

from __future__ import annotations

import json

from tests.cluster import operator_helpers, submit_helpers
from tests.cluster.operator_helpers import GROUP, VERSION
from tests.cluster.submit_helpers import PREFIX, submit, write

crds = operator_helpers.crds  # fixtures
operator_process = operator_helpers.operator_process
cluster_env = submit_helpers.cluster_env

TWICE = """
import json
from kubetune import air, tune
from kubetune.air import session


def trainable(config):
    for step in range(2):
        session.report({"score": config["k"] * 10 + step})


paths = []
for k in (1, 2):
    tuner = tune.Tuner(
        trainable,
        param_space={"k": k},
        tune_config=tune.TuneConfig(metric="score", mode="max"),
        run_config=air.RunConfig(name="twice"),
    )
    grid = tuner.fit()
    paths.append([grid.experiment_path, grid.get_best_result().config["k"], len(grid)])
print("RUNS " + json.dumps(paths))
"""


def test_two_tuners_with_one_name_run_as_two_experiments(
    cluster_env, tmp_path, s3_bucket, kube_api, namespace
):
    from kubernetes import client

    proc = submit(write(tmp_path / "twice" / "tune_twice.py", TWICE), cluster_env, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RUNS "))
    root = f"s3://{s3_bucket}/{PREFIX}"
    assert json.loads(line[5:]) == [[f"{root}/twice", 1, 1], [f"{root}/twice-2", 2, 1]]
    assert "an earlier run is named twice" in proc.stdout and "this one is twice-2" in proc.stdout
    items = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuneexperiments"
    )["items"]
    phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase") for i in items}
    assert phases == {"twice": "Succeeded", "twice-2": "Succeeded"}
