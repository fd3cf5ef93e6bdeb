"""The chart on the real node: `helm` against the test control plane and the operator
pod's readiness (shared by the e2e modules; the release itself is conftest's ``operator_ns``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kubetune"


def helm(cp: Any, *args: str) -> str:
    proc = subprocess.run(
        [str(cp.helm_path), *args],
        env={**os.environ, **cp.env()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def operator_ready(cp: Any, ns: str) -> bool:
    out = cp.kubectl("get", "pods", "-n", ns, "-o", "json").stdout
    return any(
        p["metadata"]["name"].startswith("kubetune-")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
        for p in json.loads(out)["items"]
    )
