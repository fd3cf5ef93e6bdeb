"""Trial runner overhead (issue: trial SDK).

Prints:
- session.report calls per second in one trial process, results persisted to result.json and
  progress.csv (goal: >= 20,000/s);
- process start -> first result line written, over several runs (goal: <= 150 ms).

Run: .venv/bin/python bench/bench_runner.py [--reports N] [--starts K]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

TRAINABLE = textwrap.dedent(
    """
    import time
    from kubetune.air import session

    def many(config):
        n = config["n"]
        t0 = time.perf_counter()
        for i in range(n):
            session.report({"loss": 1.0 / (i + 1), "acc": i * 0.001, "epoch": i})
        elapsed = time.perf_counter() - t0
        with open(config["timing"], "w") as f:
            f.write(str(elapsed))

    def one(config):
        session.report({"loss": 0.5})
    """
)


def run_trial(
    workdir: str, name: str, fn: str, config: dict[str, object]
) -> subprocess.Popen[bytes]:
    spec = {
        "trial_id": name,
        "out_dir": os.path.join(workdir, name),
        "trainable": f"bench_trainable:{fn}",
        "config": config,
        "python_path": [workdir],
        "chdir_to_trial_dir": False,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "kubetune.trial", "--spec-json", json.dumps(spec)],
        stdout=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=100_000)
    parser.add_argument("--starts", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        with open(os.path.join(workdir, "bench_trainable.py"), "w") as f:
            f.write(TRAINABLE)

        timing = os.path.join(workdir, "timing")
        proc = run_trial(workdir, "many", "many", {"n": args.reports, "timing": timing})
        assert proc.wait() == 0
        with open(timing) as f:
            elapsed = float(f.read())
        with open(os.path.join(workdir, "many", "result.json")) as f:
            lines = sum(1 for _ in f)
        assert lines == args.reports, (lines, args.reports)
        rate = args.reports / elapsed
        verdict = "OK" if rate >= 20_000 else "BELOW GOAL"
        print(
            f"session.report: {args.reports} reports in {elapsed:.2f} s = {rate:,.0f} reports/s"
            f" (goal >= 20,000/s) {verdict}"
        )

        latencies = []
        for i in range(args.starts):
            result_file = os.path.join(workdir, f"one{i}", "result.json")
            t0 = time.perf_counter()
            proc = run_trial(workdir, f"one{i}", "one", {})
            while True:
                try:
                    if os.path.getsize(result_file) > 0:
                        break
                except FileNotFoundError:
                    pass
                time.sleep(0.0005)
            latencies.append((time.perf_counter() - t0) * 1000)
            proc.wait()
        p50 = statistics.median(latencies)
        worst = max(latencies)
        verdict = "OK" if p50 <= 150 else "BELOW GOAL"
        print(
            f"process start -> first result: p50 {p50:.0f} ms, max {worst:.0f} ms over"
            f" {args.starts} starts (goal <= 150 ms) {verdict}"
        )


if __name__ == "__main__":
    main()
