"""The project's images, built without a registry hub, for the real node's tests.

    python -m tests.testenv.images      # build (or reuse) every image; print names and times

1. A Python base made from Debian packages by mmdebstrap (Debian's python3, pip and venv),
   imported into buildah's local storage as ``localhost/kubetune-base:<hash>``; the hash is that
   of the suite, mirror and package list, so it is built once per package list.
2. The operator image (``Dockerfile``) and the trial base image (``trial_image/Dockerfile``),
   built unchanged by ``buildah build --isolation chroot --layers`` with their base build
   argument naming the local base.
3. The example image, built FROM the trial image exactly as the README's "Writing a trainable
   and its image" says: the trainable modules copied into ``/app``.

``Registry`` runs Debian's docker-registry on loopback; ``push`` copies an image into it, from
where containerd pulls it over plain HTTP (``hosts.toml``, see ``tests.testenv.node``).
buildah keeps its layer cache in its default storage (``/var/lib/containers``), so a warm run
rebuilds only the layers whose inputs changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.testenv.procs import ManagedProcess, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# python-is-python3: the operator Dockerfile runs `python -m venv`; passwd: groupadd/useradd.
BASE_PACKAGES = (
    "ca-certificates",
    "passwd",
    "python-is-python3",
    "python3",
    "python3-pip",
    "python3-venv",
)
HOST_BUILD_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf")
OPERATOR = "localhost/kubetune/operator:test"
TRIAL = "localhost/kubetune/trial:test"
EXAMPLE = "localhost/kubetune/examples:test"
PAUSE = "localhost/kubetune/pause:test"
# The trainables the example image carries: the README's example and the e2e tests' own.
EXAMPLE_MODULES = (REPO / "examples" / "quadratic.py", REPO / "tests" / "e2e" / "trainables.py")


def buildah(*args: str, capture: bool = True) -> str:
    proc = subprocess.run(
        ["buildah", *args],
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout or ""


def _exists(image: str) -> bool:
    proc = subprocess.run(
        ["buildah", "inspect", "--type", "image", image], capture_output=True, text=True
    )
    return proc.returncode == 0


def base_image() -> str:
    recipe = "\n".join([SUITE, MIRROR, *sorted(BASE_PACKAGES)])
    name = f"localhost/kubetune-base:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if _exists(name):
        return name
    with tempfile.TemporaryDirectory(prefix="kubetune-base-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        proc = subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--mode=root",
                f"--include={','.join(BASE_PACKAGES)}",
                # No apt lists or caches in the image (the Dockerfiles run apt-get update
                # themselves when they need it).
                "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
                SUITE,
                str(tarball),
                MIRROR,
            ],
            text=True,
            capture_output=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed:\n{proc.stderr[-4000:]}")
        container = buildah("from", "scratch").strip()
        try:
            buildah("add", container, str(tarball), "/")
            buildah("config", "--env", "LANG=C.UTF-8", "--cmd", "python3", container)
            buildah("commit", "--rm", container, name)
        except BaseException:
            subprocess.run(["buildah", "rm", container], capture_output=True)
            raise
    return name


def _build(tag: str, dockerfile: Path, context: Path, build_args: dict[str, str]) -> None:
    args = ["build", "--isolation", "chroot", "--layers", "-q", "-f", str(dockerfile), "-t", tag]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    # This machine's trust store and pip settings for the RUN steps only (a TLS-inspecting proxy
    # may sit between us and PyPI): mounted while building, never part of an image.
    for host_file in HOST_BUILD_FILES:
        if os.path.exists(host_file):
            args += ["--volume", f"{host_file}:{host_file}:ro"]
    buildah(*args, str(context))


def example_dockerfile(trial_image: str) -> str:
    """The README's recipe for a trainable's image."""
    lines = [f"FROM {trial_image}"]
    lines += [f"COPY {m.name} /app/" for m in EXAMPLE_MODULES]
    return "\n".join(lines) + "\n"


def build_all() -> dict[str, float]:
    """Build every image (each a no-op when cached); seconds each took, by image name."""
    times: dict[str, float] = {}
    start = time.monotonic()
    base = base_image()
    times[base] = time.monotonic() - start
    if not _exists(PAUSE):
        # The pod sandbox's image: the base, blocking forever (containerd's default names a hub).
        container = buildah("from", base).strip()
        buildah(
            "config",
            "--env",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "--entrypoint",
            '["/bin/sleep", "infinity"]',
            "--cmd",
            "",
            container,
        )
        buildah("commit", "--rm", "-q", container, PAUSE)
    for tag, dockerfile, arg in (
        (OPERATOR, REPO / "Dockerfile", "PYTHON_IMAGE"),
        (TRIAL, REPO / "trial_image" / "Dockerfile", "BASE_IMAGE"),
    ):
        start = time.monotonic()
        _build(tag, dockerfile, REPO, {arg: base})
        times[tag] = time.monotonic() - start
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kubetune-example-") as tmp:
        context = Path(tmp)
        for module in EXAMPLE_MODULES:
            shutil.copy(module, context / module.name)
        (context / "Dockerfile").write_text(example_dockerfile(TRIAL))
        _build(EXAMPLE, context / "Dockerfile", context, {})
    times[EXAMPLE] = time.monotonic() - start
    return times


@dataclass
class Registry:
    """Debian's docker-registry (distribution v2) on 127.0.0.1, storage in a work directory."""

    host: str
    process: ManagedProcess

    @classmethod
    def start(cls, workdir: Path) -> Registry:
        port = free_port()
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}},
            "http": {"addr": f"127.0.0.1:{port}"},
        }
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.yml").write_text(yaml.safe_dump(config))
        process = ManagedProcess(
            "docker-registry",
            ["docker-registry", "serve", str(workdir / "config.yml")],
            workdir / "registry.log",
        )
        host = f"127.0.0.1:{port}"
        wait_until(
            "docker-registry to answer",
            lambda: _http_ok(f"http://{host}/v2/"),
            30,
            watch=[process],
        )
        return cls(host, process)

    def push(self, image: str) -> str:
        """Push a local image; return the reference a pod names it by."""
        ref = f"{self.host}/{image.split('/', 1)[1]}"
        buildah("push", "--tls-verify=false", "-q", image, f"docker://{ref}")
        return ref

    def stop(self) -> None:
        self.process.stop()


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def main() -> int:
    if os.geteuid() != 0:
        print("images: buildah and mmdebstrap need root here", file=sys.stderr)
        return 1
    for image, seconds in build_all().items():
        print(f"{image}: {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
