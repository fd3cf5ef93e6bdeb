"""Local mode against Ray Tune, side by side in one run (issue: local mode).

Workloads (both tools, same machine, same run):
- bookkeeping: N trials (default 200), each reports one result and ends;
- throughput: 2 trials x M results (default 20,000) each.

Ray Tune is installed into its own environment (~/.cache/kubetune/bench-ray) the first time,
from PyPI (ray[tune]==RAY_VERSION); kubetune runs from this checkout. The wall time measured is
``Tuner.fit()`` in both; Ray's ``ray.init`` is timed apart.

Run: .venv/bin/python bench/bench_local.py [--trials 200] [--results 20000] [--skip-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

RAY_VERSION = "2.60.0"
RAY_ENV = os.path.expanduser("~/.cache/kubetune/bench-ray")

WORKLOAD = textwrap.dedent(
    """
    import json, sys, tempfile, time
    TOOL, KIND, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if TOOL == "ray":
        import ray
        from ray import tune
        try:
            report = tune.report
        except AttributeError:
            from ray import train
            report = train.report
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - t0
        RunConfig = getattr(tune, "RunConfig", None)
        if RunConfig is None:
            from ray.air import RunConfig
    else:
        from kubetune import tune
        from kubetune.air import session
        report = session.report
        RunConfig = tune.RunConfig
        init_s = 0.0

    def one_result(config):
        report({"score": config["x"]})

    def many_results(config):
        for i in range(config["n"]):
            report({"score": i})

    storage = tempfile.mkdtemp(prefix=f"bench-{TOOL}-")
    if KIND == "bookkeeping":
        fn, space, samples = one_result, {"x": tune.uniform(0, 1)}, N
    else:
        fn, space, samples = many_results, {"n": N, "x": tune.grid_search([0, 1])}, 1
    tuner = tune.Tuner(
        fn,
        param_space=space,
        tune_config=tune.TuneConfig(num_samples=samples, metric="score", mode="max"),
        run_config=RunConfig(storage_path=storage, name="bench", verbose=0),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    fit_s = time.perf_counter() - t0
    results = sum(int(r.metrics["training_iteration"]) for r in grid)
    print(json.dumps({"fit_s": fit_s, "init_s": init_s, "trials": len(grid), "results": results}))
    """
)


def ensure_ray() -> str:
    python = os.path.join(RAY_ENV, "bin", "python")
    probe = [python, "-c", "import ray; print(ray.__version__)"]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"installing ray[tune]=={RAY_VERSION} into {RAY_ENV} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", RAY_ENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", f"ray[tune]=={RAY_VERSION}"], check=True)
    return python


def run(python: str, tool: str, kind: str, n: int, script: str) -> dict[str, float]:
    env = dict(os.environ, RAY_DEDUP_LOGS="0", PYTHONWARNINGS="ignore")
    out = subprocess.run(
        [python, script, tool, kind, str(n)], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{tool} {kind} failed:\n{out.stderr[-3000:]}")
    line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
    return dict(json.loads(line))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--results", type=int, default=20_000)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "workload.py")
        with open(script, "w") as f:
            f.write(WORKLOAD)
        ray_python = None if args.skip_ray else ensure_ray()
        for kind, n in (("bookkeeping", args.trials), ("throughput", args.results)):
            kt = run(sys.executable, "kubetune", kind, n, script)
            line = (
                f"{kind:12s} kubetune: {kt['fit_s']:7.2f} s ({kt['trials']} trials, "
                f"{kt['results']} results"
            )
            if kind == "bookkeeping":
                line += f", {kt['fit_s'] / kt['trials'] * 1000:.0f} ms/trial)"
            else:
                line += f", {kt['results'] / kt['fit_s']:,.0f} results/s)"
            print(line, flush=True)
            if ray_python is None:
                continue
            ray = run(ray_python, "ray", kind, n, script)
            line = (
                f"{kind:12s} ray:      {ray['fit_s']:7.2f} s ({ray['trials']} trials, "
                f"{ray['results']} results, ray.init {ray['init_s']:.1f} s"
            )
            if kind == "bookkeeping":
                line += f", {ray['fit_s'] / ray['trials'] * 1000:.0f} ms/trial)"
            else:
                line += f", {ray['results'] / ray['fit_s']:,.0f} results/s)"
            print(line)
            ratio = ray["fit_s"] / kt["fit_s"]
            print(
                f"{kind:12s} ratio ray/kubetune wall time: {ratio:.1f}x (goal >= 10x)", flush=True
            )
        time.sleep(0)


if __name__ == "__main__":
    main()
