"""Benchmark: the quickstart three ways, in the same run, on this machine.

    .venv/bin/python bench/bench_submit.py

1. local mode: ``python examples/quickstart.py``;
2. ``kubectl apply`` of its manifest (examples/quickstart.yaml with the test image, the
   examples on the trial's pythonPath and the test S3 storage);
3. ``kubetune submit examples/quickstart.py`` (the code shipped through storage).

Both cluster runs use the real control plane, the real operator, the process kubelet (pods as
local processes: sidecar, then trial) and the real S3 server of tests/testenv. Prints for each:
time from the command's start to the first stored result (``result.json`` on disk or in S3) and
to the end (local: the process exits; cluster: the experiment is Succeeded and, for submit, the
ResultGrid was read back), and the best config, which must agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GROUP, VERSION = "kubetune.io", "v1alpha1"


def timed(
    cmd: list[str], env: dict[str, str], first: Any, done: Any = None, cwd: Path = REPO
) -> dict[str, Any]:
    began = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    first_at = None
    while True:
        if first_at is None and first():
            first_at = time.monotonic() - began
        if proc.poll() is not None and (done is None or done()):
            break
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {err.decode()[-3000:]}")
    if first_at is None and first():
        first_at = time.monotonic() - began
    return {"first_result_s": first_at, "wall_s": time.monotonic() - began, "stdout": out.decode()}


def main() -> int:
    from kubernetes import client, config

    from tests.testenv.controlplane import ControlPlane
    from tests.testenv.helpers import s3_secret
    from tests.testenv.kubelet import TestKubelet
    from tests.testenv.s3 import S3Server

    cp = ControlPlane.start()
    s3 = S3Server.start()
    kubelet = None
    operator = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    try:
        cp.apply_crds(REPO / "crds", "tuneexperiments.kubetune.io", "tunetrials.kubetune.io")
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(cp.kubeconfig), client_configuration=cfg)
        api = client.ApiClient(cfg)
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        ns = "bench"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        s3_secret(api, ns, s3)
        bucket = "bench"
        s3c = s3.client()
        s3c.create_bucket(Bucket=bucket)
        kubelet = TestKubelet(cp.kubelet_kubeconfig, root_dir=tmp / "kubelet").start()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("KUBETUNE_", "AWS_"))},
            "KUBECONFIG": str(cp.kubeconfig),
            "HOME": str(tmp / "home"),
            "KUBETUNE_RESULTS_DIR": str(tmp / "local"),
            "KUBETUNE_S3_ENDPOINT_URL": s3.endpoint_url,
            "KUBETUNE_S3_REGION": s3.region,
            "KUBETUNE_S3_ADDRESSING_STYLE": "path",
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)
        log = open(tmp / "operator.log", "wb")  # noqa: SIM115 - closed with the process
        operator = subprocess.Popen(
            [
                *[sys.executable, "-m", "kubetune_operator", "--namespace", ns, "--standalone"],
                *["--liveness-port", "0", "--metrics-port", "0"],
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

        def stored_result(prefix: str) -> bool:
            listing = s3c.list_objects_v2(Bucket=bucket, Prefix=prefix)
            return any(o["Key"].endswith("/result.json") for o in listing.get("Contents", []))

        def phase(name: str) -> str | None:
            try:
                obj = custom.get_namespaced_custom_object(
                    GROUP, VERSION, ns, "tuneexperiments", name
                )
            except client.ApiException:
                return None
            return (obj.get("status") or {}).get("phase")

        rows: dict[str, dict[str, Any]] = {}
        # 1. local mode
        local_dir = tmp / "local"
        rows["local mode (python quickstart.py)"] = timed(
            [sys.executable, "examples/quickstart.py"],
            env,
            lambda: any(local_dir.glob("*/*/result.json")),
        )
        # 2. kubectl apply of the manifest
        doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
        doc["spec"]["trainable"].update(image="kubetune/test", pythonPath=[str(REPO / "examples")])
        doc["spec"]["storage"] = {
            "bucket": bucket,
            "prefix": "applied",
            "endpoint": s3.endpoint_url,
            "secretName": "s3",
            "addressingStyle": "path",
        }
        manifest = tmp / "quickstart.yaml"
        manifest.write_text(yaml.safe_dump(doc))
        name = doc["metadata"]["name"]
        began = time.monotonic()
        cp.kubectl("apply", "-n", ns, "-f", str(manifest))
        first_at = None
        while phase(name) not in ("Succeeded", "Failed"):
            if first_at is None and stored_result(f"applied/{name}/"):
                first_at = time.monotonic() - began
            time.sleep(0.1)
        status = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "tuneexperiments", name)
        rows["kubectl apply -f quickstart.yaml"] = {
            "first_result_s": first_at,
            "wall_s": time.monotonic() - began,
            "stdout": json.dumps(status["status"].get("bestTrial", {}).get("config")),
        }
        # 3. kubetune submit of the unchanged script
        submit_env = {
            **env,
            "KUBETUNE_NAMESPACE": ns,
            "KUBETUNE_STORAGE": f"s3://{bucket}/submitted",
            "KUBETUNE_STORAGE_SECRET": "s3",
            "KUBETUNE_IMAGE": "kubetune/test",
        }
        rows["kubetune submit quickstart.py"] = timed(
            [
                sys.executable,
                "-m",
                "kubetune.cli",
                "submit",
                "--working-dir",
                "",
                "examples/quickstart.py",
            ],
            submit_env,
            lambda: stored_result("submitted/"),
        )
        print(f"{'how':40} {'first result (s)':>17} {'wall (s)':>9}  best")
        for how, row in rows.items():
            best = next(
                (
                    ln
                    for ln in row["stdout"].splitlines()
                    if "best config" in ln or ln.startswith("{")
                ),
                row["stdout"].strip()[-120:],
            )
            first = "-" if row["first_result_s"] is None else f"{row['first_result_s']:.1f}"
            print(f"{how:40} {first:>17} {row['wall_s']:9.1f}  {best}")
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(10)
            except subprocess.TimeoutExpired:
                operator.kill()
        if kubelet is not None:
            kubelet.stop()
        s3.stop()
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
