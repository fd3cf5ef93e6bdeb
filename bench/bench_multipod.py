"""Benchmark: multi-worker trials through the real API server, process-mode pods with the
real sidecars (the test kubelet, one fake node per worker), the all-reduce trainable of
tests/allreduce.py.

    .venv/bin/python bench/bench_multipod.py [--workers 4] [--trials 3]

Prints, per trial, the time from its pods' creation (the first pod's ADDED event seen by a
watch in this process) to every worker running (the last trial container reported running),
and the operator's API writes per trial (its own count, from /metrics). ``--workers 1`` gives
the single-pod figures of the same trainable to compare with.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_operator import free_port, quantile, scrape  # noqa: E402


class PodWatch(threading.Thread):
    """(trial, attempt) -> first pod seen, and when each pod's trial container first ran."""

    def __init__(self, api: object, namespace: str) -> None:
        super().__init__(daemon=True)
        self.api, self.namespace = api, namespace
        self.created: dict[tuple[str, str], float] = {}
        self.running: dict[str, tuple[tuple[str, str], float]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        from kubernetes import client, watch

        core = client.CoreV1Api(self.api)
        while not self.stop.is_set():
            try:
                for event in watch.Watch().stream(
                    core.list_namespaced_pod, self.namespace, timeout_seconds=10
                ):
                    pod = event["object"]
                    now = time.monotonic()
                    labels = pod.metadata.labels or {}
                    key = (
                        labels.get("kubetune.io/trial", ""),
                        labels.get("kubetune.io/attempt", ""),
                    )
                    self.created.setdefault(key, now)
                    for cs in (pod.status and pod.status.container_statuses) or []:
                        if cs.name == "trial" and cs.state and cs.state.running:
                            self.running.setdefault(pod.metadata.name, (key, now))
                    if self.stop.is_set():
                        return
            except Exception:
                time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()

    from kubernetes import client, config

    from tests.cluster.operator_helpers import GROUP, VERSION, experiment
    from tests.testenv.controlplane import ControlPlane
    from tests.testenv.kubelet import NodeSpec, TestKubelet
    from tests.testenv.s3 import S3Server

    cp = ControlPlane.start()
    s3 = S3Server.start()
    procs: list[subprocess.Popen[bytes]] = []
    kubelet = None
    try:
        cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(cp.kubeconfig), client_configuration=cfg)
        api = client.ApiClient(cfg)
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        ns = "bench"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        core.create_namespaced_secret(
            ns,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="s3"),
                string_data={
                    "AWS_ACCESS_KEY_ID": s3.access_key,
                    "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                },
            ),
        )
        s3.client().create_bucket(Bucket="bench")
        kubelet = TestKubelet(
            cp.kubelet_kubeconfig,
            nodes=[NodeSpec(cpu="2") for _ in range(args.workers)],
            root_dir=Path(tempfile.mkdtemp(prefix="bench-multipod-")),
        ).start()
        watcher = PodWatch(api, ns)
        watcher.start()
        metrics_port = free_port()
        env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig)}
        log = open(Path(tempfile.gettempdir()) / "bench-multipod.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubetune_operator",
                "--namespace",
                ns,
                "--standalone",
                "--liveness-port",
                "0",
                "--metrics-port",
                str(metrics_port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        procs.append(proc)
        body = experiment("bench", "bench", s3.endpoint_url, numSamples=args.trials)
        body["spec"]["trainable"] = {
            "image": "kubetune/test",
            "entrypoint": "tests.allreduce:trainer",
            "pythonPath": [str(REPO)],
        }
        body["spec"]["paramSpace"] = {"train_loop_config": {"steps": {"constant": 2}}}
        body["spec"]["tuneConfig"] = {
            "metric": "sum",
            "mode": "max",
            "numSamples": args.trials,
            "maxConcurrentTrials": 1,
        }
        if args.workers > 1:
            body["spec"]["resources"] = {
                "bundles": [{}] + [{"CPU": 0.5}] * args.workers,
                "strategy": "STRICT_SPREAD",
                "workers": args.workers,
            }
        began = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "tuneexperiments", body)
        while True:
            exp = custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, "tuneexperiments", "bench"
            )
            phase = (exp.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                break
            if proc.poll() is not None or time.monotonic() - began > 900:
                raise RuntimeError(f"operator exited or timed out (phase {phase})")
            time.sleep(0.2)
        wall = time.monotonic() - began
        watcher.stop.set()
        metrics = scrape(metrics_port)
        writes = sum(v for k, v in metrics.items() if k.startswith("kubetune_api_writes_total{"))
        by_kind = {
            k.split("{", 1)[1].rstrip("}"): v
            for k, v in metrics.items()
            if k.startswith("kubetune_api_writes_total{")
        }
        latencies = []
        for key, t0 in watcher.created.items():
            runs = [t for k, t in watcher.running.values() if k == key]
            if len(runs) == args.workers:
                latencies.append(max(runs) - t0)
        print(f"trials: {args.trials} x {args.workers} worker pod(s), one at a time -> {phase}")
        print(f"wall time: {wall:.1f} s")
        if latencies:
            print(
                f"pods created -> all {args.workers} workers running ({len(latencies)} attempts):"
                f" p50 {quantile(latencies, 0.5):.2f} s, max {max(latencies):.2f} s"
            )
        print(f"operator API writes: {writes:.0f} ({writes / args.trials:.1f} per trial)")
        print(f"  by kind: {by_kind}")
        return 0 if phase == "Succeeded" else 1
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if kubelet is not None:
            kubelet.stop()
        s3.stop()
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
