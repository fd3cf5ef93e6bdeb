"""Fixtures of the end-to-end tests: the project's images in real containers on a real node.

Session-scoped, on top of tests/cluster/conftest.py's ``control_plane`` and ``s3_server``:
``e2e_images`` builds the images (tests.testenv.images; cached by buildah's layers and the
base's package list) and pushes them to a registry on loopback; ``real_node`` starts
containerd + kubelet joined to the control plane (tests.testenv.node) and removes everything it
made on exit, also when a test fails. Every test here is marked ``e2e``. They need root (this
machine's containers); without it, or without the built binaries, they are skipped with the
reason, except under CI, where they fail.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import (  # noqa: F401  (fixtures)
    _unavailable,
    control_plane,
    kube_api,
    namespace,
    s3_bucket,
    s3_server,
)
from tests.e2e.chart import CHART, helm, operator_ready
from tests.e2e.experiments import Site
from tests.testenv import build, images
from tests.testenv.helpers import s3_secret, wait_for
from tests.testenv.node import RealNode


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.cluster)


@dataclass
class E2EImages:
    registry: images.Registry
    operator: str
    trial: str
    example: str
    pause: str
    build_seconds: dict[str, float]


@pytest.fixture(scope="session")
def e2e_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EImages]:
    if os.geteuid() != 0:
        _unavailable("the e2e tests need root (containers, mounts, a bridge)")
    absent = [b.name for b in build.missing()]
    if absent:
        _unavailable(f"testenv binaries not built: {absent} (python -m tests.testenv.build)")
    seconds = images.build_all()
    registry = images.Registry.start(tmp_path_factory.mktemp("registry"))
    try:
        start = time.monotonic()
        refs = {i: registry.push(i) for i in (images.OPERATOR, images.TRIAL, images.EXAMPLE)}
        refs[images.PAUSE] = registry.push(images.PAUSE)
        seconds["push"] = time.monotonic() - start
        yield E2EImages(
            registry,
            refs[images.OPERATOR],
            refs[images.TRIAL],
            refs[images.EXAMPLE],
            refs[images.PAUSE],
            seconds,
        )
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def real_node(
    control_plane: object,  # noqa: F811
    e2e_images: E2EImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RealNode]:
    node = RealNode.start(
        control_plane,  # type: ignore[arg-type]
        e2e_images.registry.host,
        e2e_images.pause,
        tmp_path_factory.mktemp("node"),
    )
    try:
        yield node
    finally:
        node.stop()


# -- the chart, installed once for every e2e module (its ClusterRoles are cluster-wide: a
# second release of the same name in another namespace would collide with them) ----------
@pytest.fixture(scope="session")
def operator_ns(
    control_plane: Any,  # noqa: F811
    kube_api: Any,  # noqa: F811
    real_node: RealNode,
    e2e_images: E2EImages,
    s3_server: Any,  # noqa: F811
) -> Iterator[str]:
    """A namespace with the chart installed (operator serving it) and the S3 Secret."""
    registry, _, _ = e2e_images.operator.partition("/")
    ns = f"e2e-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", ns)
    wait_for(
        lambda: (
            control_plane.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0
        ),
        30,
        "the namespace's default ServiceAccount",
    )
    s3_secret(kube_api, ns, s3_server, name="s3-credentials")
    try:
        helm(
            control_plane,
            "install",
            "kubetune",
            str(CHART),
            "-n",
            ns,
            "--set",
            f"image.repository={registry}/kubetune/operator",
            "--set",
            "image.tag=test",
            "--set",
            f"trial.sidecarImage.repository={registry}/kubetune/trial",
            "--set",
            "trial.sidecarImage.tag=test",
            "--set",
            f"watchNamespaces={{{ns}}}",
        )
        try:
            wait_for(lambda: operator_ready(control_plane, ns), 300, "the operator pod Ready", 1)
        except AssertionError:
            logs = control_plane.kubectl("logs", "-n", ns, "deploy/kubetune", check=False)
            raise AssertionError(f"operator not ready:\n{logs.stdout}{logs.stderr}") from None
        yield ns
    finally:
        control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="session")
def bucket(s3_server: Any) -> str:  # noqa: F811
    name = f"e2e-{secrets.token_hex(4)}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def e2e_site(
    control_plane: Any,  # noqa: F811
    operator_ns: str,
    real_node: RealNode,
    e2e_images: E2EImages,
    s3_server: Any,  # noqa: F811
    bucket: str,
) -> Site:
    """Where the e2e experiments run (tests.e2e.experiments.Site): the chart's namespace."""
    return Site(control_plane, operator_ns, real_node, e2e_images, s3_server, bucket)
