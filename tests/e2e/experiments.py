"""Experiments on the real node (shared by the e2e modules): examples/quadratic.yaml with the
test's image and storage, applied with kubectl, and waited for."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.e2e.chart import REPO
from tests.testenv.helpers import wait_for


def experiment(
    cp: Any, ns: str, node: Any, images: Any, s3_server: Any, bucket: str, **changes: Any
) -> dict[str, Any]:
    """examples/quadratic.yaml with the test's image and storage (and CHANGES to spec), applied."""
    port = int(s3_server.endpoint_url.rsplit(":", 1)[1].rstrip("/"))
    manifest = yaml.safe_load((REPO / "examples" / "quadratic.yaml").read_text())
    manifest["spec"]["trainable"]["image"] = images.example
    manifest["spec"]["storage"].update(
        bucket=bucket, endpoint=f"http://{node.relay_to_host(port)}", region=s3_server.region
    )
    name = changes.pop("name", "quadratic")
    manifest["metadata"]["name"] = name
    manifest["spec"].update(changes)
    cp.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(manifest))
    return dict(manifest)


def trainable_experiment(
    cp: Any,
    ns: str,
    node: Any,
    images: Any,
    s3_server: Any,
    bucket: str,
    name: str,
    entrypoint: str,
    **changes: Any,
) -> dict[str, Any]:
    """:func:`experiment` NAME of ``trainables:ENTRYPOINT`` (tests/e2e/trainables.py in the
    example image): one trial of ``x=1`` minimising ``loss``, unless CHANGES to spec say
    otherwise."""
    spec = {
        "paramSpace": {"x": {"choice": [1]}},
        "tuneConfig": {"metric": "loss", "mode": "min", "numSamples": 1},
        **changes,
    }
    trainable = {"image": images.example, "entrypoint": f"trainables:{entrypoint}"}
    return experiment(
        cp, ns, node, images, s3_server, bucket, name=name, trainable=trainable, **spec
    )


def wait_experiment(cp: Any, ns: str, name: str, node: Any, timeout: int = 600) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        out = cp.kubectl("get", "-n", ns, f"tex/{name}", "-o", "json").stdout
        status = json.loads(out).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    try:
        result: dict[str, Any] = wait_for(done, timeout, f"experiment {name} to finish", 2)
    except AssertionError:
        out = cp.kubectl("get", "-n", ns, "tex,ttr,pods", "-o", "wide", check=False).stdout
        raise AssertionError(f"{out}\n{node.log_tails(15)}") from None
    return result
