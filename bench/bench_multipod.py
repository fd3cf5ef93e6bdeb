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
import sys
import tempfile
import threading
import time
from pathlib import Path

from _cluster import (
    REPO,
    BenchCluster,
    api_writes_by_kind,
    quantile,
    run_experiment,
    scrape,
    worker_resources,
)


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

    from kubernetes import client

    from tests.cluster.operator_helpers import experiment
    from tests.testenv.kubelet import NodeSpec

    with BenchCluster() as cluster:
        s3 = cluster.start_s3()
        ns = "bench"
        cluster.experiment_namespace(ns, "bench")
        api = cluster.api
        custom = client.CustomObjectsApi(api)
        cluster.start_kubelet(
            nodes=[NodeSpec(cpu="2") for _ in range(args.workers)],
            root_dir=Path(tempfile.mkdtemp(prefix="bench-multipod-")),
        )
        watcher = PodWatch(api, ns)
        watcher.start()
        proc, metrics_port = cluster.start_operator(ns, "bench-multipod.log")
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
            body["spec"]["resources"] = worker_resources(args.workers, 0.5, "STRICT_SPREAD")
        _, phase, wall = run_experiment(custom, ns, body, proc, timeout=900, poll=0.2)
        watcher.stop.set()
        by_kind = api_writes_by_kind(scrape(metrics_port))
        writes = sum(by_kind.values())
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


if __name__ == "__main__":
    sys.exit(main())
