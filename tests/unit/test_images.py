"""What CI can check of the images without a Docker engine: the Dockerfiles' COPY sources exist
(and are not excluded by .dockerignore), their entrypoints name real console scripts or modules,
and the package set each one pip-installs resolves against the registry (`pip install
--dry-run`, through pip's own cache). No image is built here."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "operator": REPO / "Dockerfile",
    "trial": REPO / "trial_image" / "Dockerfile",
}
# Packages that must end up in each image for its job.
EXPECTED = {
    "operator": {"kubetune", "kopf", "kubernetes", "boto3"},
    "trial": {"kubetune", "boto3", "kubernetes", "gputil", "setuptools"},
}
NETWORK_ERRORS = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ProxyError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
)


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


def parse(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, f"{path}: dangling line continuation"
    return out


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    first = rel.strip("./").split("/")[0]
    return any(p.rstrip("/") in (rel.strip("./"), first) for p in patterns)


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_copy_sources_exist_and_are_in_the_build_context(image: str):
    patterns = _dockerignore()
    copies = [i for i in parse(DOCKERFILES[image]) if i.keyword in ("COPY", "ADD")]
    assert copies, "no COPY at all?"
    checked = 0
    for inst in copies:
        tokens = shlex.split(inst.args)
        if any(t.startswith("--from") for t in tokens):
            continue  # from another build stage
        paths = [t for t in tokens if not t.startswith("--")]
        assert len(paths) >= 2, f"line {inst.line}: COPY needs a source and a destination"
        for source in paths[:-1]:
            assert (REPO / source).exists(), f"line {inst.line}: COPY source {source} is missing"
            assert not _ignored(source, patterns), (
                f"line {inst.line}: COPY source {source} is excluded by .dockerignore"
            )
            checked += 1
    assert checked


def _exec_form(inst: Instruction) -> list[str]:
    try:
        value = json.loads(inst.args)
    except json.JSONDecodeError:
        pytest.fail(f"line {inst.line}: {inst.keyword} must use the exec (JSON) form")
    assert isinstance(value, list) and value and all(isinstance(v, str) for v in value)
    return value


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    for root in (REPO, REPO / "operator"):
        base = root.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.exists():
                return candidate
    return None


def _assert_runnable(argv: list[str], where: str) -> None:
    if argv[0] in ("python", "python3") and len(argv) >= 3 and argv[1] == "-m":
        module = argv[2]
        path = _module_file(module)
        assert path is not None, f"{where}: module {module} does not exist"
        if path.name == "__init__.py":
            assert (path.parent / "__main__.py").exists(), (
                f"{where}: package {module} has no __main__.py, so `python -m` cannot run it"
            )
        return
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("scripts", {})
    assert argv[0] in scripts, (
        f"{where}: {argv[0]} is not a console script of pyproject.toml ({sorted(scripts)})"
    )
    module, _, attr = scripts[argv[0]].partition(":")
    path = _module_file(module)
    assert path is not None, f"{where}: {argv[0]} -> module {module} does not exist"
    names = {
        node.name if not isinstance(node, ast.Assign) else getattr(node.targets[0], "id", "")
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Assign)
    }
    names |= {
        alias.asname or alias.name
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert attr.split(".")[0] in names, f"{where}: {module} defines no {attr}"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_entrypoint_and_cmd_name_existing_scripts_or_modules(image: str):
    instructions = parse(DOCKERFILES[image])
    final_stage = max(i for i, inst in enumerate(instructions) if inst.keyword == "FROM")
    runnable = [
        inst for inst in instructions[final_stage:] if inst.keyword in ("ENTRYPOINT", "CMD")
    ]
    assert runnable, f"{image}: the final stage has no ENTRYPOINT or CMD"
    entrypoint = [i for i in runnable if i.keyword == "ENTRYPOINT"]
    # An ENTRYPOINT is what runs; a CMD alone is the command.
    first = entrypoint[-1] if entrypoint else runnable[-1]
    _assert_runnable(_exec_form(first), f"{image} line {first.line}")


def pip_requirements(path: Path) -> list[str]:
    """The requirements of every `pip install` in RUN instructions (options dropped)."""
    reqs: list[str] = []
    for inst in parse(path):
        if inst.keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", inst.args):
            tokens = shlex.split(command)
            for i, token in enumerate(tokens[:-1]):
                if token.endswith("pip") and tokens[i + 1] == "install":
                    reqs += [t for t in tokens[i + 2 :] if not t.startswith("-")]
    return reqs


def _resolve(args: list[str], tmp_path: Path) -> dict:
    report = tmp_path / "report.json"
    cmd = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
        "--disable-pip-version-check", "--quiet", "--report", str(report), *args,
    ]  # fmt: skip
    env = {**os.environ, "PIP_NO_INPUT": "1"}
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=540, env=env, check=False
    )
    if proc.returncode != 0:
        if any(marker in proc.stderr for marker in NETWORK_ERRORS):
            pytest.skip(f"the package registry is unreachable: {proc.stderr.strip()[-300:]}")
        pytest.fail(f"pip could not resolve {args}:\n{proc.stderr[-3000:]}")
    return json.loads(report.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_installed_package_set_resolves(image: str, tmp_path: Path):
    reqs = pip_requirements(DOCKERFILES[image])
    assert reqs, f"{image}: no pip install found"
    report = _resolve(reqs, tmp_path)
    names = {item["metadata"]["name"].lower() for item in report["install"]}
    missing = EXPECTED[image] - names
    assert not missing, f"{image}: the resolved set lacks {sorted(missing)}"


def _extra_requirements(*extras: str) -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return reqs


@pytest.mark.slow
def test_trial_dependencies_have_wheels_for_the_cuda_variants_python(tmp_path: Path):
    """The CUDA variant (Ubuntu 24.04) runs Python 3.12: every dependency of the trial image
    must install there too. GPUtil ships only an sdist (pure Python, no dependencies), so it is
    checked by name, the rest as wheels for 3.12."""
    reqs = [*_extra_requirements("s3", "sidecar", "gpu"), "setuptools>=70"]
    wheels = [r for r in reqs if not r.lower().startswith("gputil")]
    target = ["--python-version", "3.12", "--only-binary=:all:", "--target", str(tmp_path / "t")]
    report = _resolve([*target, *wheels], tmp_path)
    names = {item["metadata"]["name"].lower() for item in report["install"]}
    assert {"boto3", "kubernetes", "pyyaml", "setuptools"} <= names
    sdist = _resolve(["--no-deps", *[r for r in reqs if r.lower().startswith("gputil")]], tmp_path)
    assert [i["metadata"]["name"] for i in sdist["install"]] == ["GPUtil"]


@pytest.mark.parametrize(
    "argv",
    [
        ["python", "-m", "kubetune.trial"],
        ["python", "-m", "kubetune.sidecar"],
        ["python", "-m", "kubetune.cluster.bootstrap"],
    ],
    ids=["trial", "sidecar", "shipped-code"],
)
def test_the_trial_pods_commands_run_in_the_trial_image(argv: list[str]):
    """The operator's pod builder runs these in the trial image (the sidecar image defaults to
    it): each must be a runnable module of the package the image installs."""
    pod_builder = (REPO / "operator" / "kubetune_operator" / "pod.py").read_text()
    assert f'"{argv[2]}"' in pod_builder, f"the pod builder no longer runs {argv}"
    _assert_runnable(argv, "trial pod")
