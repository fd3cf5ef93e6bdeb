"""The operator against the real control plane: kubetune-operator runs as a subprocess.

Until the sidecar is in the repository, trial pods run in the test kubelet's emulated mode and
a fake sidecar (the pod's behaviour) does what the sidecar does: it appends the trial's result
to ``TRIAL/result.json`` in S3 and patches ``TuneTrial.status.report``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testenv.helpers import s3_secret, wait_for

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


@pytest.fixture
def crds(control_plane: Any) -> Any:
    control_plane.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    for name in ("tuneexperiments.kubetune.io", "tunetrials.kubetune.io"):
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")
    return control_plane


@pytest.fixture
def operator_process(crds: Any, namespace: str, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    procs: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "operator.log"

    def start() -> subprocess.Popen[bytes]:
        env = {**os.environ, "KUBECONFIG": str(crds.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        out = open(log, "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubetune_operator",
                "--namespace",
                namespace,
                "--standalone",
                "--liveness-port",
                "0",
                "--metrics-port",
                "0",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        out.close()
        procs.append(proc)
        return proc

    start.log = log  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def experiment(name: str, bucket: str, endpoint: str, **tune: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TuneExperiment",
        "metadata": {"name": name},
        "spec": {
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
    }


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


def test_experiment_runs_to_succeeded_with_the_best_trial(
    kube_api, namespace, kubelet_factory, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    sidecar = FakeSidecar(
        kube_api,
        s3_server.client(),
        s3_bucket,
        lambda config: [{"loss": (config["x"] - 3) ** 2, "done": True}],
    )
    kubelet_factory(mode="emulated", behaviour=sidecar)
    s3_secret(kube_api, namespace, s3_server)
    create_experiment(kube_api, namespace, experiment("quad", s3_bucket, s3_server.endpoint_url))
    proc = operator_process()
    wait_succeeded(kube_api, namespace, "quad", 90, operator_process)
    assert proc.poll() is None
    status = get_experiment(kube_api, namespace, "quad")["status"]
    assert status["trials"]["total"] == 6 and status["trials"]["terminated"] == 6
    trials = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "tunetrials"
    )["items"]
    assert len(trials) == 6
    losses = {t["metadata"]["name"]: (t["spec"]["config"]["x"] - 3) ** 2 for t in trials}
    best = min(losses, key=losses.__getitem__)
    assert status["bestTrial"]["name"] == best
    assert status["bestTrial"]["metric"] == pytest.approx(losses[best])
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Stalled"]["status"] == "False"
    assert "trials" not in json.dumps(status["bestTrial"])
    state = s3_server.client().get_object(Bucket=s3_bucket, Key="quad/experiment_state.json")
    assert json.loads(state["Body"].read())["experiment"] == "quad"

    # Deleting the experiment removes its trials and pods (owner references).
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuneexperiments", "quad"
    )
    core = client.CoreV1Api(kube_api)
    custom = client.CustomObjectsApi(kube_api)
    wait_for(
        lambda: (
            not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "tunetrials")[
                "items"
            ]
            and not core.list_namespaced_pod(namespace).items
        ),
        60,
        "trials and pods to be garbage-collected",
    )


def test_missing_storage_secret_stalls_and_creates_nothing(
    kube_api, namespace, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    body = experiment("nosecret", s3_bucket, s3_server.endpoint_url)
    body["spec"]["storage"]["secretName"] = "missing"
    create_experiment(kube_api, namespace, body)
    operator_process()
    wait_for(lambda: phase_of(kube_api, namespace, "nosecret") == "Failed", 60, "Stalled")
    status = get_experiment(kube_api, namespace, "nosecret")["status"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert "spec.storage.secretName" in stalled["message"]
    assert "missing" in stalled["message"]
    trials = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "tunetrials"
    )["items"]
    assert trials == []
    assert client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items == []


def test_a_worker_pod_no_node_can_offer_stalls_naming_the_field(
    kube_api, namespace, s3_server, s3_bucket, operator_process
):
    s3_secret(kube_api, namespace, s3_server)
    body = experiment("spread", s3_bucket, s3_server.endpoint_url)
    body["spec"]["resources"] = {"bundles": [{"CPU": 1}, {"FPGA": 1}], "strategy": "SPREAD"}
    create_experiment(kube_api, namespace, body)
    operator_process()
    wait_for(lambda: phase_of(kube_api, namespace, "spread") == "Failed", 60, "Stalled")
    status = get_experiment(kube_api, namespace, "spread")["status"]
    assert "spec.resources: bundle key 'FPGA'" in status["message"]


def local_best(tmp_path: Path) -> tuple[dict[str, Any], float]:
    """The reference quickstart in local mode with the same seed."""
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import quickstart

        from kubetune import air, tune

        tuner = tune.Tuner(
            quickstart.trainable,
            param_space={"a": tune.grid_search([1, 2, 3]), "b": tune.uniform(0, 4)},
            tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=2, seed=7),
            run_config=air.RunConfig(name="qs", storage_path=str(tmp_path), verbose=0),
        )
        best = tuner.fit().get_best_result()
        return dict(best.config), float(best.metrics["score"])
    finally:
        sys.path.remove(str(REPO / "examples"))


def test_quickstart_with_the_real_sidecar_matches_local_mode(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process, tmp_path
):
    s3_secret(kube_api, namespace, s3_server)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TuneExperiment",
        "metadata": {"name": "quickstart"},
        "spec": {
            "trainable": {
                "image": "kubetune/test",
                "entrypoint": "quickstart:trainable",
                "pythonPath": [str(REPO / "examples"), str(REPO)],
            },
            "paramSpace": {
                "a": {"gridSearch": [1, 2, 3]},
                "b": {"uniform": {"lower": 0, "upper": 4}},
            },
            "tuneConfig": {
                "metric": "score",
                "mode": "max",
                "numSamples": 2,
                "seed": 7,
                "maxConcurrentTrials": 3,
            },
            "storage": s3_storage(s3_bucket, s3_server.endpoint_url),
        },
    }
    create_experiment(kube_api, namespace, body)
    operator_process()
    try:
        wait_for(
            lambda: phase_of(kube_api, namespace, "quickstart") == "Succeeded", 150, "Succeeded"
        )
    except AssertionError:
        print(operator_process.log.read_text()[-5000:])
        raise
    status = get_experiment(kube_api, namespace, "quickstart")["status"]
    assert status["trials"]["total"] == 6 and status["trials"]["terminated"] == 6
    config, score = local_best(tmp_path)
    assert status["bestTrial"]["config"]["a"] == config["a"]
    assert status["bestTrial"]["config"]["b"] == pytest.approx(config["b"])
    assert status["bestTrial"]["metric"] == pytest.approx(score)


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
    body["spec"]["trainable"] = {
        "image": "kubetune/test",
        "entrypoint": "tests.cluster.test_operator:counting",
        "pythonPath": [str(REPO)],
    }
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


def test_a_killed_trial_pod_is_retried_from_its_checkpoint(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    s3_secret(kube_api, namespace, s3_server)
    body = counting_experiment(
        "retry",
        s3_bucket,
        s3_server.endpoint_url,
        paramSpace={"x": {"constant": 1.0}, "n": {"constant": 8}, "sleep": {"constant": 0.4}},
        runConfig={"failureConfig": {"maxFailures": 2}},
    )
    body["spec"]["tuneConfig"].update(numSamples=1)
    create_experiment(kube_api, namespace, body)
    operator_process()

    def reported_three() -> bool:
        trials = trial_objects(kube_api, namespace)
        report = ((trials[0].get("status") or {}).get("report") or {}) if trials else {}
        return (report.get("iteration") or 0) >= 3 and bool(report.get("latestCheckpoint"))

    wait_for(reported_three, 90, "three results and a checkpoint")
    trial = trial_objects(kube_api, namespace)[0]
    client.CoreV1Api(kube_api).delete_namespaced_pod(
        trial["status"]["podName"], namespace, grace_period_seconds=0
    )
    wait_succeeded(kube_api, namespace, "retry", 120, operator_process)
    trial = trial_objects(kube_api, namespace)[0]
    assert trial["status"]["attempts"] == 2
    assert trial["status"]["phase"] == "TERMINATED"
    rows = stored_results(s3_server, s3_bucket, f"retry/{trial['metadata']['name']}/result.json")
    assert rows[-1]["training_iteration"] == 8
    assert rows[-1]["restored_from"] >= 1  # the second attempt started from a checkpoint
    assert trial["spec"]["restoreFrom"].startswith(f"s3://{s3_bucket}/retry/")


def test_asha_stops_trials_early(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process
):
    s3_secret(kube_api, namespace, s3_server)
    body = counting_experiment(
        "asha",
        s3_bucket,
        s3_server.endpoint_url,
        paramSpace={
            "x": {"gridSearch": [1, 2, 4, 8, 16, 32]},
            "n": {"constant": 9},
            "sleep": {"constant": 0.05},
        },
    )
    body["spec"]["tuneConfig"].update(
        numSamples=1,
        maxConcurrentTrials=3,
        scheduler={"type": "asha", "maxT": 9, "gracePeriod": 1, "reductionFactor": 3},
    )
    create_experiment(kube_api, namespace, body)
    operator_process()
    wait_succeeded(kube_api, namespace, "asha", 150, operator_process)
    iterations = [t["status"]["report"]["iteration"] for t in trial_objects(kube_api, namespace)]
    assert len(iterations) == 6
    assert min(iterations) < 9  # stopped early at a rung
    assert max(iterations) == 9


def test_operator_sigkilled_mid_experiment_finishes_without_duplicates(
    kube_api, namespace, kubelet_factory, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    sidecar = FakeSidecar(
        kube_api,
        s3_server.client(),
        s3_bucket,
        lambda config: [{"loss": (config["x"] - 3) ** 2}],
        duration=1.5,
    )
    kubelet_factory(mode="emulated", behaviour=sidecar)
    s3_secret(kube_api, namespace, s3_server)
    body = experiment("restart", s3_bucket, s3_server.endpoint_url)
    body["spec"]["tuneConfig"].update(numSamples=8, maxConcurrentTrials=2)
    create_experiment(kube_api, namespace, body)
    first = operator_process()

    def terminated() -> int:
        status = get_experiment(kube_api, namespace, "restart").get("status") or {}
        return int((status.get("trials") or {}).get("terminated") or 0)

    wait_for(lambda: terminated() >= 3, 90, "three trials done")
    first.kill()
    first.wait()
    operator_process()
    try:
        wait_for(lambda: phase_of(kube_api, namespace, "restart") == "Succeeded", 120, "done")
    except AssertionError:
        print(operator_process.log.read_text()[-5000:])
        raise
    status = get_experiment(kube_api, namespace, "restart")["status"]
    trials = trial_objects(kube_api, namespace)
    assert status["trials"]["total"] == 8 == len(trials)
    assert status["trials"]["terminated"] == 8
    assert len({t["spec"]["trialId"] for t in trials}) == 8
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items
    owners = {t["metadata"]["name"] for t in trials}
    assert all(p.metadata.owner_references[0].name in owners for p in pods)  # no orphans
    assert all(p.status.phase in ("Succeeded", "Failed") for p in pods)
    losses = {t["metadata"]["name"]: (t["spec"]["config"]["x"] - 3) ** 2 for t in trials}
    assert status["bestTrial"]["name"] == min(losses, key=losses.__getitem__)


def test_gpu_bundles_land_on_gpu_nodes_and_oversized_trials_wait_with_a_reason(
    kube_api, namespace, kubelet_factory, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    from tests.testenv.kubelet import NodeSpec

    sidecar = FakeSidecar(
        kube_api, s3_server.client(), s3_bucket, lambda c: [{"loss": 1.0}], duration=0.5
    )
    kubelet = kubelet_factory(NodeSpec(), NodeSpec(gpus=4), mode="emulated", behaviour=sidecar)
    gpu_node = next(n for n, spec in kubelet.nodes.items() if spec.gpus)
    s3_secret(kube_api, namespace, s3_server)
    two = experiment("two-gpus", s3_bucket, s3_server.endpoint_url)
    two["spec"]["tuneConfig"].update(numSamples=2, maxConcurrentTrials=2)
    two["spec"]["resources"] = {"bundles": [{"CPU": 1, "GPU": 2}]}
    five = experiment("five-gpus", s3_bucket, s3_server.endpoint_url)
    five["spec"]["tuneConfig"].update(numSamples=1)
    five["spec"]["resources"] = {"bundles": [{"CPU": 1, "GPU": 5}]}
    create_experiment(kube_api, namespace, two)
    create_experiment(kube_api, namespace, five)
    operator_process()
    wait_succeeded(kube_api, namespace, "two-gpus", 90)
    core = client.CoreV1Api(kube_api)
    pods = core.list_namespaced_pod(
        namespace, label_selector="kubetune.io/experiment=two-gpus"
    ).items
    assert pods and all(p.spec.node_name == gpu_node for p in pods)

    def waiting_reason() -> str:
        status = get_experiment(kube_api, namespace, "five-gpus").get("status") or {}
        return str(status.get("message") or "")

    message = wait_for(
        lambda: "nvidia.com/gpu" in waiting_reason() and waiting_reason(),
        60,
        "a message saying why the 5-GPU trial waits",
    )
    assert "cannot be scheduled" in message
    trial = next(
        t for t in trial_objects(kube_api, namespace) if t["spec"]["experiment"] == "five-gpus"
    )
    cond = next(c for c in trial["status"]["conditions"] if c["type"] == "Scheduled")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    conditions = {
        c["type"]: c
        for c in get_experiment(kube_api, namespace, "five-gpus")["status"]["conditions"]
    }
    assert conditions["Reconciling"]["reason"] == "TrialUnschedulable"


def test_class_api_example_matches_local_mode(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process, tmp_path
):
    s3_secret(kube_api, namespace, s3_server)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TuneExperiment",
        "metadata": {"name": "classapi"},
        "spec": {
            "trainable": {
                "image": "kubetune/test",
                "entrypoint": "pbt:Optimiser",
                "pythonPath": [str(REPO / "examples"), str(REPO)],
            },
            "paramSpace": {"lr": {"uniform": {"lower": 0.01, "upper": 0.5}}},
            "tuneConfig": {"metric": "score", "mode": "max", "numSamples": 3, "seed": 3},
            "runConfig": {"stop": {"training_iteration": 6}},
            "storage": s3_storage(s3_bucket, s3_server.endpoint_url),
        },
    }
    create_experiment(kube_api, namespace, body)
    operator_process()
    wait_succeeded(kube_api, namespace, "classapi", 150, operator_process)
    status = get_experiment(kube_api, namespace, "classapi")["status"]
    assert status["trials"]["terminated"] == 3

    sys.path.insert(0, str(REPO / "examples"))
    try:
        import pbt

        from kubetune import air, tune

        grid = tune.Tuner(
            pbt.Optimiser,
            param_space={"lr": tune.uniform(0.01, 0.5)},
            tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=3, seed=3),
            run_config=air.RunConfig(
                name="classapi",
                storage_path=str(tmp_path),
                verbose=0,
                stop={"training_iteration": 6},
            ),
        ).fit()
        best = grid.get_best_result()
    finally:
        sys.path.remove(str(REPO / "examples"))
    assert status["bestTrial"]["config"]["lr"] == pytest.approx(best.config["lr"])
    assert status["bestTrial"]["metric"] == pytest.approx(best.metrics["score"])


def test_suspend_pauses_running_trials_and_resume_finishes(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process
):
    from kubernetes import client

    s3_secret(kube_api, namespace, s3_server)
    body = counting_experiment(
        "susp",
        s3_bucket,
        s3_server.endpoint_url,
        paramSpace={"x": {"gridSearch": [1, 2]}, "n": {"constant": 10}, "sleep": {"constant": 0.3}},
    )
    body["spec"]["tuneConfig"].update(numSamples=1)
    create_experiment(kube_api, namespace, body)
    operator_process()
    custom = client.CustomObjectsApi(kube_api)
    core = client.CoreV1Api(kube_api)

    def running_with_results() -> bool:
        trials = trial_objects(kube_api, namespace)
        return len(trials) == 2 and all(
            ((t.get("status") or {}).get("report") or {}).get("iteration", 0) >= 2 for t in trials
        )

    wait_for(running_with_results, 90, "two trials with results")
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "tuneexperiments",
        "susp",
        {"spec": {"suspend": True}},
        _content_type="application/merge-patch+json",
    )
    wait_for(lambda: phase_of(kube_api, namespace, "susp") == "Suspended", 30, "Suspended")
    wait_for(
        lambda: all(
            p.status.phase in ("Succeeded", "Failed")
            for p in core.list_namespaced_pod(namespace).items
        ),
        60,
        "no running pod while suspended",
    )
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "tuneexperiments",
        "susp",
        {"spec": {"suspend": False}},
        _content_type="application/merge-patch+json",
    )
    wait_succeeded(kube_api, namespace, "susp", 120)
    for trial in trial_objects(kube_api, namespace):
        assert trial["status"]["attempts"] == 2
        rows = stored_results(s3_server, s3_bucket, f"susp/{trial['metadata']['name']}/result.json")
        assert rows[-1]["training_iteration"] == 10
        assert rows[-1]["restored_from"] >= 2  # resumed from its checkpoint


def test_pbt_exploits_restart_trials_from_a_donor_checkpoint(
    kube_api, namespace, kubelet, s3_server, s3_bucket, operator_process, tmp_path
):
    s3_secret(kube_api, namespace, s3_server)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TuneExperiment",
        "metadata": {"name": "pbt"},
        "spec": {
            "trainable": {
                "image": "kubetune/test",
                "entrypoint": "tests.cluster.pbt_population:Population",
                "pythonPath": [str(REPO / "examples"), str(REPO)],
            },
            "paramSpace": {
                "lr": {"uniform": {"lower": 0.01, "upper": 0.5}},
                "step_s": {"constant": 0.2},
                # the four members start training together however slowly their pods start:
                # exploits need live peers' results (see pbt_population.py)
                "barrier": {"constant": str(tmp_path / "barrier")},
                "population": {"constant": 4},
            },
            "tuneConfig": {
                "metric": "score",
                "mode": "max",
                "numSamples": 4,
                "seed": 3,
                "scheduler": {
                    "type": "pbt",
                    "timeAttr": "training_iteration",
                    "perturbationInterval": 2,
                    "quantileFraction": 0.5,
                    "hyperparamMutations": {"lr": {"uniform": {"lower": 0.01, "upper": 0.5}}},
                    "seed": 3,
                },
            },
            "runConfig": {
                "stop": {"training_iteration": 9},
                # numToKeep 1: every newer checkpoint makes the last one surplus, so a donor's
                # checkpoint survives until its exploit restored it only if deletion waits for it
                "checkpointConfig": {"checkpointFrequency": 1, "numToKeep": 1},
            },
            "storage": s3_storage(s3_bucket, s3_server.endpoint_url),
        },
    }
    create_experiment(kube_api, namespace, body)
    operator_process()
    wait_succeeded(kube_api, namespace, "pbt", 180, operator_process)
    trials = trial_objects(kube_api, namespace)
    assert len(trials) == 4
    restarted = [t for t in trials if t["status"]["attempts"] > 1]
    assert restarted, ("PBT exploited no trial", operator_process.log.read_text()[-3000:])
    for t in restarted:
        donor = t["spec"]["restoreFrom"]
        assert donor.startswith(f"s3://{s3_bucket}/pbt/")
    finals = [t["status"]["report"].get("iteration") for t in trials]
    assert finals == [9, 9, 9, 9], [t["status"] for t in trials]


def test_missing_image_pull_secret_stalls_and_probes_answer(
    kube_api, namespace, s3_server, s3_bucket, crds, tmp_path
):
    import socket
    import urllib.request

    from kubernetes import client

    s3_secret(kube_api, namespace, s3_server)
    body = experiment("nopull", s3_bucket, s3_server.endpoint_url)
    body["spec"]["trainable"]["imagePullSecrets"] = [{"name": "registry"}]
    create_experiment(kube_api, namespace, body)

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    live, prom = free_port(), free_port()
    env = {**os.environ, "KUBECONFIG": str(crds.kubeconfig)}
    with open(tmp_path / "operator.log", "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubetune_operator",
                "--namespace",
                namespace,
                "--standalone",
                "--liveness-port",
                str(live),
                "--metrics-port",
                str(prom),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        wait_for(lambda: phase_of(kube_api, namespace, "nopull") == "Failed", 60, "Stalled")
        message = get_experiment(kube_api, namespace, "nopull")["status"]["message"]
        assert "spec.trainable.imagePullSecrets[0].name" in message and "registry" in message
        assert client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items == []

        def get(url: str) -> str:
            try:
                return urllib.request.urlopen(url, timeout=2).read().decode()
            except OSError:
                return ""

        assert wait_for(lambda: get(f"http://127.0.0.1:{live}/healthz"), 30, "/healthz")
        metrics = wait_for(lambda: get(f"http://127.0.0.1:{prom}/metrics"), 30, "/metrics")
        for name in (
            "kubetune_api_writes_total",
            "kubetune_decision_latency_seconds",
            "kubetune_results_processed_total",
            "kubetune_api_errors_total",
        ):
            assert name in metrics
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
