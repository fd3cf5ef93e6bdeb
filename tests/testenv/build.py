"""Build the test environment's binaries from the Go module proxy, once per machine.

    python -m tests.testenv.build            # build what is missing, print progress
    python -m tests.testenv.build --check    # exit 1 if anything would be built
    python -m tests.testenv.build --regenerate  # rewrite the wrapper go.mod/go.sum files
    python -m tests.testenv.build --no-images   # binaries only (no real-node images)

Kubernetes' own go.mod points its ``k8s.io/*`` staging modules at local paths, so
``go install k8s.io/kubernetes/cmd/...@v1.36.3`` cannot work. The wrapper module in
``go/kubernetes`` requires ``k8s.io/kubernetes`` and replaces every staging module with the
published ``v0.X.Y`` of the same release; its replace list is generated here from the pinned
upstream go.mod, never written by hand. etcd and helm get wrapper modules for the same reason
(etcd's server module carries relative replace directives of its own).

Binaries land in ``$KUBETUNE_TESTENV_CACHE/<kubernetes version>/bin`` (default
``~/.cache/kubetune/testenv``), outside the repository. ``stamp.json`` beside ``bin`` records
which version each binary was built at; a binary that exists with a matching stamp is never
rebuilt, so a warm run costs a few milliseconds.

A cold build runs four lanes at once, each under its own lock: the control plane's binaries;
the real node's (containerd's module first, which shares little with Kubernetes', then the
kubelet and the device plugin once the control plane's lane has compiled the Kubernetes
packages they share, so none is compiled twice at the same time); Kueue's controller manager
(its own module); and, as root with buildah,
the real node's images (tests.testenv.images: mostly downloads and disk, little CPU). The
wrapper modules are checked first, one at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The one module the fixtures, the Makefile and the tests name: the pins (build_pins.py) and
# the Go toolchain and wrapper modules (build_go.py) are re-exported from here.
from tests.testenv.build_go import ensure_module, go_env, go_executable, run_go, upstream_gomod
from tests.testenv.build_pins import (
    GO_DIR,
    GROUPS,
    HELM_VERSION,
    KUBERNETES_VERSION,
    KUEUE_VERSION,
    STAGING_VERSION,
    Binary,
    bin_dir,
    binaries,
    binary,
    cache_root,
    node_binaries,
)

__all__ = [
    "GO_DIR",
    "GROUPS",
    "HELM_VERSION",
    "KUBERNETES_VERSION",
    "KUEUE_VERSION",
    "STAGING_VERSION",
    "Binary",
    "bin_dir",
    "binaries",
    "binary",
    "build",
    "cache_root",
    "ensure_module",
    "main",
    "missing",
    "node_binaries",
    "run_go",
    "upstream_gomod",
]

# ---------------------------------------------------------------------------------------------
# Building


def _stamp_path(group: str) -> Path:
    return cache_root() / ("stamp.json" if group == "controlplane" else f"stamp-{group}.json")


def _load_stamp(group: str) -> dict[str, str]:
    try:
        data = json.loads(_stamp_path(group).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save_stamp(group: str, stamp: dict[str, str]) -> None:
    path = _stamp_path(group)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _own_source_hash(b: Binary) -> str:
    """Our own Go code (kubetune.test/...) has no version: its sources are the recipe."""
    prefix = f"kubetune.test/testenv/{b.module}/"
    if not b.package.startswith(prefix):
        return ""
    folder = GO_DIR / b.module / b.package[len(prefix) :]
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.go")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _stamp_value(b: Binary) -> str:
    # The link flags are part of what was built (all but the build date).
    recipe = " ".join(f for f in b.ldflags if ".buildDate=" not in f)
    if b.tags:
        recipe += " tags:" + ",".join(b.tags)
    own = _own_source_hash(b)
    if own:
        recipe += " source:" + own
    return f"{b.package}@{b.version} ldflags:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def missing(groups: tuple[str, ...] = GROUPS) -> list[Binary]:
    """The binaries that a build would (re)build."""
    stamps = {g: _load_stamp(g) for g in groups}
    return [
        b
        for b in binaries()
        if b.group in groups
        and not (
            os.access(binary(b.name), os.X_OK) and stamps[b.group].get(b.name) == _stamp_value(b)
        )
    ]


@contextlib.contextmanager
def _cache_lock(group: str = "controlplane") -> Iterator[None]:
    cache_root().mkdir(parents=True, exist_ok=True)
    name = ".lock" if group == "controlplane" else f".lock-{group}"
    with open(cache_root() / name, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("testenv build: another build holds the cache lock; waiting ...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build_one(b: Binary, index: int, total: int) -> None:
    folder = GO_DIR / b.module
    out = bin_dir() / f".{b.name}.partial"
    ldflags = " ".join(("-s", "-w", *b.ldflags))
    cmd = [
        go_executable(),
        "build",
        "-v",
        "-trimpath",
        "-ldflags",
        ldflags,
        "-o",
        str(out),
        *(["-tags", ",".join(b.tags)] if b.tags else []),
        b.package,
    ]
    label = f"[{index}/{total}] {b.name} ({b.package}@{b.version})"
    print(f"{label}: building ...", flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=folder, env=go_env(), text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    counts = {"modules downloaded": 0, "packages compiled": 0}
    tail: list[str] = []
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(30):
            so_far = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
            print(f"{label}: {so_far or 'working'}, {time.monotonic() - start:.0f} s", flush=True)

    ticker = threading.Thread(target=heartbeat, daemon=True)
    ticker.start()
    assert proc.stderr is not None
    for line in proc.stderr:
        # `go build -v` names each package it compiles; downloads are announced as such.
        if line.startswith("go: downloading "):
            counts["modules downloaded"] += 1
        elif not line.startswith(("go: ", "#", " ", "\t")):
            counts["packages compiled"] += 1
        tail = [*tail[-40:], line.rstrip("\n")]
    rc = proc.wait()
    done.set()
    if rc != 0:
        out.unlink(missing_ok=True)
        raise SystemExit(f"{label}: go build failed (exit {rc}):\n" + "\n".join(tail))
    out.replace(binary(b.name))
    stamp = _load_stamp(b.group)
    stamp[b.name] = _stamp_value(b)
    _save_stamp(b.group, stamp)
    print(
        f"{label}: done in {time.monotonic() - start:.0f} s "
        f"({binary(b.name).stat().st_size / 2**20:.0f} MiB)",
        flush=True,
    )


def build(
    *, regenerate: bool = False, groups: tuple[str, ...] = GROUPS, images: bool = False
) -> Path:
    """Build every missing binary of GROUPS (and with IMAGES the real node's images), in
    parallel lanes as the module docstring says; return the bin directory."""
    with _cache_lock("modules"):
        for module in sorted({b.module for b in binaries() if b.group in groups}):
            ensure_module(module, regenerate=regenerate)
    cp_done, cp_failed = threading.Event(), threading.Event()
    lanes: dict[str, Any] = {}
    if "controlplane" in groups:
        lanes["controlplane"] = lambda: _build_group("controlplane")
    else:
        cp_done.set()
    if "node" in groups:

        def node_lane() -> None:
            shares = {"kubernetes"}  # the control plane's module: wait until it is compiled
            _build_group("node", lambda b: b.module not in shares)
            cp_done.wait()
            if not cp_failed.is_set():  # the build fails anyway: no more work on it
                _build_group("node", lambda b: b.module in shares)

        lanes["node"] = node_lane
    if "kueue" in groups:  # its own module (k8s.io libraries, not k8s.io/kubernetes)
        lanes["kueue"] = lambda: _build_group("kueue")
    if images and _can_build_images():
        lanes["images"] = _build_images
    errors: list[BaseException] = []

    def run(name: str, lane: Any) -> None:
        try:
            lane()
        except BaseException as exc:  # reported once every lane has ended
            errors.append(exc)
            if name == "controlplane":
                cp_failed.set()
        finally:
            if name == "controlplane":
                cp_done.set()

    threads = [
        threading.Thread(target=run, args=(name, lane), name=f"build-{name}")
        for name, lane in lanes.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return bin_dir()


def _build_group(group: str, which: Any = None) -> None:
    """Build the missing binaries of GROUP (those ``which`` selects) under the group's lock."""

    def todo() -> list[Binary]:
        return [b for b in missing((group,)) if which is None or which(b)]

    if not todo():
        return
    with _cache_lock(group):
        pending = todo()  # another process may have built some while we waited
        if not pending:
            return
        bin_dir().mkdir(parents=True, exist_ok=True)
        print(
            f"testenv build: {group}: building {len(pending)} binaries into {bin_dir()} "
            "(a cold build takes a while; later runs reuse the cache)",
            flush=True,
        )
        start = time.monotonic()
        for i, b in enumerate(pending, 1):
            _build_one(b, i, len(pending))
        print(f"testenv build: {group} done in {time.monotonic() - start:.0f} s", flush=True)


def _can_build_images() -> bool:
    if os.geteuid() != 0 or not shutil.which("buildah") or not shutil.which("mmdebstrap"):
        print(
            "testenv build: not building the real node's images (they need root, buildah and"
            " mmdebstrap: python -m tests.testenv.debian); the e2e tests build them",
            flush=True,
        )
        return False
    return True


def _build_images() -> None:
    from tests.testenv import images

    start = time.monotonic()
    print("testenv build: images: building (or reusing) the real node's images ...", flush=True)
    with _cache_lock("images"):
        for image, seconds in images.build_all().items():
            print(f"testenv build: images: {image}: {seconds:.0f} s", flush=True)
    print(f"testenv build: images done in {time.monotonic() - start:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.testenv.build",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a build is needed")
    parser.add_argument(
        "--regenerate",
        action="store_true",
        help="regenerate the wrapper modules' go.mod and go.sum from the pins",
    )
    parser.add_argument(
        "--only",
        choices=GROUPS,
        help="only the control plane's binaries, only the real node's, or only Kueue's",
    )
    parser.add_argument(
        "--no-images",
        action="store_true",
        help="do not build the real node's images (built anyway by the e2e tests)",
    )
    args = parser.parse_args(argv)
    groups = (args.only,) if args.only else GROUPS
    if args.check:
        todo = missing(groups)
        for b in todo:
            print(f"missing: {b.name} ({_stamp_value(b)})")
        return 1 if todo else 0
    start = time.monotonic()
    images = not args.no_images and "node" in groups
    path = build(regenerate=args.regenerate, groups=groups, images=images)
    took = time.monotonic() - start
    if took < 1:
        print(f"testenv: binaries up to date in {path}")
    else:
        print(f"testenv build: everything done in {took:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
