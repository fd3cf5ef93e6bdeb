"""What the ``kubetune submit`` tests share: the ``cluster_env`` fixture (a user's environment
pointing at the test cluster and its storage; a test module binds it by name with the operator's
fixtures), the scripts several tests submit, and runs of scripts in local and cluster mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.operator_helpers import get_experiment
from tests.testenv.helpers import ctrl_c_reaches_it, s3_secret, wait_for

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


def submit_and_interrupt(
    script: Path, env: dict[str, str], ready: Callable[[], bool], what: str
) -> tuple[str, str]:
    """``kubetune submit script``, interrupted with SIGINT (Ctrl-C) once ``ready()``: it
    detaches and exits 130; its stdout and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetune.cli", "submit", str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_reaches_it,
    )
    try:
        wait_for(ready, 120, what, 0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    return out, err


def has_running_trial(kube_api: Any, namespace: str, name: str) -> bool:
    try:
        status = get_experiment(kube_api, namespace, name).get("status") or {}
    except Exception:
        return False
    return bool((status.get("trials") or {}).get("running"))


def experiment_exists(kube_api: Any, namespace: str, name: str) -> bool:
    from kubernetes.client import ApiException

    try:
        get_experiment(kube_api, namespace, name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True
