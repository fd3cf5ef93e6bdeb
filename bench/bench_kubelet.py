"""Pod create -> Running latency through the test kubelet on the real control plane.

    .venv/bin/python -m bench.bench_kubelet [--pods 100] [--command sleep|python|true]
                                            [--mode process|emulated|real] [--interval 0]

Starts a control plane (tests/testenv/controlplane.py; the binaries must be built) and a
test kubelet with one node, creates the pods one after the other (``--interval`` seconds
apart) and measures, per pod, from just before its create request to the first watch event
that shows it Running (for ``true``, which may finish first: Running or Succeeded). Prints
p50, p90, p99 and max, and the same for create -> scheduled (nodeName set).

``--mode real`` (root) runs the pods in real containers on tests/testenv/node.py's node
(containerd + runc + kubelet v1.36.3) from the Debian base image (tests/testenv/images.py),
pulled from a loopback registry before the clock starts, and prints the peak resident memory
of the node's own processes (containerd, kubelet, device plugin; shims and pods not counted).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.testenv.controlplane import ControlPlane
from tests.testenv.kubelet import NodeSpec, TestKubelet
from tests.testenv.kubelet_api import KubeRest, pod_path

COMMANDS = {
    "sleep": ["sleep", "300"],
    "python": ["python", "-c", "import time; time.sleep(300)"],
    "true": ["true"],
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def summary(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"{name}: n={len(ms)} p50={percentile(ms, 50):.0f} ms  p90={percentile(ms, 90):.0f} ms"
        f"  p99={percentile(ms, 99):.0f} ms  max={max(ms):.0f} ms"
        f"  mean={statistics.mean(ms):.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--command", choices=sorted(COMMANDS), default="sleep")
    parser.add_argument("--mode", choices=["process", "emulated", "real"], default="process")
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    cp = ControlPlane.start()
    kubelet: TestKubelet | None = None
    real: Any = None
    image = "kubetune/bench"
    try:
        if args.mode == "real":
            real, image = _start_real_node(cp, args.pods)
            api: KubeRest = KubeRest.from_kubeconfig(cp.kubeconfig)
        else:
            kubelet = TestKubelet(
                cp.kubelet_kubeconfig,
                nodes=[NodeSpec(name="bench-node", pods=args.pods + 10, cpu="1000")],
                mode=args.mode,
            ).start()
            api = kubelet.api
        ns = "bench-kubelet"
        api.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        deadline = time.monotonic() + 30
        while True:
            try:
                api.get(f"/api/v1/namespaces/{ns}/serviceaccounts/default")
                api.get(f"/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

        created: dict[str, float] = {}
        scheduled: dict[str, float] = {}
        running: dict[str, float] = {}
        all_running = threading.Event()
        want = {"Running"} if args.command != "true" else {"Running", "Succeeded"}
        listing = api.get(pod_path(ns))
        stream = api.watch(pod_path(ns), resourceVersion=listing["metadata"]["resourceVersion"])

        def watch() -> None:
            for event in stream:
                pod: dict[str, Any] = event.get("object") or {}
                name = pod.get("metadata", {}).get("name", "")
                now = time.monotonic()
                if pod.get("spec", {}).get("nodeName") and name not in scheduled:
                    scheduled[name] = now
                if (pod.get("status") or {}).get("phase") in want and name not in running:
                    running[name] = now
                    if len(running) == args.pods:
                        all_running.set()
                        return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        began = time.monotonic()
        for i in range(args.pods):
            name = f"p{i:04d}"
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "main",
                            "image": image,
                            "command": COMMANDS[args.command],
                        }
                    ],
                },
            }
            created[name] = time.monotonic()
            api.create(pod_path(ns), body)
            if args.interval:
                time.sleep(args.interval)
        ok = all_running.wait(120 if args.mode != "real" else 600)
        total = time.monotonic() - began
        stream.close()
        if not ok:
            print(f"only {len(running)}/{args.pods} pods reached Running", file=sys.stderr)
            return 1
        to_running = [running[n] - created[n] for n in created]
        to_scheduled = [scheduled[n] - created[n] for n in created if n in scheduled]
        if args.json:
            print(
                json.dumps(
                    {
                        "pods": args.pods,
                        "command": args.command,
                        "mode": args.mode,
                        "p50_ms": percentile(to_running, 50) * 1000,
                        "p99_ms": percentile(to_running, 99) * 1000,
                        "max_ms": max(to_running) * 1000,
                        "total_s": total,
                    }
                )
            )
        else:
            print(
                f"{args.pods} pods, mode={args.mode}, command={' '.join(COMMANDS[args.command])},"
                f" interval={args.interval}s; all Running {total:.2f} s after the first create"
            )
            print(summary("create -> Running  ", to_running))
            print(summary("create -> scheduled", to_scheduled))
        if real is not None:
            rss = real.peak_rss_kib()
            print("peak RSS: " + ", ".join(f"{k} {v / 1024:.0f} MiB" for k, v in rss.items()))
        return 0
    finally:
        if kubelet is not None:
            kubelet.stop()
        if real is not None:
            real.stop()
            real.registry.stop()
        cp.stop()


def _start_real_node(cp: ControlPlane, pods: int) -> tuple[Any, str]:
    import tempfile

    from tests.testenv import images
    from tests.testenv.node import RealNode

    work = Path(tempfile.mkdtemp(prefix="bench-realnode-"))
    images.build_all()
    registry = images.Registry.start(work / "registry")
    node = RealNode.start(cp, registry.host, registry.push(images.PAUSE), work / "node")
    node.registry = registry  # type: ignore[attr-defined]
    image = registry.push(images.base_image())
    # Pull once before the clock starts (a cluster's node has its images cached too).
    node.ctr("images", "pull", "--plain-http", image)
    return node, image


if __name__ == "__main__":
    sys.exit(main())
