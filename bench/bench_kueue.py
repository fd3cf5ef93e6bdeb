"""Benchmark: Kueue admission of one trial's pod group, on the real control plane.

    .venv/bin/python bench/bench_kueue.py [--workers 4] [--rounds 10]

A real Kueue (tests/testenv/kueue.py) with a ClusterQueue whose GPU quota fits one group;
the test kubelet (emulated pods, a node with room for every pod) runs what is admitted. Each
round creates one group of ``--workers`` one-GPU pods labelled as the operator labels a
multi-pod trial (``kubetune_operator.kueue.mark_attempt``), waits for all of them to run and
deletes them. Printed per round and as p50/max:

- create -> Admitted: the last pod created until the group's Workload has Admitted=True;
- Admitted -> all ungated: until Kueue has lifted the gate of every pod;
- Admitted -> all Running: until every pod is Running (the scheduler and the kubelet included);

and, for comparison, the same pods without a queue: create -> all Running. Times come from
polling the API server every 20 ms (pods, then Workloads), so each figure is +-20 ms or so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from _cluster import BenchCluster

POLL_S = 0.02


def pods_for(name: str, namespace: str, queue: str | None, workers: int) -> list[dict[str, Any]]:
    from kubetune_operator import kueue

    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{name}-{r}", "namespace": namespace, "labels": {"g": name}},
            "spec": {
                "restartPolicy": "Never",
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                "containers": [
                    {
                        "name": "w",
                        "image": "bench",
                        "resources": {
                            "requests": {"cpu": "100m"},
                            "limits": {"nvidia.com/gpu": "1"},
                        },
                    }
                ],
            },
        }
        for r in range(workers)
    ]
    if queue:
        kueue.mark_attempt(pods, queue, name)
    return pods


def one_round(cp: Any, namespace: str, name: str, queue: str | None, workers: int) -> dict:
    from kubetune_operator import kueue

    for pod in pods_for(name, namespace, queue, workers):
        status, body = cp.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
        assert status == 201, body
    created = time.monotonic()
    marks: dict[str, float] = {}
    deadline = created + 120
    while "running" not in marks:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: not all running after 120 s: {marks}")
        _, body = cp.request("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=g%3D{name}")
        pods = body.get("items") or []
        now = time.monotonic()
        if len(pods) == workers and all(not kueue.gated(p) for p in pods):
            marks.setdefault("ungated", now)
        if len(pods) == workers and all(p["status"].get("phase") == "Running" for p in pods):
            marks.setdefault("running", now)
        if queue and "admitted" not in marks:
            _, wls = cp.request(
                "GET", f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{namespace}/workloads"
            )
            for wl in (wls or {}).get("items") or []:
                if wl["metadata"]["name"] == name and kueue.workload_admission(wl)[0]:
                    marks["admitted"] = now
        time.sleep(POLL_S)
    cp.kubectl("delete", "pods", "-n", namespace, "-l", f"g={name}", "--wait=true")
    out = {"running": marks["running"] - created}
    if queue:
        out["admitted"] = marks["admitted"] - created
        out["ungated_after_admit"] = marks["ungated"] - marks["admitted"]
        out["running_after_admit"] = marks["running"] - marks["admitted"]
    return out


def summary(label: str, values: list[float]) -> str:
    return (
        f"{label:<28} p50 {statistics.median(values) * 1000:7.0f} ms"
        f"   max {max(values) * 1000:7.0f} ms   (n={len(values)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    from tests.testenv.kubelet import NodeSpec
    from tests.testenv.kubelet_emulated import EmulatedExit
    from tests.testenv.kueue import NAMESPACE_LABEL, Kueue, queue_objects

    with BenchCluster() as cluster:
        cp = cluster.cp
        kueue = Kueue.start(cp)
        cluster.on_exit(kueue.stop)
        print(
            f"control plane up in {cp.startup_seconds:.1f} s,"
            f" Kueue in {kueue.startup_seconds:.1f} s"
        )
        namespace = "bench-kueue"
        ns = {"metadata": {"name": namespace, "labels": {NAMESPACE_LABEL: "true"}}}
        cp.request("POST", "/api/v1/namespaces", ns)
        quota = {"cpu": "64", "memory": "256Gi", "nvidia.com/gpu": str(args.workers)}
        for body in queue_objects("bench", namespace, quota):
            cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(body))
        cluster.start_kubelet(
            nodes=[NodeSpec(gpus=args.workers * 2, cpu="64", memory="256Gi")],
            mode="emulated",
            behaviour=lambda pod: EmulatedExit(0, 3600.0),  # runs until deleted
        )
        time.sleep(2)  # the LocalQueue Active, the namespace label in Kueue's cache
        queued = [
            one_round(cp, namespace, f"g{i}", "bench", args.workers) for i in range(args.rounds)
        ]
        plain_ns = "bench-plain"
        cp.request("POST", "/api/v1/namespaces", {"metadata": {"name": plain_ns}})
        plain = [one_round(cp, plain_ns, f"p{i}", None, args.workers) for i in range(args.rounds)]
    print(
        f"{args.workers}-pod group, {args.rounds} rounds, quota for one group,"
        f" poll {POLL_S * 1000:.0f} ms"
    )
    for i, r in enumerate(queued):
        print(
            f"  round {i}: create->admitted {r['admitted'] * 1000:5.0f} ms, admitted->ungated "
            f"{r['ungated_after_admit'] * 1000:5.0f} ms, admitted->all running "
            f"{r['running_after_admit'] * 1000:5.0f} ms"
        )
    print(summary("create -> Admitted", [r["admitted"] for r in queued]))
    print(summary("Admitted -> all ungated", [r["ungated_after_admit"] for r in queued]))
    print(summary("Admitted -> all Running", [r["running_after_admit"] for r in queued]))
    print(summary("with Kueue: create -> Running", [r["running"] for r in queued]))
    print(summary("no queue: create -> Running", [r["running"] for r in plain]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
