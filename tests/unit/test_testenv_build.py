"""tests.testenv.build's lanes and stamps, without Go: what would be built, in which order."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.testenv import build


@pytest.fixture
def fake_go(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, str, float]]:
    """_build_one records (event, binary, time) and 'builds' in 0.2 s; nothing is cached."""
    monkeypatch.setenv("KUBETUNE_TESTENV_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "ensure_module", lambda module, regenerate=False: tmp_path)
    log: list[tuple[str, str, float]] = []
    lock = threading.Lock()
    built: set[str] = set()

    def fake_build_one(b: build.Binary, index: int, total: int) -> None:
        with lock:
            log.append(("start", b.name, time.monotonic()))
        time.sleep(0.2)
        with lock:
            built.add(b.name)
            log.append(("end", b.name, time.monotonic()))

    monkeypatch.setattr(build, "_build_one", fake_build_one)
    monkeypatch.setattr(
        build,
        "missing",
        lambda groups=build.GROUPS: [
            b for b in build.binaries() if b.group in groups and b.name not in built
        ],
    )
    return log


def test_the_node_lane_overlaps_the_control_plane_but_not_on_shared_packages(
    fake_go: list[tuple[str, str, float]],
) -> None:
    build.build(images=False)
    at = {(event, name): t for event, name, t in fake_go}
    cp = [b.name for b in build.binaries() if b.group == "controlplane"]
    cp_end = max(at[("end", n)] for n in cp)
    # containerd's module shares little with Kubernetes': built while the control plane builds
    assert at[("start", "containerd")] < at[("end", cp[0])]
    # the kubelet and the device plugin compile Kubernetes packages: after the control plane
    for name in ("kubelet", "kubetune-fakegpu"):
        assert at[("start", name)] >= cp_end
    assert {n for _, n, _ in fake_go} == {b.name for b in build.binaries()}


def test_a_failed_control_plane_lane_fails_the_build_after_the_others_end(
    fake_go: list[tuple[str, str, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = build._build_one

    def failing(b: build.Binary, index: int, total: int) -> None:
        if b.name == "kube-apiserver":
            raise SystemExit("kube-apiserver: go build failed")
        real(b, index, total)

    monkeypatch.setattr(build, "_build_one", failing)
    with pytest.raises(SystemExit, match="kube-apiserver"):
        build.build(images=False)
    names = {n for _, n, _ in fake_go}
    assert "containerd" in names and "kubelet" not in names  # waited for, then given up


def test_our_own_go_codes_stamp_follows_its_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "kubernetes" / "fakegpu").mkdir(parents=True)
    main = tmp_path / "kubernetes" / "fakegpu" / "main.go"
    main.write_text("package main\n")
    monkeypatch.setattr(build, "GO_DIR", tmp_path)
    (plugin,) = [b for b in build.node_binaries() if b.name == "kubetune-fakegpu"]
    (kubelet,) = [b for b in build.node_binaries() if b.name == "kubelet"]
    before = build._stamp_value(plugin)
    main.write_text("package main\n\nfunc main() {}\n")
    assert build._stamp_value(plugin) != before
    assert "source:" not in build._stamp_value(kubelet)  # pinned upstream: its version says it
