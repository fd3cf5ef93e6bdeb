"""Experiments on the real node (shared by the e2e modules): examples/quadratic.yaml with the
test's image and storage, applied with kubectl, and waited for. The ``e2e_site`` fixture is a
:class:`Site` of the session's control plane, namespace, node, images and bucket."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from tests.e2e.chart import REPO
from tests.testenv.helpers import wait_for


@dataclass(frozen=True)
class Site:
    """Where the e2e experiments run: the operator's namespace ``ns`` on the control plane
    ``cp`` with the real ``node``, the project's ``images`` and ``bucket`` on ``s3_server``."""

    cp: Any
    ns: str
    node: Any
    images: Any
    s3_server: Any
    bucket: str

    def experiment(self, **changes: Any) -> dict[str, Any]:
        """examples/quadratic.yaml with the test's image and storage (and CHANGES to spec),
        applied."""
        port = int(self.s3_server.endpoint_url.rsplit(":", 1)[1].rstrip("/"))
        manifest = yaml.safe_load((REPO / "examples" / "quadratic.yaml").read_text())
        manifest["spec"]["trainable"]["image"] = self.images.example
        manifest["spec"]["storage"].update(
            bucket=self.bucket,
            endpoint=f"http://{self.node.relay_to_host(port)}",
            region=self.s3_server.region,
        )
        name = changes.pop("name", "quadratic")
        manifest["metadata"]["name"] = name
        manifest["spec"].update(changes)
        self.cp.kubectl("apply", "-n", self.ns, "-f", "-", input=yaml.safe_dump(manifest))
        return dict(manifest)

    def trainable_experiment(self, name: str, entrypoint: str, **changes: Any) -> dict[str, Any]:
        """:meth:`experiment` NAME of ``trainables:ENTRYPOINT`` (tests/e2e/trainables.py in the
        example image): one trial of ``x=1`` minimising ``loss``, unless CHANGES to spec say
        otherwise."""
        spec = {
            "paramSpace": {"x": {"choice": [1]}},
            "tuneConfig": {"metric": "loss", "mode": "min", "numSamples": 1},
            **changes,
        }
        trainable = {"image": self.images.example, "entrypoint": f"trainables:{entrypoint}"}
        return self.experiment(name=name, trainable=trainable, **spec)

    def wait(self, name: str, timeout: int = 600) -> dict[str, Any]:
        """Experiment NAME's status once it has Succeeded or Failed."""

        def done() -> dict[str, Any] | None:
            out = self.cp.kubectl("get", "-n", self.ns, f"tex/{name}", "-o", "json").stdout
            status = json.loads(out).get("status") or {}
            return status if status.get("phase") in ("Succeeded", "Failed") else None

        try:
            result: dict[str, Any] = wait_for(done, timeout, f"experiment {name} to finish", 2)
        except AssertionError:
            out = self.cp.kubectl(
                "get", "-n", self.ns, "tex,ttr,pods", "-o", "wide", check=False
            ).stdout
            raise AssertionError(f"{out}\n{self.node.log_tails(15)}") from None
        return result
