"""Benchmark: the engine alone with ASHA, N trials x R results fed as events.

    .venv/bin/python bench/bench_engine.py [--trials 10000] [--results 100]

Prints results processed per second and peak memory (tracemalloc peak of the engine run, and
the process's max RSS). No trial code runs: each result is a small dict made up front per step.
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
import tracemalloc

from kubetune.engine import CreateTrial, EngineConfig, ExperimentEngine
from kubetune.schedulers import ASHAScheduler
from kubetune.search import sample


def run(
    num_trials: int, num_results: int, concurrency: int, trace: bool, improving: bool
) -> tuple[int, float]:
    def curve(trial_id: str, lr: float, it: int) -> float:
        if improving:
            # every later trial is better: ASHA records every rung and stops no trial early,
            # so each trial reports all its results (num_trials x num_results events)
            return 1.0 / it - int(trial_id.rsplit("_", 1)[1]) * 1e-6
        return lr * 10 + 1.0 / it

    config = EngineConfig(
        param_space={"lr": sample.loguniform(1e-4, 1e-1), "width": sample.randint(8, 512)},
        metric="loss",
        mode="min",
        num_samples=num_trials,
        max_concurrent_trials=concurrency,
    )
    scheduler = ASHAScheduler(max_t=num_results, grace_period=1, reduction_factor=4)
    engine = ExperimentEngine(config, scheduler=scheduler, seed=0)
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    running: list[tuple[str, float]] = []
    for a in engine.start(0.0):
        if isinstance(a, CreateTrial):
            running.append((a.trial_id, a.config["lr"]))
    n = 0
    now = 0.0
    step = 0
    # Round robin: every running trial reports one result per round (like parallel trials).
    iteration: dict[str, int] = {}
    while running:
        step += 1
        next_round: list[tuple[str, float]] = []
        for trial_id, lr in running:
            it = iteration.get(trial_id, 0) + 1
            iteration[trial_id] = it
            now += 0.001
            result = {
                "training_iteration": it,
                "loss": curve(trial_id, lr, it),
                "time_total_s": now,
            }
            resp = engine.on_result(trial_id, result, now)
            n += 1
            if resp.verdict == "CONTINUE":
                next_round.append((trial_id, lr))
            else:
                iteration.pop(trial_id, None)
            for a in resp.actions:
                if isinstance(a, CreateTrial):
                    next_round.append((a.trial_id, a.config["lr"]))
        running = next_round
    elapsed = time.perf_counter() - t0
    assert engine.is_finished(), engine.counts()
    if trace:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"tracemalloc peak during the run: {peak / 2**20:.1f} MiB")
        print(f"per trial: {peak / num_trials:.0f} B")
    counts = engine.counts()
    print(f"trials: {counts}")
    del engine
    gc.collect()
    return n, elapsed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=10_000)
    p.add_argument("--results", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=100)
    args = p.parse_args()
    for improving in (True, False):
        kind = "no early stops" if improving else "random curves (ASHA stops most trials early)"
        print(f"== ASHA, {args.trials} trials, max_t {args.results}, {kind}")
        n, elapsed = run(args.trials, args.results, args.concurrency, False, improving)
        print(f"results processed: {n:,} in {elapsed:.2f} s -> {n / elapsed:,.0f} results/s")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"max RSS of the process so far: {rss:.1f} MiB")
    print("== again under tracemalloc (slower; for memory only), no early stops")
    run(args.trials, args.results, args.concurrency, True, True)


if __name__ == "__main__":
    main()
