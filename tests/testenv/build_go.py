"""The Go side of tests.testenv.build: the toolchain (no automatic toolchain switch) and the
wrapper modules under go/, whose go.mod is generated from the pinned upstream go.mod."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.testenv.build_pins import (
    CONTAINERD_VERSION,
    ETCD_VERSION,
    GENERATED_HEADER,
    GO_DIR,
    HELM_VERSION,
    KUBERNETES_VERSION,
    KUEUE_VERSION,
    STAGING_VERSION,
    binaries,
    kueue_binaries,
    node_binaries,
)

# ---------------------------------------------------------------------------------------------
# Go toolchain


def go_executable() -> str:
    found = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if not found:
        raise SystemExit("testenv build: no `go` on PATH (Go >= 1.26 is needed)")
    return found


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    # Never switch toolchains behind our back: a too-old Go should fail loudly.
    env["GOTOOLCHAIN"] = "local"
    env.setdefault("GOFLAGS", "-buildvcs=false")
    return env


def run_go(args: list[str], cwd: Path, *, capture: bool = True) -> str:
    proc = subprocess.run(
        [go_executable(), *args],
        cwd=cwd,
        env=go_env(),
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"testenv build: `go {' '.join(args)}` failed in {cwd}:\n{proc.stderr or ''}"
        )
    return proc.stdout or ""


# ---------------------------------------------------------------------------------------------
# Wrapper modules


def upstream_gomod(module: str, version: str) -> dict[str, Any]:
    """The parsed go.mod of MODULE@VERSION as `go mod edit -json` reports it."""
    with tempfile.TemporaryDirectory() as tmp:
        info = json.loads(run_go(["mod", "download", "-json", f"{module}@{version}"], Path(tmp)))
        if info.get("Error"):
            raise SystemExit(f"testenv build: {module}@{version}: {info['Error']}")
        parsed: dict[str, Any] = json.loads(
            run_go(["mod", "edit", "-json", info["GoMod"]], Path(tmp))
        )
    return parsed


def kubernetes_gomod() -> str:
    upstream = upstream_gomod("k8s.io/kubernetes", KUBERNETES_VERSION)
    replaces = sorted(
        r["Old"]["Path"]
        for r in upstream.get("Replace") or []
        if r["Old"]["Path"].startswith("k8s.io/") and r["New"]["Path"].startswith("./staging/")
    )
    if not replaces:
        raise SystemExit("testenv build: found no staging replaces in k8s.io/kubernetes's go.mod")
    godebug = upstream.get("GoDebug") or []
    lines = [
        GENERATED_HEADER.format(pin=f"k8s.io/kubernetes {KUBERNETES_VERSION}"),
        "\nmodule kubetune.test/testenv/kubernetes\n\n",
        f"go {upstream['Go']}\n\n",
    ]
    # Upstream's godebug settings only apply when its module is the main module: carry them.
    lines += [f"godebug {d['Key']}={d['Value']}\n" for d in godebug]
    lines.append("\ntool (\n")
    lines += [
        f"\t{b.package}\n"
        for b in binaries()
        if b.module == "kubernetes" and not b.package.startswith("kubetune.test/")
    ]
    lines.append(")\n\n")
    lines.append(f"require k8s.io/kubernetes {KUBERNETES_VERSION}\n\n")
    lines.append(f"// The staging modules, published as {STAGING_VERSION}.\nreplace (\n")
    lines += [f"\t{path} => {path} {STAGING_VERSION}\n" for path in replaces]
    lines.append(")\n")
    return "".join(lines)


def simple_gomod(module: str, requirement: str, version: str, tools: list[str]) -> str:
    upstream = upstream_gomod(requirement, version)
    body = GENERATED_HEADER.format(pin=f"{requirement} {version}")
    body += f"\nmodule kubetune.test/testenv/{module}\n\ngo {upstream['Go']}\n\ntool (\n"
    body += "".join(f"\t{t}\n" for t in tools)
    body += f")\n\nrequire {requirement} {version}\n"
    return body


def wanted_gomod(module: str) -> str:
    if module == "kubernetes":
        return kubernetes_gomod()
    if module == "etcd":
        return simple_gomod(
            "etcd", "go.etcd.io/etcd/server/v3", ETCD_VERSION, ["go.etcd.io/etcd/server/v3"]
        )
    if module == "helm":
        return simple_gomod("helm", "helm.sh/helm/v3", HELM_VERSION, ["helm.sh/helm/v3/cmd/helm"])
    if module == "containerd":
        return simple_gomod(
            "containerd",
            "github.com/containerd/containerd/v2",
            CONTAINERD_VERSION,
            [b.package for b in node_binaries() if b.module == "containerd"],
        )
    if module == "kueue":
        return simple_gomod(
            "kueue", "sigs.k8s.io/kueue", KUEUE_VERSION, [b.package for b in kueue_binaries()]
        )
    raise ValueError(module)


def _pin_of(module: str) -> str:
    return {
        "kubernetes": f"k8s.io/kubernetes {KUBERNETES_VERSION}",
        "etcd": f"go.etcd.io/etcd/server/v3 {ETCD_VERSION}",
        "helm": f"helm.sh/helm/v3 {HELM_VERSION}",
        "containerd": f"github.com/containerd/containerd/v2 {CONTAINERD_VERSION}",
        "kueue": f"sigs.k8s.io/kueue {KUEUE_VERSION}",
    }[module]


def ensure_module(module: str, *, regenerate: bool = False) -> Path:
    """Make go/MODULE/go.mod and go.sum match the pins (they are committed; this is a no-op
    unless a pin changed or --regenerate was given)."""
    folder = GO_DIR / module
    gomod, gosum = folder / "go.mod", folder / "go.sum"
    header = GENERATED_HEADER.format(pin=_pin_of(module))
    current = gomod.read_text() if gomod.exists() else ""
    if not regenerate and current.startswith(header) and gosum.exists():
        return folder
    print(f"  generating {gomod.relative_to(GO_DIR.parent.parent.parent)} ...", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    gomod.write_text(wanted_gomod(module))
    run_go(["mod", "tidy"], folder)
    return folder
