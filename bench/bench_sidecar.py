"""The sidecar's figures: checkpoint upload throughput, idle cost, result -> status latency.

    .venv/bin/python -m bench.bench_sidecar [--size-mib 512] [--results 300] [--rate 20]
                                            [--idle-s 20] [--skip-pod]

1. Upload: one checkpoint directory (one large file plus 16 files of 8 MiB, ``--size-mib``
   in all) to the real S3 server (SeaweedFS on loopback), in one run: reading the bytes from
   disk, a plain ``boto3`` ``upload_file`` per file at default settings, and the sidecar's
   transfer (``S3Storage.put_files`` with the sidecar's TransferConfig). Prints MB/s and the
   sidecar's ratio to each limit (goal: >= 90% of the binding one; on one machine the
   S3 server, not the disk, binds).
2. A real trial pod (``build_trial_pod``, the test kubelet, the real control plane): the
   trainable writes ``--results`` results at ``--rate`` per second, each stamped with the
   time it was reported; a watch on the TuneTrial records when each first shows up in
   ``status.report.results``: p50/p99/max latency (goal p99 < 1 s). Then the trial idles for
   ``--idle-s`` seconds while the sidecar process's CPU time and RSS are sampled from /proc
   (goal < 1% of a core, < 80 MiB).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


# -- the trainable the pod runs (imported by the trial process) ----------------------------
def bench_trial(config: dict[str, Any]) -> None:
    from kubetune.air import session

    period = 1.0 / config["rate"]
    next_at = time.time()
    for i in range(config["results"]):
        next_at += period
        time.sleep(max(0.0, next_at - time.time()))
        session.report({"i": i, "t_written": time.time()})
    marker = config.get("idle_marker")
    if marker:
        Path(marker).write_text(str(time.time()))
    time.sleep(config["idle_s"])


# -- 1. upload throughput ------------------------------------------------------------------
def make_checkpoint(root: Path, size_mib: int) -> list[Path]:
    root.mkdir(parents=True)
    block = os.urandom(MiB)
    files = []
    small = 16
    sizes = [(f"shard-{k:02d}.bin", 8) for k in range(small)]
    sizes.append(("model.bin", max(8, size_mib - 8 * small)))
    for name, mib in sizes:
        path = root / name
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(block)
        files.append(path)
    return files


def bench_upload(size_mib: int) -> dict[str, float]:
    from kubetune.sidecar.core import open_trial_storage
    from tests.testenv.s3 import S3Server

    s3 = S3Server.start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sidecar-"))
    try:
        files = make_checkpoint(tmp / "checkpoint_000000", size_mib)
        total = sum(p.stat().st_size for p in files)
        client = s3.client()
        client.create_bucket(Bucket="bench")

        began = time.perf_counter()
        for p in files:
            with open(p, "rb") as f:
                while f.read(8 * MiB):
                    pass
        disk = total / (time.perf_counter() - began)

        began = time.perf_counter()
        for p in files:
            client.upload_file(str(p), "bench", f"plain/{p.name}")
        plain = total / (time.perf_counter() - began)

        for key, value in s3.env().items():
            os.environ.setdefault(key, value)
        os.environ["KUBETUNE_S3_ENDPOINT_URL"] = s3.endpoint_url
        os.environ["KUBETUNE_S3_ADDRESSING_STYLE"] = "path"
        storage = open_trial_storage("s3://bench/sidecar")
        pairs = [(str(p), f"checkpoint_000000/{p.name}") for p in files]
        began = time.perf_counter()
        storage.put_files(pairs)
        sidecar = total / (time.perf_counter() - began)
        return {"bytes": total, "disk": disk, "plain": plain, "sidecar": sidecar}
    finally:
        s3.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


# -- 2. a real pod -------------------------------------------------------------------------
def _find_sidecar_pid(trial: str) -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if b"kubetune.sidecar" not in cmdline or b"--probe" in cmdline:
                continue
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"KUBETUNE_SIDECAR_TRIAL={trial}".encode() in environ:
            return int(entry)
    return None


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_pod(results: int, rate: float, idle_s: float) -> dict[str, Any]:
    import threading

    from kubernetes import client, config, watch
    from kubetune_operator.pod import PodSettings, build_trial_pod

    from tests.testenv.controlplane import ControlPlane
    from tests.testenv.kubelet import TestKubelet
    from tests.testenv.s3 import S3Server

    cp = ControlPlane.start()
    s3 = S3Server.start()
    root = Path(tempfile.mkdtemp(prefix="bench-sidecar-pod-"))
    kubelet = TestKubelet(cp.kubelet_kubeconfig, root_dir=root / "kubelet").start()
    try:
        cp.apply_crds(REPO / "crds", "tuneexperiments.kubetune.io", "tunetrials.kubetune.io")
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(cp.kubeconfig), client_configuration=cfg)
        api = client.ApiClient(cfg)
        core: Any = client.CoreV1Api(api)
        custom: Any = client.CustomObjectsApi(api)
        ns = "bench"
        core.create_namespace({"metadata": {"name": ns}})
        deadline = time.monotonic() + 30
        while True:
            try:
                core.read_namespaced_config_map("kube-root-ca.crt", ns)
                break
            except client.exceptions.ApiException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        from tests.cluster.test_sidecar import _trial_rbac

        _trial_rbac(api, ns)
        core.create_namespaced_secret(
            ns,
            {
                "metadata": {"name": "s3"},
                "stringData": {
                    "AWS_ACCESS_KEY_ID": s3.access_key,
                    "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                },
            },
        )
        s3.client().create_bucket(Bucket="bench")
        marker = root / "idle"
        experiment = {
            "metadata": {"name": "bench", "namespace": ns, "uid": "x"},
            "spec": {
                "trainable": {
                    "image": "kubetune/bench",
                    "entrypoint": "bench.bench_sidecar:bench_trial",
                    "pythonPath": [str(REPO)],
                },
                "tuneConfig": {"metric": "i", "mode": "max", "chdirToTrialDir": False},
                "storage": {
                    "bucket": "bench",
                    "endpoint": s3.endpoint_url,
                    "region": s3.region,
                    "addressingStyle": "path",
                    "secretName": "s3",
                },
            },
        }
        trial = custom.create_namespaced_custom_object(
            "kubetune.io",
            "v1alpha1",
            ns,
            "tunetrials",
            {
                "apiVersion": "kubetune.io/v1alpha1",
                "kind": "TuneTrial",
                "metadata": {"name": "bench-0"},
                "spec": {
                    "experiment": "bench",
                    "trialId": "0",
                    "config": {
                        "results": results,
                        "rate": rate,
                        "idle_s": idle_s,
                        "idle_marker": str(marker),
                    },
                },
            },
        )
        latencies: dict[int, float] = {}
        stop = threading.Event()

        def watch_status() -> None:
            w = watch.Watch()
            for event in w.stream(
                custom.list_namespaced_custom_object,
                "kubetune.io",
                "v1alpha1",
                ns,
                "tunetrials",
                field_selector="metadata.name=bench-0",
                timeout_seconds=int(results / rate + idle_s + 120),
            ):
                now = time.time()
                obj = event["object"]
                report = (obj.get("status") or {}).get("report") or {}
                for r in report.get("results") or []:
                    i = r.get("i")
                    if isinstance(i, int) and i not in latencies:
                        latencies[i] = now - float(r["t_written"])
                if stop.is_set() or report.get("uploaded"):
                    w.stop()
                    return

        watcher = threading.Thread(target=watch_status, daemon=True)
        watcher.start()
        pod = build_trial_pod(experiment, trial, 0, PodSettings())
        core.create_namespaced_pod(ns, pod)
        pid = None
        deadline = time.monotonic() + 60 + results / rate
        while not marker.exists():
            if pid is None:
                pid = _find_sidecar_pid("bench-0")
            if time.monotonic() > deadline:
                raise TimeoutError("the trial never reached its idle phase")
            time.sleep(0.05)
        pid = pid or _find_sidecar_pid("bench-0")
        assert pid is not None, "sidecar process not found"
        time.sleep(2.0)  # let the last report and upload settle
        cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        rss = []
        while time.monotonic() - t0 < idle_s - 4:
            rss.append(_rss_mib(pid))
            time.sleep(0.5)
        cpu = (_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        kubelet.wait_for_phase(ns, pod["metadata"]["name"], timeout=120)
        watcher.join(30)
        stop.set()
        return {"latencies": latencies, "idle_cpu": cpu, "rss_mib": max(rss), "expected": results}
    finally:
        kubelet.stop()
        s3.stop()
        cp.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    sys.path.insert(0, str(REPO))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--results", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--skip-pod", action="store_true")
    args = parser.parse_args()

    up = bench_upload(args.size_mib)
    mb = 1e6
    print(f"checkpoint upload, {up['bytes'] / MiB:.0f} MiB (one large file + 16 x 8 MiB):")
    print(f"  read from disk          {up['disk'] / mb:8.1f} MB/s")
    print(f"  boto3 upload_file (def) {up['plain'] / mb:8.1f} MB/s")
    print(f"  sidecar put_files       {up['sidecar'] / mb:8.1f} MB/s")
    binding = min(up["disk"], up["plain"])
    print(
        f"  sidecar / boto3 default = {up['sidecar'] / up['plain']:.2f};"
        f" sidecar / disk read = {up['sidecar'] / up['disk']:.2f};"
        f" sidecar / binding limit (the lower of the two) = {up['sidecar'] / binding:.2f}"
        " (goal >= 0.90)"
    )
    if args.skip_pod:
        return 0
    pod = bench_pod(args.results, args.rate, args.idle_s)
    lat = list(pod["latencies"].values())
    print(f"result written -> visible in TuneTrial status ({len(lat)}/{pod['expected']} seen):")
    print(
        f"  p50 {percentile(lat, 50) * 1000:.0f} ms  p99 {percentile(lat, 99) * 1000:.0f} ms"
        f"  max {max(lat) * 1000:.0f} ms  (goal p99 < 1000 ms)"
    )
    print(
        f"sidecar idle: CPU {pod['idle_cpu'] * 100:.2f}% of a core (goal < 1%),"
        f" RSS {pod['rss_mib']:.1f} MiB (goal < 80 MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
