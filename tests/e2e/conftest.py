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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.conftest import (  # noqa: F401  (fixtures)
    _unavailable,
    control_plane,
    kube_api,
    namespace,
    s3_bucket,
    s3_server,
)
from tests.testenv import build, images
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
