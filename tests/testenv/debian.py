"""The Debian packages the real node and the image builds need, installed by apt-get.

    python -m tests.testenv.debian            # install what is missing (root, Debian/Ubuntu)
    python -m tests.testenv.debian --check    # exit 1 if something is missing

runc (containerd 2.x drives it through the OCI CLI), the CNI reference plugins, buildah (builds
the project's Dockerfiles without a daemon), mmdebstrap (the Python base image from Debian
packages) and docker-registry (the registry on loopback that the kubelet pulls from).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

# package -> a file it installs (what the node and the image builds look for)
PACKAGES = {
    "runc": "/usr/sbin/runc",
    "containernetworking-plugins": "/usr/lib/cni/bridge",
    "buildah": "/usr/bin/buildah",
    "mmdebstrap": "/usr/bin/mmdebstrap",
    "docker-registry": "/usr/bin/docker-registry",
    "iproute2": "/usr/sbin/ip",
}


def missing() -> list[str]:
    return [name for name, path in PACKAGES.items() if not os.path.exists(path)]


def ensure() -> None:
    """apt-get install the missing packages; SystemExit with apt's words if that fails."""
    todo = missing()
    if not todo:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SystemExit(
            f"testenv: the real node needs the Debian packages {' '.join(todo)} "
            "(apt-get as root installs them)"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"testenv: apt-get install {' '.join(todo)} ...", flush=True)
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *todo]
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=False)
        proc = subprocess.run(cmd, env=env, text=True, capture_output=True)
        if proc.returncode != 0:
            raise SystemExit(f"testenv: apt-get install failed:\n{proc.stderr[-3000:]}")
    still = missing()
    if still:
        raise SystemExit(f"testenv: installed, yet missing: {still}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testenv.debian", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a package is missing")
    args = parser.parse_args(argv)
    if args.check:
        for name in missing():
            print(f"missing: {name}")
        return 1 if missing() else 0
    if missing() and os.geteuid() != 0:
        # Only the e2e tests need them; they say so (and fail under CI).
        print(f"testenv: not root, not installing {' '.join(missing())} (the e2e tests need them)")
        return 0
    ensure()
    return 0


if __name__ == "__main__":
    sys.exit(main())
