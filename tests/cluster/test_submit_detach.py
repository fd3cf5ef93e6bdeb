"""``kubetune submit`` interrupted with Ctrl-C: the experiment keeps running detached,
``Tuner.restore()`` reattaches to it (or returns a finished one's results, or continues an
interrupted one), and the callbacks run in the submitting process, each hook once across a
detach."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cluster import operator_helpers, submit_helpers
from tests.cluster.operator_helpers import phase_of
from tests.cluster.submit_helpers import (
    PREFIX,
    REPORT_BEST,
    best_of,
    experiment_exists,
    has_running_trial,
    submit,
    submit_and_interrupt,
    use_env,
    write,
)
from tests.testenv.helpers import wait_for

crds = operator_helpers.crds  # fixtures
operator_process = operator_helpers.operator_process
cluster_env = submit_helpers.cluster_env


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
    def running() -> bool:
        return has_running_trial(kube_api, namespace, name)

    return submit_and_interrupt(script, env, running, f"{name} has a running trial")[1]


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
    wait_for(lambda: not experiment_exists(kube_api, namespace, "interrupted"), 60, "deletion")
    grid = tune.Tuner.restore(uri).fit()
    assert grid.experiment_path == f"s3://{s3_bucket}/{PREFIX}/interrupted-r1"
    assert len(grid) == 4 and grid.num_terminated == 4
    assert sorted(r.config["k"] for r in grid) == [1, 2, 3, 4]
    assert phase_of(kube_api, namespace, "interrupted-r1") == "Succeeded"


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
        return has_running_trial(kube_api, namespace, "callbacks") and any(
            e[0] == "result" for e in _journal(journal)
        )

    submit_and_interrupt(script, env, some_results, "the callback saw a result")
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
