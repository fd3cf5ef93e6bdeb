"""Benchmark: the operator through the real API server with emulated trial pods.

    .venv/bin/python bench/bench_operator.py [--trials 1000] [--concurrent 50] [--workers 1]

Each trial's pod is emulated by the test kubelet; its behaviour plays the sidecar (one result
appended to S3 and patched into TuneTrial.status.report with a decision gate). Prints wall
time, the operator's API writes per trial (its own count, from /metrics), the largest object
(experiment or trial) in bytes, the decision latency and the operator's peak memory (VmHWM).

Decision latency is measured twice: end to end, as a trial sees it (the fake sidecar's status
patch with the gate returned -> the verdict seen by a watch on TuneTrials in this process:
exact p50/p99/max), and inside the operator (its histogram: trial event received -> verdict
written; a bucket bound).

``--workers N`` makes every trial N pods (a multi-worker trial, ``resources.workers``): rank
0's emulated pod plays the sidecar, the others just run for ``--duration``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

from _cluster import (
    BenchCluster,
    api_writes_by_kind,
    quantile,
    run_experiment,
    scrape,
    worker_resources,
)


def p99_from_histogram(metrics: dict[str, float], name: str) -> float | None:
    buckets = []
    for key, value in metrics.items():
        m = re.fullmatch(name + r'_bucket\{le="([^"]+)"\}', key)
        if m:
            buckets.append((float(m.group(1)), value))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    for le, count in buckets:
        if count >= 0.99 * total:
            return le
    return None


class VerdictWatch(threading.Thread):
    """Records when each TuneTrial's first verdict is seen through a watch."""

    def __init__(self, api: object, namespace: str) -> None:
        super().__init__(daemon=True)
        self.api, self.namespace = api, namespace
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        from kubernetes import client, watch

        from tests.cluster.operator_helpers import GROUP, VERSION

        custom = client.CustomObjectsApi(self.api)
        args = (GROUP, VERSION, self.namespace, "tunetrials")
        rv = None
        while not self.stop.is_set():
            try:
                if rv is None:  # from now on (a full list of 10,000 trials would distort this)
                    rv = custom.list_namespaced_custom_object(*args, limit=1)["metadata"][
                        "resourceVersion"
                    ]
                for event in watch.Watch().stream(
                    custom.list_namespaced_custom_object,
                    *args,
                    resource_version=rv,
                    timeout_seconds=30,
                ):
                    obj = event["object"]
                    if event["type"] == "ERROR":  # 410 Gone: start again from now
                        rv = None
                        break
                    rv = obj["metadata"]["resourceVersion"]
                    name = obj["metadata"]["name"]
                    if (obj.get("spec") or {}).get("verdict") and name not in self.seen:
                        self.seen[name] = time.monotonic()
                    if self.stop.is_set():
                        return
            except Exception:  # the stream broke (or the control plane stops): watch again
                time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--duration", type=float, default=0.5, help="seconds each pod runs")
    parser.add_argument("--workers", type=int, default=1, help="pods per trial")
    args = parser.parse_args()

    from kubernetes import client

    from tests.cluster.operator_helpers import GROUP, VERSION, FakeSidecar, experiment
    from tests.testenv.kubelet import NodeSpec
    from tests.testenv.kubelet_emulated import EmulatedExit

    with BenchCluster() as cluster:
        s3 = cluster.start_s3()
        ns, bucket = "bench", "bench"
        cluster.experiment_namespace(ns, bucket)
        api = cluster.api
        custom = client.CustomObjectsApi(api)
        reported: dict[str, float] = {}

        class TimedSidecar(FakeSidecar):
            def __call__(self, epod: object) -> object:
                meta = epod.pod["metadata"]  # type: ignore[attr-defined]
                if meta["labels"].get("kubetune.io/rank", "0") != "0":
                    return EmulatedExit(0, self.duration)  # a worker: rank 0 reports
                out = super().__call__(epod)
                owner = next(o["name"] for o in meta["ownerReferences"])
                reported.setdefault(owner, time.monotonic())
                return out

        verdicts = VerdictWatch(api, ns)
        verdicts.start()
        sidecar = TimedSidecar(
            api,
            s3.client(),
            bucket,
            lambda c: [{"loss": (c["x"] - 3) ** 2}],
            duration=args.duration,
            gate=True,
        )
        cluster.start_kubelet(
            nodes=[NodeSpec(cpu="64", memory="256Gi", pods=500)],
            mode="emulated",
            behaviour=sidecar,
            root_dir=Path(tempfile.mkdtemp(prefix="bench-operator-")),
            workers=16,
        )
        proc, metrics_port = cluster.start_operator(ns, "bench-operator.log")
        body = experiment(
            "bench",
            bucket,
            s3.endpoint_url,
            numSamples=args.trials,
            maxConcurrentTrials=args.concurrent,
        )
        if args.workers > 1:
            body["spec"]["resources"] = worker_resources(args.workers, 0.1, "PACK")
        exp, phase, wall = run_experiment(custom, ns, body, proc, timeout=3600, poll=0.5)
        time.sleep(1.0)  # the last verdicts' watch events
        verdicts.stop.set()
        latencies = [verdicts.seen[n] - t for n, t in reported.items() if n in verdicts.seen]
        metrics = scrape(metrics_port)
        writes = sum(api_writes_by_kind(metrics).values())
        trials = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "tunetrials")["items"]
        largest = max(len(json.dumps(o)) for o in [exp, *trials])
        hwm = next(
            int(line.split()[1])
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            if line.startswith("VmHWM")
        )
        head = s3.client().get_object(Bucket=bucket, Key="bench/experiment_state.json")
        head_bytes = head["Body"].read()
        segments = len(json.loads(head_bytes)["engine"].get("segments") or [])
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        p99 = p99_from_histogram(metrics, "kubetune_decision_latency_seconds")
        print(
            f"trials: {args.trials} x 1 result at {args.concurrent} concurrent,"
            f" {args.workers} pod(s) each -> {phase}"
        )
        print(f"wall time: {wall:.1f} s ({args.trials / wall:.1f} trials/s)")
        print(f"operator API writes: {writes:.0f} ({writes / args.trials:.2f} per trial)")
        print(
            f"largest object: {largest} bytes (experiment status: "
            f"{len(json.dumps(exp.get('status')))} bytes)"
        )
        if latencies:
            print(
                f"decision latency end to end ({len(latencies)} gated results): "
                f"p50 {quantile(latencies, 0.5):.3f} s, p99 {quantile(latencies, 0.99):.3f} s, "
                f"max {max(latencies):.3f} s"
            )
        print(
            f"engine snapshot: head {len(head_bytes)} bytes + {segments} segments of finished"
            " trials (each written once)"
        )
        print(f"decision latency inside the operator p99: <= {p99} s (histogram bucket)")
        print(f"operator peak memory (VmHWM): {hwm / 1024:.0f} MiB")
        print(f"operator CPU time: {cpu_s:.1f} s ({cpu_s / wall:.0%} of a core)")
        return 0 if phase == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
