"""pytest fixtures for the test kubelet (tests/testenv/kubelet.py).

``kubelet``
    A started :class:`TestKubelet` with one node (8 CPUs, 32Gi, no GPU, random name) in
    process mode; stopped after the test (processes killed, pods force-deleted, node removed).
``kubelet_factory``
    ``kubelet_factory(NodeSpec(...), ..., mode="emulated", behaviour=...)`` starts more
    kubelets (any keyword of TestKubelet); all are stopped after the test.

Both need the ``control_plane`` fixture of tests/cluster/conftest.py. Each test gets fresh
nodes with random names, so nothing a test leaves behind is scheduled onto the next one's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .kubelet import NodeSpec, TestKubelet

KubeletFactory = Callable[..., TestKubelet]


@pytest.fixture
def kubelet_factory(control_plane: Any, tmp_path: Path) -> Iterator[KubeletFactory]:
    made: list[TestKubelet] = []
    kubeconfig = getattr(control_plane, "kubelet_kubeconfig", None) or control_plane.kubeconfig

    def make(*nodes: NodeSpec, **kwargs: Any) -> TestKubelet:
        kwargs.setdefault("root_dir", tmp_path / f"kubelet-{len(made)}")
        kl = TestKubelet(kubeconfig, nodes=list(nodes) or None, **kwargs)
        made.append(kl)
        return kl.start()

    try:
        yield make
    finally:
        for kl in reversed(made):
            kl.stop()


@pytest.fixture
def kubelet(kubelet_factory: KubeletFactory) -> TestKubelet:
    return kubelet_factory()
