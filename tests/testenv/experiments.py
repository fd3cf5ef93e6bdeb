"""Large experiment trees written directly in local mode's layout (experiment_state.json
with the engine's trial records, and each trial's result.json), for the dashboard's scale test
and bench: running 1,000 real trial processes would take minutes and measure nothing the
dashboard does. Small experiments in the tests are real runs."""

from __future__ import annotations

import json
import math
import os
import random
import time
from typing import Any


class SyntheticExperiment:
    """``trials`` trials of an ASHA-like run; :meth:`grow` appends rows to the live ones."""

    def __init__(self, path: str, trials: int, seed: int = 0) -> None:
        self.path = path
        self.rng = random.Random(seed)
        self.configs = [
            {"lr": 10 ** self.rng.uniform(-4, -1), "layers": self.rng.choice([1, 2, 3, 4])}
            for _ in range(trials)
        ]
        self.rows = [0] * trials
        self.status = ["RUNNING"] * trials
        self.stop_reason: list[str | None] = [None] * trials
        os.makedirs(path, exist_ok=True)
        for i in range(trials):
            os.makedirs(os.path.join(path, self.dirname(i)), exist_ok=True)

    def dirname(self, i: int) -> str:
        return f"train_synth_{i:05d}"

    def loss(self, i: int, it: int) -> float:
        c = self.configs[i]
        return abs(math.log10(c["lr"]) + 2.5) + 0.1 * c["layers"] + 1.0 / it

    def grow(self, i: int, n: int) -> None:
        lines = []
        for _ in range(n):
            self.rows[i] += 1
            it = self.rows[i]
            lines.append(
                json.dumps(
                    {
                        "loss": self.loss(i, it),
                        "acc": 1 - self.loss(i, it) / 5,
                        "training_iteration": it,
                        "time_this_iter_s": 0.01,
                        "time_total_s": 0.01 * it,
                        "timestamp": int(time.time()),
                        "done": False,
                        "trial_id": f"synth_{i:05d}",
                        "config": self.configs[i],
                        "pid": 1,
                        "hostname": "bench",
                        "node_ip": "127.0.0.1",
                        "iterations_since_restore": it,
                    }
                )
            )
        with open(os.path.join(self.path, self.dirname(i), "result.json"), "a") as f:
            f.write("".join(line + "\n" for line in lines))

    def finish(self, i: int, reason: str) -> None:
        self.status[i] = "TERMINATED"
        self.stop_reason[i] = reason

    def fill(self, results: int, early_stop_every: int = 3) -> None:
        """Every trial to ``results`` rows, except that one in ``early_stop_every`` is stopped
        by the scheduler at a rung (10 or 30)."""
        for i in range(len(self.configs)):
            n = results
            if early_stop_every and i % early_stop_every == 1:
                n = min(results, 10 if i % 2 else 30)
            self.grow(i, n - self.rows[i])
            self.finish(i, "scheduler")
        self.write_state(finished=True)

    def write_state(self, finished: bool = False) -> None:
        records: list[dict[str, Any]] = []
        summaries = []
        for i, config in enumerate(self.configs):
            trial_id = f"synth_{i:05d}"
            records.append(
                {
                    "trial_id": trial_id,
                    "index": i,
                    "name": self.dirname(i),
                    "tag": str(i),
                    "config": config,
                    "resources": {},
                    "status": self.status[i],
                    "num_failures": 0,
                    "error": None,
                    "stop_reason": self.stop_reason[i],
                    "num_results": self.rows[i],
                    "checkpoints": [],
                    "latest_checkpoint": None,
                }
            )
            summaries.append(
                {
                    "trial_id": trial_id,
                    "trial_name": self.dirname(i),
                    "dirname": self.dirname(i),
                    "status": self.status[i],
                    "error": None,
                    "num_failures": 0,
                    "latest_checkpoint": None,
                    "checkpoints": [],
                }
            )
        state = {
            "format": 1,
            "updated": time.time(),
            "finished": {"status": "SUCCEEDED"} if finished else None,
            "engine": {
                "config": {"metric": "loss", "mode": "min", "param_space": {}},
                "trials": records,
                "scheduler": {"type": "AsyncHyperBandScheduler", "state": {}},
            },
            "trials": summaries,
            "metric": "loss",
            "mode": "min",
        }
        tmp = os.path.join(self.path, "experiment_state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, os.path.join(self.path, "experiment_state.json"))
