"""``python -m kubetune.cluster.bootstrap CODE_DIR``: the trial container of shipped code.

The sidecar has fetched the code tree (``trainable.pkl``, ``workdir/``, ``requirements.txt``,
``stopper.pkl``) into CODE_DIR before this starts. A shipped stop function goes into the trial
spec, so the runner calls it after each result. If a requirements file was shipped, it is
installed into the pod's shared volume (``/kubetune/site``, put first on ``PYTHONPATH``)
before the trainable is unpickled, so its imports resolve; then this process becomes
``python -m kubetune.trial``.
A failed install is the trial's error: pip's own message goes to ``out/error.txt`` (which the
sidecar stores and the operator reports) and the exit code is the runner's ERRORED.
This container holds no credential: it reads only what the sidecar put on the shared volume.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from kubetune.trial import exit_codes

SITE = "/kubetune/site"
BUILT_HERE = ".built-here"  # kubetune.sidecar.shipped_env stores a site that has it
OUT = "/kubetune/out"
TAIL_CHARS = 8000
STOPPER = "stopper.pkl"  # kubetune.cluster.ship.STOPPER


def requirements_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def install(requirements: str, site: str) -> tuple[bool, str]:
    """pip install -r requirements into site; (ok, pip's output)."""
    marker = os.path.join(site, f".installed-{requirements_hash(requirements)}")
    if os.path.exists(marker):  # restored by the sidecar from the cache of an earlier trial
        return True, "cached"
    os.makedirs(site, exist_ok=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--target",
            site,
            "-r",
            requirements,
        ],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(requirements),
    )
    output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        return False, output
    with open(marker, "w", encoding="utf-8") as f:
        f.write(output[-TAIL_CHARS:])
    # tells the sidecar to store this site for the next trials (it holds the credentials)
    with open(os.path.join(site, BUILT_HERE), "w", encoding="utf-8") as f:
        f.write("")
    return True, output


def add_stopper(code_dir: str, env: dict[str, str]) -> None:
    """A ``run_config.stop`` function shipped with the code (``stopper.pkl``) is evaluated by
    the trial runner after each result: the trial spec the sidecar wrote gets its path, in a
    copy beside the code that ``KUBETUNE_TRIAL_SPEC`` then names (paths as the pod sees them)."""
    spec_path = env.get("KUBETUNE_TRIAL_SPEC")
    if not spec_path or not os.path.exists(f"{code_dir}/{STOPPER}"):
        return
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    spec["stopper_pickle"] = f"{code_dir}/{STOPPER}"
    target = f"{code_dir}/trial.json"
    with open(target, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    env["KUBETUNE_TRIAL_SPEC"] = target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    code_dir = args[0] if args else "/kubetune/code"
    code = code_dir
    site = SITE
    env = dict(os.environ)
    add_stopper(code_dir, env)
    requirements = os.path.join(code, "requirements.txt")
    if os.path.exists(requirements):
        ok, output = install(requirements, site)
        if not ok:
            out = OUT
            os.makedirs(out, exist_ok=True)
            message = (
                "kubetune: installing the shipped requirements.txt failed (pip install -r"
                f" requirements.txt):\n{output[-TAIL_CHARS:]}"
            )
            with open(os.path.join(out, "error.txt"), "w", encoding="utf-8") as f:
                f.write(message)
            print(message, file=sys.stderr, flush=True)
            return exit_codes.ERRORED
        how = "from the cache of an earlier trial" if output == "cached" else "installed"
        print(f"kubetune: requirements.txt {how}", file=sys.stderr, flush=True)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "kubetune.trial"], env)
    return exit_codes.ERRORED  # not reached


if __name__ == "__main__":
    sys.exit(main())
