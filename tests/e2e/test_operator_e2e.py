"""The chart and the README's example on the real node: `helm install` runs the operator
image in its container under the rendered Deployment, and examples/quadratic.yaml (image and
storage set to the test ones) reaches Ready with local mode's best trial for the same seed;
the trial container has no credentials or token while its sidecar has them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from kubetune.trial import exit_codes
from tests.e2e.chart import REPO, operator_ready
from tests.e2e.experiments import Site
from tests.testenv.helpers import wait_for


def local_best(tmp_path: Path) -> tuple[float, float]:
    """examples/quadratic.yaml's experiment in local mode, same seed."""
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import quadratic

        from kubetune import air, tune

        tuner = tune.Tuner(
            quadratic.objective,
            param_space={"x": tune.uniform(0, 6)},
            tune_config=tune.TuneConfig(
                metric="loss", mode="min", num_samples=3, max_concurrent_trials=3, seed=7
            ),
            run_config=air.RunConfig(name="quadratic", storage_path=str(tmp_path), verbose=0),
        )
        best = tuner.fit().get_best_result()
        return float(best.config["x"]), float(best.metrics["loss"])
    finally:
        sys.path.remove(str(REPO / "examples"))


def test_quadratic_example_reaches_ready_with_local_modes_best_trial(
    control_plane, operator_ns, real_node, e2e_images, s3_server, bucket, tmp_path, e2e_site
):
    e2e_site.experiment()
    status = e2e_site.wait("quadratic")
    ready = control_plane.kubectl(
        "wait",
        "-n",
        operator_ns,
        "tex/quadratic",
        "--for=condition=Ready",
        "--timeout=30s",
        check=False,
    )
    assert ready.returncode == 0, (status, ready.stderr)
    assert status["trials"]["terminated"] == 3 and status["trials"]["error"] == 0, status
    x, loss = local_best(tmp_path)
    assert status["bestTrial"]["config"]["x"] == pytest.approx(x)
    assert status["bestTrial"]["metric"] == pytest.approx(loss)
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(k.endswith("result.json") for k in keys), keys


def test_trial_container_has_no_credentials_while_its_sidecar_has(
    control_plane, operator_ns, real_node, e2e_images, s3_server, bucket, e2e_site
):
    e2e_site.trainable_experiment(
        "sleepy",
        "sleepy",
        paramSpace={"steps": {"choice": [90]}},
    )

    def running_trial_pod() -> str | None:
        out = control_plane.kubectl("get", "pods", "-n", operator_ns, "-o", "json").stdout
        for pod in json.loads(out)["items"]:
            for st in pod["status"].get("containerStatuses") or []:
                if st["name"] == "trial" and "running" in st["state"]:
                    return str(pod["metadata"]["name"])
        return None

    pod = wait_for(running_trial_pod, 300, "the sleepy trial's container running", 1)

    def inside(container: str, code: str) -> str:
        return str(
            control_plane.kubectl(
                "exec", "-n", operator_ns, pod, "-c", container, "--", "python", "-c", code
            ).stdout
        )

    probe = (
        "import os, json, socket; print(json.dumps({'env': sorted(k for k in os.environ"
        " if 'AWS' in k or 'TOKEN' in k or 'SECRET' in k),"
        " 'sa': os.path.exists('/var/run/secrets/kubernetes.io'),"
        " 'api': socket.gethostbyname('kubernetes.default.svc')}))"
    )
    trial = json.loads(inside("trial", probe))
    # the API server's name resolves (cluster DNS) but the trial has nothing to log in with
    assert trial == {"env": [], "sa": False, "api": "10.0.0.1"}
    sidecar = json.loads(inside("kubetune-sidecar", probe))
    assert "AWS_ACCESS_KEY_ID" in sidecar["env"] and "AWS_SECRET_ACCESS_KEY" in sidecar["env"]
    assert sidecar["sa"] is True
    logs = control_plane.kubectl("logs", "-n", operator_ns, pod, "-c", "trial").stdout
    assert logs is not None

    # Native sidecar ordering, as the real kubelet runs it: the trial container's PID 1
    # started only after the sidecar had restored the inputs (its ready file, which its
    # startupProbe waits for) and the kubelet had seen the sidecar started.
    order = json.loads(inside("trial", PID1_START_AND_READY))
    assert order["pid1"][1:] == ["-m", "kubetune.trial"], order  # the runner is PID 1
    assert order["pid1_started"] > order["ready_written"] - TICK_S, order
    status = json.loads(
        control_plane.kubectl("get", "pod", "-n", operator_ns, pod, "-o", "json").stdout
    )["status"]
    (side,) = status["initContainerStatuses"]
    (main,) = [c for c in status["containerStatuses"] if c["name"] == "trial"]
    assert side["name"] == "kubetune-sidecar" and side["started"] is True, side
    assert main["state"]["running"]["startedAt"] >= side["state"]["running"]["startedAt"]
    control_plane.kubectl("delete", "-n", operator_ns, "tex/sleepy", "--wait=false")


# Run in the trial container: when its PID 1 started (from /proc, to the clock tick) and when
# the sidecar wrote the ready file on the shared volume.
PID1_START_AND_READY = """
import json, os, time
fields = open("/proc/1/stat").read().rsplit(")", 1)[1].split()
started_ticks = int(fields[19])  # starttime: clock ticks after boot
uptime = float(open("/proc/uptime").read().split()[0])
hz = os.sysconf("SC_CLK_TCK")
argv = open("/proc/1/cmdline").read().split(chr(0))
print(json.dumps({
    "pid1": [a for a in argv if a],
    "pid1_started": time.time() - uptime + started_ticks / hz,
    "ready_written": os.stat("/kubetune/.ready").st_mtime,
}))
"""
TICK_S = 0.02  # /proc's start time is truncated to a 10 ms tick; uptime to 10 ms


def test_trial_over_its_memory_limit_ends_with_oomkilled(
    control_plane, operator_ns, real_node, e2e_images, s3_server, bucket, e2e_site
):
    # resources.bundles' memory (bytes, as in Ray) is the trial container's request and limit
    e2e_site.trainable_experiment(
        "hog",
        "hog",
        resources={"bundles": [{"CPU": 0.2, "memory": 300 * 2**20}]},
    )
    e2e_site.wait("hog")
    for pod in trial_pods(control_plane, operator_ns, "hog"):
        (trial,) = [c for c in pod["spec"]["containers"] if c["name"] == "trial"]
        assert trial["resources"]["limits"]["memory"] == str(300 * 2**20), trial["resources"]
    trials = json.loads(
        control_plane.kubectl("get", "ttr", "-n", operator_ns, "-o", "json").stdout
    )["items"]
    hog = [t for t in trials if t["metadata"]["name"].startswith("hog")]
    assert hog and "OOMKilled" in json.dumps(hog[0]["status"]), hog


def results_of(s3_server: Any, bucket: str, experiment_name: str) -> dict[str, list[dict]]:
    """Each trial's result.json lines in storage, by the trial's folder."""
    s3 = s3_server.client()
    out: dict[str, list[dict]] = {}
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=experiment_name + "/")
    for obj in listing.get("Contents", []):
        if obj["Key"].endswith("/result.json"):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
            out[obj["Key"]] = [json.loads(line) for line in body.splitlines() if line.strip()]
    return out


def trial_pods(cp: Any, ns: str, experiment_name: str) -> list[dict[str, Any]]:
    out = cp.kubectl(
        "get", "pods", "-n", ns, "-l", f"kubetune.io/experiment={experiment_name}", "-o", "json"
    ).stdout
    return list(json.loads(out)["items"])


def counted_experiment(site: Site, name: str, samples: int, steps: int) -> dict[str, Any]:
    return site.trainable_experiment(
        name,
        "counted",
        paramSpace={"steps": {"choice": [steps]}, "pause": {"choice": [1.0]}},
        tuneConfig={
            "metric": "loss",
            "mode": "min",
            "numSamples": samples,
            "maxConcurrentTrials": samples,
        },
        resources={"bundles": [{"CPU": 0.2}]},
        runConfig={"failureConfig": {"maxFailures": 2}},
    )


def running_trial_container(cp: Any, ns: str, s3_server: Any, bucket: str, name: str) -> str:
    """The containerd ID of experiment NAME's trial container, once 3 steps are stored."""

    def after_some_steps() -> str | None:
        for pod in trial_pods(cp, ns, name):
            for st in pod["status"].get("containerStatuses") or []:
                if st["name"] == "trial" and "running" in st["state"]:
                    reports = results_of(s3_server, bucket, name)
                    if any(len(lines) >= 3 for lines in reports.values()):
                        return str(st["containerID"]).split("://", 1)[1]
        return None

    return str(wait_for(after_some_steps, 300, "3 checkpointed steps", 1))


def test_killed_trial_container_is_retried_from_its_checkpoint(
    control_plane, operator_ns, real_node, e2e_images, s3_server, bucket, e2e_site
):
    counted_experiment(e2e_site, "killed", 1, 25)
    container = running_trial_container(control_plane, operator_ns, s3_server, bucket, "killed")
    killed = real_node.ctr("tasks", "kill", "-s", "SIGKILL", container)
    assert killed.returncode == 0, killed.stderr
    e2e_site.wait("killed")
    (lines,) = results_of(s3_server, bucket, "killed").values()
    assert lines[-1]["step"] == 24
    assert lines[-1]["start"] >= 2, "the retry did not start from the checkpoint"
    attempts = {
        p["metadata"]["labels"].get("kubetune.io/attempt")
        for p in trial_pods(control_plane, operator_ns, "killed")
    }
    assert len(attempts) >= 1


def test_sigterm_reaches_the_runner_as_pid_1_which_exits_terminated_after_its_write(
    control_plane, operator_ns, real_node, e2e_images, s3_server, bucket, e2e_site
):
    # The runner is the trial container's PID 1, for which the kernel drops a signal that
    # has no handler: only the runner's own SIGTERM handler can end it. It finishes the
    # result being written and exits with exit_codes.TERMINATED.
    counted_experiment(e2e_site, "sigterm", 1, 12)
    container = running_trial_container(control_plane, operator_ns, s3_server, bucket, "sigterm")
    termed = real_node.ctr("tasks", "kill", "-s", "SIGTERM", container)  # to the task's PID 1
    assert termed.returncode == 0, termed.stderr
    e2e_site.wait("sigterm")
    ended = [
        st["state"]["terminated"]
        for p in trial_pods(control_plane, operator_ns, "sigterm")
        for st in p["status"].get("containerStatuses") or []
        if st["name"] == "trial" and str(st.get("containerID", "")).endswith(container)
    ]
    assert [t["exitCode"] for t in ended] == [exit_codes.TERMINATED], ended
    (lines,) = results_of(s3_server, bucket, "sigterm").values()  # every line whole JSON
    assert lines[-1]["step"] == 11 and lines[-1]["start"] >= 2, lines


def test_operator_pod_deleted_mid_experiment_loses_nothing_and_runs_nothing_twice(
    control_plane, operator_ns, real_node, e2e_images, s3_server, bucket, e2e_site
):
    counted_experiment(e2e_site, "handover", 2, 20)

    def both_trials_running() -> bool:
        pods = trial_pods(control_plane, operator_ns, "handover")
        running = [
            p
            for p in pods
            for st in p["status"].get("containerStatuses") or []
            if st["name"] == "trial" and "running" in st["state"]
        ]
        return len(running) == 2

    wait_for(both_trials_running, 300, "both trials running", 1)
    out = control_plane.kubectl("get", "pods", "-n", operator_ns, "-o", "json").stdout
    (operator_pod,) = [
        p["metadata"]["name"]
        for p in json.loads(out)["items"]
        if p["metadata"]["name"].startswith("kubetune-")
    ]
    control_plane.kubectl("delete", "pod", "-n", operator_ns, operator_pod, "--wait=false")
    wait_for(
        lambda: (
            operator_ready(control_plane, operator_ns)
            and operator_pod
            not in control_plane.kubectl("get", "pods", "-n", operator_ns, "-o", "name").stdout
        ),
        300,
        "the Deployment's next operator pod Ready",
        1,
    )
    status = e2e_site.wait("handover")
    assert status["phase"] == "Succeeded", status
    pods = trial_pods(control_plane, operator_ns, "handover")
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]  # one pod per trial, ever
    reports = results_of(s3_server, bucket, "handover")
    assert len(reports) == 2
    for lines in reports.values():
        assert [line["step"] for line in lines] == list(range(20))


def test_two_gpu_trial_sees_exactly_the_devices_the_plugin_allocated(
    control_plane, operator_ns, real_node, e2e_images, s3_server, bucket, e2e_site
):
    e2e_site.trainable_experiment(
        "gpus",
        "gpu_env",
        resources={"bundles": [{"CPU": 0.2, "GPU": 2}]},
    )
    status = e2e_site.wait("gpus")
    assert status["phase"] == "Succeeded", status
    (lines,) = results_of(s3_server, bucket, "gpus").values()
    devices = lines[-1]["nvidia_visible_devices"].split(",")
    # exactly the two devices the plugin allocated to this container, as it named them
    assert devices in real_node.gpu_allocations(), real_node.gpu_allocations()
    assert len(devices) == 2 and set(devices) <= {f"GPU-{i}" for i in range(4)}, lines[-1]
    # the plugin sets no CUDA_VISIBLE_DEVICES (as NVIDIA's): the runner numbers the
    # container's own devices 0..n-1, which is what CUDA sees under the NVIDIA runtime
    assert lines[-1]["cuda_visible_devices"] == "0,1", lines[-1]
    (pod,) = trial_pods(control_plane, operator_ns, "gpus")
    (trial,) = [c for c in pod["spec"]["containers"] if c["name"] == "trial"]
    assert trial["resources"]["limits"]["nvidia.com/gpu"] == "2"
    # the trial container sampled its GPUs (only it sees them) and the sidecar uploaded the
    # sample; the fake plugin's devices come with no nvidia-smi, which the sample says
    (key,) = [k for k in results_of(s3_server, bucket, "gpus")]
    body = s3_server.client().get_object(Bucket=bucket, Key=key.replace("result.json", "gpu.json"))
    sample = json.loads(body["Body"].read())
    assert sample["gpus"] == [] and "no GPU visible: 2 requested" in sample["error"], sample


def test_a_cpu_trial_gets_no_gpu_whatever_its_image_says(
    control_plane, operator_ns, real_node, e2e_images, s3_server, bucket, e2e_site
):
    e2e_site.trainable_experiment(
        "nogpu",
        "gpu_env",
        resources={"bundles": [{"CPU": 0.2}]},
    )
    status = e2e_site.wait("nogpu")
    assert status["phase"] == "Succeeded", status
    (lines,) = results_of(s3_server, bucket, "nogpu").values()
    # under NVIDIA's runtime, "void" hands the container no device even from a CUDA image
    assert lines[-1]["nvidia_visible_devices"] == "void", lines[-1]
    assert lines[-1]["cuda_visible_devices"] == "<unset>", lines[-1]
