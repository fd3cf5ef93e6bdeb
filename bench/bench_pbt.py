"""PBT side by side with Ray Tune on the classic toy (issue 14: PBT must time-share).

The toy: a trial's accuracy grows fastest when its learning rate follows a triangle wave of
the accuracy itself (0.001 at 0, 0.01 at 100, 0.001 at 200, clipped to [0.001, 0.01]); a rate
more than 3x off makes no progress (or loses accuracy when too high), plus Gaussian noise.
Every member starts at lr 0.0001, where nothing is learnt: only PBT's exploits (copying a
better member's checkpoint and perturbing its lr) make progress. Population 4, room for 2
trials at once (Ray: ``ray.init(num_cpus=2)``, 1 CPU a trial; kubetune: each trial asks for
half of this machine's CPUs), ``perturbation_interval`` 4 on ``training_iteration``, 100
iterations, a checkpoint with every result. Both tools run the same trainable code.

Printed per tool and run: the best final ``mean_accuracy`` and how many of the 4 trials were
mutated (their reported ``lr`` changed at least once), and the wall time of ``fit()``.

Run: .venv/bin/python bench/bench_pbt.py [--runs 3] [--iterations 100] [--skip-ray]
Ray comes from the environment bench/bench_local.py installs (ray[tune]==2.60.0 from PyPI).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_local import RAY_VERSION, ensure_ray

WORKLOAD = textwrap.dedent(
    """
    import json, os, random, sys, tempfile, time
    TOOL, ITERATIONS = sys.argv[1], int(sys.argv[2])
    if TOOL == "ray":
        import ray
        from ray import tune
        from ray.tune.schedulers import PopulationBasedTraining
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        resources = {"cpu": 1}
    else:
        from kubetune import tune
        from kubetune.tune.schedulers import PopulationBasedTraining
        resources = {"cpu": (os.cpu_count() or 2) / 2}

    def triangle_lr(accuracy):
        peak = 100.0
        if accuracy < peak:
            best = 0.01 * accuracy / peak
        else:
            best = 0.01 - 0.01 * (accuracy - peak) / peak
        return min(0.01, max(0.001, best))

    def toy(config):
        lr = config["lr"]
        accuracy, step = 0.0, 1
        ckpt = tune.get_checkpoint()
        if ckpt:
            with ckpt.as_directory() as d:
                with open(os.path.join(d, "state.json")) as f:
                    state = json.load(f)
            accuracy, step = state["accuracy"], state["step"] + 1
        while True:
            best = triangle_lr(accuracy)
            q_err = max(lr, best) / min(lr, best)
            if q_err < 3:
                accuracy += random.random() / q_err
            elif lr > best:
                accuracy -= (q_err - 3) * random.random()
            accuracy = max(0.0, accuracy + random.gauss(0.0, 2.0))
            metrics = {"mean_accuracy": accuracy, "cur_lr": lr, "optimal_lr": best}
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump({"accuracy": accuracy, "step": step}, f)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
            step += 1

    pbt = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=4,
        hyperparam_mutations={"lr": tune.uniform(0.0001, 0.02), "some_other_factor": [1, 2]},
    )
    tuner = tune.Tuner(
        tune.with_resources(toy, resources),
        param_space={"lr": 0.0001, "some_other_factor": 1},
        tune_config=tune.TuneConfig(
            scheduler=pbt, metric="mean_accuracy", mode="max", num_samples=4
        ),
        run_config=tune.RunConfig(
            name="pbt_toy",
            storage_path=tempfile.mkdtemp(prefix=f"bench-pbt-{TOOL}-"),
            stop={"training_iteration": ITERATIONS},
            verbose=0,
        ),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    fit_s = time.perf_counter() - t0
    finals, mutated, iterations = [], 0, []
    for result in grid:
        rows = result.metrics_dataframe.to_dict("records")
        finals.append(result.metrics["mean_accuracy"])
        iterations.append(result.metrics["training_iteration"])
        if len({round(r["cur_lr"], 12) for r in rows}) > 1:
            mutated += 1
    print(json.dumps({
        "best": max(finals), "mutated": mutated, "trials": len(finals),
        "iterations": iterations, "fit_s": fit_s,
    }))
    """
)


def run(python: str, tool: str, iterations: int, script: str) -> dict[str, object]:
    env = dict(os.environ, RAY_DEDUP_LOGS="0", PYTHONWARNINGS="ignore")
    out = subprocess.run(
        [python, script, tool, str(iterations)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{tool} failed:\n{out.stderr[-3000:]}")
    line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
    return dict(json.loads(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    ray_python = None if args.skip_ray else ensure_ray()
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "pbt_toy.py")
        with open(script, "w") as f:
            f.write(WORKLOAD)
        tools = [("kubetune", sys.executable)]
        if ray_python is not None:
            tools.append((f"ray {RAY_VERSION}", ray_python))
        for i in range(1, args.runs + 1):
            for label, python in tools:
                tool = "ray" if label.startswith("ray") else "kubetune"
                r = run(python, tool, args.iterations, script)
                print(
                    f"run {i} {label:10s} best mean_accuracy {r['best']:6.1f}  "
                    f"trials mutated {r['mutated']}/{r['trials']}  "
                    f"iterations {r['iterations']}  fit {r['fit_s']:.1f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
