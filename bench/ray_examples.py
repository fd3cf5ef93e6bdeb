"""Ray's own example scripts under Ray and under kubetune, imports changed only (issue 14).

What it does, in one run on this machine:
1. gets the ray==RAY_VERSION wheel (``pip download --no-deps``) into ~/.cache/kubetune/wheels
   and extracts ``ray/tune/examples/*.py`` into a temporary folder (never into the repo);
2. installs Ray Tune and the libraries the examples use into ~/.cache/kubetune/bench-ray (the
   environment bench_local.py uses too), and the few example-only libraries that are no
   kubetune extra (xgboost, lightgbm) into ~/.cache/kubetune/bench-example-deps, put on the
   kubetune runs' PYTHONPATH (the repo's .venv is left as `make` installed it);
3. for each script: runs it under Ray, then a copy with its imports converted
   (``import ray`` -> ``import kubetune as ray``, ``from ray.x import`` -> ``from kubetune.x
   import``, ``ray.tune.examples.m`` -> the converted sibling ``m``) under kubetune, each with
   ``--smoke-test`` where the script has it and a wall-time limit;
4. prints a table (script, ray ok/time, kubetune ok/time, kubetune/ray wall-time ratio, first
   error line), the pass counts, the ratios' geometric mean and median over the scripts both
   pass, and which pass on one side only; writes them as JSON with ``--json``.

Run: .venv/bin/python bench/ray_examples.py [--limit 180] [--only a,b] [--skip-ray]
     [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Any

RAY_VERSION = "2.60.0"
CACHE = os.path.expanduser("~/.cache/kubetune")
WHEELS = os.path.join(CACHE, "wheels")
RAY_ENV = os.path.join(CACHE, "bench-ray")
EXAMPLE_DEPS = os.path.join(CACHE, "bench-example-deps")
# what the examples import besides Ray (the Ray side); torch/tensorflow-based ones are left out
RAY_SIDE = [
    f"ray[tune]=={RAY_VERSION}",
    "hyperopt",
    "bayesian-optimization==1.4.0",
    "nevergrad",
    "zoopt",
    "hpbandster",
    "ConfigSpace",
    "optuna",
    "scikit-learn",
    "GPy",
    "lightgbm",
    "xgboost-cpu",
    "tensorboardX",
    "mlflow-skinny",  # what kubetune[mlflow] installs: both sides log with the same MLflow
]
KUBETUNE_SIDE = ["lightgbm", "xgboost-cpu"]  # not kubetune extras: examples' own needs
SKIP = {"__init__.py", "utils.py"}  # helpers, not examples

_IMPORT = re.compile(r"^(\s*)(from|import)\s+(ray)(\.[\w.]+)?(\s+|$)(.*)$")
_ERROR = re.compile(r"^(\w+\.)*\w*(Error|Exception|Exit|Interrupt)\b.*")


def wheel() -> str:
    os.makedirs(WHEELS, exist_ok=True)
    for name in os.listdir(WHEELS):
        if name.startswith(f"ray-{RAY_VERSION}-") and name.endswith(".whl"):
            return os.path.join(WHEELS, name)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", WHEELS,
         f"ray=={RAY_VERSION}"],
        check=True,
    )  # fmt: skip
    return wheel()


def ensure_ray_env() -> str:
    python = os.path.join(RAY_ENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", RAY_ENV], check=True)
    probe = "import ray, hyperopt, bayes_opt, nevergrad, zoopt, hpbandster, optuna, GPy, mlflow"
    if subprocess.run([python, "-c", probe], capture_output=True).returncode != 0:
        print(f"installing Ray {RAY_VERSION} and the examples' libraries into {RAY_ENV} ...")
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "--find-links", WHEELS, *RAY_SIDE], check=True
        )
    return python


def ensure_example_deps() -> None:
    if os.path.isdir(os.path.join(EXAMPLE_DEPS, "lightgbm")):
        return
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", EXAMPLE_DEPS,
         *KUBETUNE_SIDE],
        check=True,
    )  # fmt: skip


def extract(whl: str, dest: str) -> list[str]:
    names = []
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            m = re.fullmatch(r"ray/tune/examples/([\w]+\.py)", info.filename)
            if m:
                with open(os.path.join(dest, m.group(1)), "wb") as f:
                    f.write(z.read(info))
                if m.group(1) not in SKIP:
                    names.append(m.group(1))
    return sorted(names)


def convert_line(line: str) -> str:
    """The import on this line, Ray's modules replaced by kubetune's; other lines unchanged."""
    m = _IMPORT.match(line)
    if not m:
        return line
    indent, kw, _, sub, sep, rest = m.groups()
    sub = sub or ""
    if sub.startswith(".tune.examples."):  # a sibling example module
        local = sub[len(".tune.examples.") :]
        return f"{indent}{kw} {local}{sep}{rest}"
    if kw == "import" and not sub:  # `import ray` (maybe `, os`)
        if rest.startswith("as "):
            return f"{indent}import kubetune{sep}{rest}"
        return f"{indent}import kubetune as ray{(', ' + rest.lstrip(', ')) if rest else ''}"
    return f"{indent}{kw} kubetune{sub}{sep}{rest}"


def convert(src_dir: str, dest: str, names: list[str]) -> None:
    for name in [*names, *sorted(SKIP)]:
        path = os.path.join(src_dir, name)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            lines = f.read().split("\n")
        with open(os.path.join(dest, name), "w") as f:
            f.write("\n".join(convert_line(x) for x in lines))


def first_error(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    errors = [x for x in lines if _ERROR.match(x)]
    if errors:
        return errors[-1][:160]
    return lines[-1][:160] if lines else ""


def run_one(python: str, script: str, limit: float, env: dict[str, str]) -> dict[str, object]:
    with open(script) as f:
        args = ["--smoke-test"] if "--smoke-test" in f.read() else []
    cwd = tempfile.mkdtemp(prefix="ex-run-")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        ["nice", python, script, *args],
        cwd=cwd,
        # each run its own home: ~/ray_results and ~/kubetune_results start empty, so a rerun
        # (or another user's run of the same example) does not meet an earlier experiment
        env=dict(env, HOME=cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=limit)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = None
    wall = time.perf_counter() - t0
    shutil.rmtree(cwd, ignore_errors=True)
    error = "" if rc == 0 else (f"timed out after {limit:.0f} s; " if rc is None else "")
    if rc != 0:
        error += first_error(out or "")
    return {"ok": rc == 0, "rc": rc, "wall_s": round(wall, 1), "error": error, "tail": out[-4000:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=float, default=180.0, help="seconds per script and tool")
    parser.add_argument("--only", default="", help="comma-separated script names")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument("--keep", default="", help="keep the converted scripts in this folder")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="ray-examples-")
    ray_dir, kt_dir = os.path.join(tmp, "ray"), args.keep or os.path.join(tmp, "kubetune")
    os.makedirs(ray_dir)
    os.makedirs(kt_dir, exist_ok=True)
    names = extract(wheel(), ray_dir)
    if args.only:
        wanted = {n if n.endswith(".py") else n + ".py" for n in args.only.split(",")}
        names = [n for n in names if n in wanted]
    convert(ray_dir, kt_dir, names)
    ray_python = None if args.skip_ray else ensure_ray_env()
    ensure_example_deps()

    base = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    base.update(RAY_DEDUP_LOGS="0", TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="0", MPLBACKEND="Agg")
    kt_env = dict(base, PYTHONPATH=EXAMPLE_DEPS)
    rows = []
    for name in names:
        row: dict[str, object] = {"script": name}
        if ray_python:
            row["ray"] = run_one(ray_python, os.path.join(ray_dir, name), args.limit, base)
        row["kubetune"] = run_one(sys.executable, os.path.join(kt_dir, name), args.limit, kt_env)
        rows.append(row)
        print(_line(row), flush=True)

    print()
    print(_HEADER)
    for row in rows:
        print(_line(row))
    print()
    for line in summary(rows):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"ray_version": RAY_VERSION, "limit_s": args.limit, "rows": rows}, f, indent=1
            )
    shutil.rmtree(tmp if not args.keep else ray_dir, ignore_errors=True)


def _ok(row: dict[str, Any], tool: str) -> bool:
    res = row.get(tool)
    return isinstance(res, dict) and bool(res["ok"])


def _ratio(row: dict[str, Any]) -> float | None:
    """kubetune's wall time over Ray's, where both passed (same script, same run)."""
    if not (_ok(row, "ray") and _ok(row, "kubetune")):
        return None
    return float(row["kubetune"]["wall_s"]) / max(float(row["ray"]["wall_s"]), 0.1)


def summary(rows: list[dict[str, Any]]) -> list[str]:
    n_ray = sum(_ok(r, "ray") for r in rows)
    n_kt = sum(_ok(r, "kubetune") for r in rows)
    out = [f"passed: ray {n_ray}/{len(rows)}, kubetune {n_kt}/{len(rows)}"]
    ratios = [x for x in (_ratio(r) for r in rows) if x is not None]
    if ratios:
        geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        out.append(
            f"both passed: {len(ratios)}; wall time kubetune/ray: geometric mean {geo:.2f},"
            f" median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}"
        )
    if any("ray" in r for r in rows):
        only_ray = [str(r["script"]) for r in rows if _ok(r, "ray") and not _ok(r, "kubetune")]
        only_kt = [str(r["script"]) for r in rows if _ok(r, "kubetune") and not _ok(r, "ray")]
        out.append(f"ray only: {', '.join(only_ray) or '-'}")
        out.append(f"kubetune only: {', '.join(only_kt) or '-'}")
    return out


_HEADER = f"{'script':45s} {'ray':>12s} {'kubetune':>12s} {'kt/ray':>6s}  first error"


def _cell(res: object) -> str:
    if not isinstance(res, dict):
        return "-"
    return f"{'ok' if res['ok'] else 'FAIL'} {res['wall_s']:6.1f}s"


def _line(row: dict[str, object]) -> str:
    kt = row["kubetune"]
    ray = row.get("ray")
    errors = []
    if isinstance(kt, dict) and kt["error"]:
        errors.append(f"kt: {kt['error']}")
    if isinstance(ray, dict) and ray["error"]:
        errors.append(f"ray: {ray['error']}")
    ratio = _ratio(row)
    cell = f"{ratio:6.2f}" if ratio is not None else f"{'-':>6s}"
    return f"{row['script']:45s} {_cell(ray):>12s} {_cell(kt):>12s} {cell}  {' | '.join(errors)}"


if __name__ == "__main__":
    main()
