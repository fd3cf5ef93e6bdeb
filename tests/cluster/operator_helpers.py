"""What the operator tests share: the ``crds`` and ``operator_process`` fixtures (a test module
binds them by name: ``crds = operator_helpers.crds``), the test experiments, the fake sidecar,
and the reads of experiments, trials and stored results.

Until the sidecar is in the repository, trial pods run in the test kubelet's emulated mode and
a fake sidecar (the pod's behaviour) does what the sidecar does: it appends the trial's result
to ``TRIAL/result.json`` in S3 and patches ``TuneTrial.status.report``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testenv.helpers import operator_command, wait_for
from tests.testenv.procs import end_process

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION = "kubetune.io", "v1alpha1"


class FakeSidecar:
    """An emulated pod's behaviour: reports ``results(config)`` as the sidecar would."""

    def __init__(
        self,
        kube_api: Any,
        s3: Any,
        bucket: str,
        results: Callable[[dict[str, Any]], list[dict[str, Any]]],
        duration: float = 0.2,
        gate: bool = False,
    ) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(kube_api)
        self.s3 = s3
        self.bucket = bucket
        self.results = results
        self.duration = duration
        self.gate = gate
        self.reported = 0

    def __call__(self, epod: Any) -> Any:
        from tests.testenv.kubelet_emulated import EmulatedExit

        pod = epod.pod
        meta = pod["metadata"]
        owner = next(o["name"] for o in meta["ownerReferences"] if o["kind"] == "TuneTrial")
        attempt = int(meta["labels"]["kubetune.io/attempt"])
        trial = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], "tunetrials", owner
        )
        experiment = trial["spec"]["experiment"]
        rows = []
        for i, row in enumerate(self.results(trial["spec"]["config"])):
            rows.append(
                {
                    "training_iteration": i + 1,
                    "config": trial["spec"]["config"],
                    **row,
                    "trial_id": trial["spec"]["trialId"],
                }
            )
        key = f"{experiment}/{owner}/result.json"
        self.s3.put_object(
            Bucket=self.bucket, Key=key, Body="".join(json.dumps(r) + "\n" for r in rows).encode()
        )
        # One report stands for the sidecar's last one: every line stored, the runner done.
        report = {
            "sequence": len(rows),
            "attempt": attempt,
            "iteration": len(rows),
            "results": rows[-8:],
            "firstResult": max(0, len(rows) - 8),
            "resultCount": len(rows),
            "uploadedResults": len(rows),
            "uploaded": True,
            "exit": {"status": "finished"},
        }
        if self.gate and rows:
            report["gate"] = {"seq": 1, "training_iteration": len(rows)}
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            meta["namespace"],
            "tunetrials",
            owner,
            {"status": {"report": report}},
            _content_type="application/merge-patch+json",
        )
        self.reported += 1
        return EmulatedExit(0, self.duration)


CRD_NAMES = ("tuneexperiments.kubetune.io", "tunetrials.kubetune.io")


def apply_crds(control_plane: Any) -> None:
    """The repository's CRDs, applied and Established."""
    control_plane.apply_crds(REPO / "crds", *CRD_NAMES)


@pytest.fixture
def crds(control_plane: Any) -> Any:
    apply_crds(control_plane)
    return control_plane


def start_operator(
    kubeconfig: Path, namespace: str, log: Path, liveness_port: int = 0, metrics_port: int = 0
) -> subprocess.Popen[bytes]:
    """``kubetune-operator --standalone`` watching ``namespace``, its output appended to ``log``."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    with open(log, "ab") as out:
        return subprocess.Popen(
            operator_command(namespace, metrics_port, liveness_port),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


def stop_operator(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    end_process(proc, 10)


@pytest.fixture
def operator_process(crds: Any, namespace: str, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    procs: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "operator.log"

    def start() -> subprocess.Popen[bytes]:
        proc = start_operator(crds.kubeconfig, namespace, log)
        procs.append(proc)
        return proc

    start.log = log  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop_operator(proc)


def tune_experiment(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A TuneExperiment named ``name`` with ``spec``."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TuneExperiment",
        "metadata": {"name": name},
        "spec": spec,
    }


def repo_trainable(entrypoint: str, examples: bool = False) -> dict[str, Any]:
    """``spec.trainable``: ``entrypoint`` imported from this repository (or its examples/)."""
    path = [str(REPO / "examples"), str(REPO)] if examples else [str(REPO)]
    return {"image": "kubetune/test", "entrypoint": entrypoint, "pythonPath": path}


def example_experiment(
    name: str, entrypoint: str, s3_server: Any, bucket: str, **spec: Any
) -> dict[str, Any]:
    """A TuneExperiment of ``entrypoint`` from examples/ (or this repository) with ``spec``, its
    storage ``bucket`` on the test S3 server."""
    return tune_experiment(
        name,
        {
            "trainable": repo_trainable(entrypoint, examples=True),
            **spec,
            "storage": s3_storage(bucket, s3_server.endpoint_url),
        },
    )


def pbt_tune_config(perturbation_interval: int, **scheduler: Any) -> dict[str, Any]:
    """``spec.tuneConfig`` of the PBT experiments: four members, ``score`` maximised, ``lr``
    mutated in [0.01, 0.5], seed 3."""
    return {
        "metric": "score",
        "mode": "max",
        "numSamples": 4,
        "seed": 3,
        "scheduler": {
            "type": "pbt",
            "timeAttr": "training_iteration",
            "perturbationInterval": perturbation_interval,
            **scheduler,
            "hyperparamMutations": {"lr": {"uniform": {"lower": 0.01, "upper": 0.5}}},
            "seed": 3,
        },
    }


@contextlib.contextmanager
def examples_importable() -> Iterator[None]:
    """examples/ on ``sys.path``: an example run in local mode here, to compare."""
    sys.path.insert(0, str(REPO / "examples"))
    try:
        yield
    finally:
        sys.path.remove(str(REPO / "examples"))


def experiment(name: str, bucket: str, endpoint: str, **tune: Any) -> dict[str, Any]:
    return tune_experiment(
        name,
        {
            "trainable": {"image": "kubetune/test:latest", "entrypoint": "tests.train:objective"},
            "paramSpace": {"x": {"uniform": {"lower": 0, "upper": 6}}},
            "tuneConfig": {
                "metric": "loss",
                "mode": "min",
                "numSamples": 6,
                "maxConcurrentTrials": 3,
                "seed": 7,
                **tune,
            },
            "storage": s3_storage(bucket, endpoint),
        },
    )


def s3_storage(bucket: str, endpoint: str) -> dict[str, Any]:
    """``spec.storage`` of the test experiments (the S3 server, the ``s3`` Secret)."""
    return {"bucket": bucket, "endpoint": endpoint, "secretName": "s3", "addressingStyle": "path"}


def wait_succeeded(
    kube_api: Any, namespace: str, name: str, timeout: float, operator: Any = None
) -> None:
    """Wait for the experiment to succeed; on a timeout print the operator's log tail."""
    try:
        wait_for(lambda: phase_of(kube_api, namespace, name) == "Succeeded", timeout, "Succeeded")
    except AssertionError:
        if operator is not None:
            print(operator.log.read_text()[-8000:])
        raise


def get_experiment(kube_api: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes import client

    return client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuneexperiments", name
    )


def create_experiment(kube_api: Any, namespace: str, body: dict[str, Any]) -> None:
    from kubernetes import client

    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuneexperiments", body
    )


def phase_of(kube_api: Any, namespace: str, name: str) -> str | None:
    return (get_experiment(kube_api, namespace, name).get("status") or {}).get("phase")


def counting(config: dict[str, Any]) -> None:
    """A Function-API trainable with a checkpoint per step; reports where it restored from."""
    import tempfile

    from kubetune.air import Checkpoint, session

    start = 0
    ckpt = session.get_checkpoint()
    if ckpt is not None:
        with open(os.path.join(ckpt.path, "state.json")) as f:
            start = json.load(f)["i"]
    for i in range(start, config["n"]):
        time.sleep(config.get("sleep", 0.0))
        d = tempfile.mkdtemp()
        with open(os.path.join(d, "state.json"), "w") as f:
            json.dump({"i": i + 1}, f)
        loss = config["x"] / (i + 1)
        session.report(
            {"loss": loss, "restored_from": start}, checkpoint=Checkpoint.from_directory(d)
        )


def counting_experiment(name: str, bucket: str, endpoint: str, **spec: Any) -> dict[str, Any]:
    body = experiment(name, bucket, endpoint)
    body["spec"]["trainable"] = repo_trainable("tests.cluster.operator_helpers:counting")
    body["spec"].update(spec)
    return body


def trial_objects(kube_api: Any, namespace: str) -> list[dict[str, Any]]:
    from kubernetes import client

    return client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "tunetrials"
    )["items"]


def stored_results(s3_server: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in body.decode().splitlines()]


def retry_experiment(name: str, s3_server: Any, bucket: str, **spec: Any) -> dict[str, Any]:
    """One counting trial of 8 slow steps with a checkpoint each, allowed two failures."""
    body = counting_experiment(
        name,
        bucket,
        s3_server.endpoint_url,
        paramSpace={"x": {"constant": 1.0}, "n": {"constant": 8}, "sleep": {"constant": 0.4}},
        runConfig={"failureConfig": {"maxFailures": 2}},
        **spec,
    )
    body["spec"]["tuneConfig"].update(numSamples=1)
    return body


def reported_three(kube_api: Any, namespace: str) -> dict[str, Any] | None:
    """The only trial, once it has reported three results and a checkpoint."""
    trials = trial_objects(kube_api, namespace)
    report = ((trials[0].get("status") or {}).get("report") or {}) if trials else {}
    if (report.get("iteration") or 0) >= 3 and report.get("latestCheckpoint"):
        return trials[0]
    return None


def allreduce_experiment(
    name: str, bucket: str, endpoint: str, strategy: str, **loop: Any
) -> dict[str, Any]:
    """One trial of tests.allreduce's trainer: a driver bundle and three half-CPU workers
    placed by ``strategy``; ``loop`` goes into its train_loop_config."""
    body = experiment(name, bucket, endpoint, numSamples=1, maxConcurrentTrials=1)
    body["spec"]["trainable"] = repo_trainable("tests.allreduce:trainer")
    body["spec"]["paramSpace"] = {"train_loop_config": {"scale": {"constant": 10}, **loop}}
    body["spec"]["tuneConfig"] = {"metric": "sum", "mode": "max", "numSamples": 1}
    body["spec"]["resources"] = {
        "bundles": [{}, {"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 0.5}],
        "strategy": strategy,
        "workers": 3,
    }
    body["spec"]["runConfig"] = {"failureConfig": {"maxFailures": 1}}
    return body
