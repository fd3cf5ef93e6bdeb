"""Trainables for the local-mode tests (importable by trial processes)."""

from __future__ import annotations

import os
import time

from kubetune import tune
from kubetune.air import session
from kubetune.air.checkpoint import Checkpoint


def objective(x, a, b):
    return a * (x**0.5) + b


def every_step(config):
    for x in range(20):
        session.report({"score": objective(x, config["a"], config["b"])})


def returns_final(config):
    final = 0.0
    for x in range(20):
        final = objective(x, config["a"], config["b"])
    return {"score": final}


def train_func(config):
    epochs = config.get("epochs", 2)
    start = 0
    loaded = session.get_checkpoint()
    if loaded:
        start = loaded.to_dict()["step"] + 1
    for step in range(start, epochs):
        session.report(
            {"metric": "my_metric", "step": step}, checkpoint=Checkpoint.from_dict({"step": step})
        )


def slow_checkpointing(config):
    """Reports every 50 ms with a checkpoint; writes its pid so a test can kill it."""
    start = 0
    loaded = session.get_checkpoint()
    if loaded:
        start = loaded.to_dict()["step"] + 1
    with open(os.path.join(config["pid_dir"], f"{session.get_trial_id()}.pid"), "w") as f:
        f.write(str(os.getpid()))
    for step in range(start, config["steps"]):
        time.sleep(config.get("sleep", 0.05))
        session.report(
            {"step": step, "score": step}, checkpoint=Checkpoint.from_dict({"step": step})
        )


def curve(config):
    """A learning curve whose level is config["level"]: better trials are higher throughout."""
    for i in range(1, config.get("iters", 20) + 1):
        session.report({"acc": config["level"] * (1 - 1 / (i + 1))})


def always_fails(config):
    session.report({"x": 1})
    raise RuntimeError(f"bad trainable (config {config})")


def sleeps_between_reports(config):
    for i in range(1000):
        session.report({"i": i})
        time.sleep(0.05)


class Counter(tune.Trainable):
    def setup(self, config):
        self.n = 0
        self.resets = 0
        self.pid = os.getpid()

    def step(self):
        self.n += 1
        return {
            "n": self.n,
            "score": self.config["a"] * self.n,
            "pid": self.pid,
            "resets": self.resets,
        }

    def save_checkpoint(self, d):
        return {"n": self.n}

    def load_checkpoint(self, c):
        self.n = c["n"]

    def reset_config(self, new_config):
        self.config = new_config
        self.n = 0
        self.resets += 1
        return True


class PBTCounter(tune.Trainable):
    def setup(self, config):
        self.value = 0.0

    def step(self):
        time.sleep(0.03)  # the population trains side by side
        self.value += self.config["lr"]
        return {"value": self.value, "lr": self.config["lr"]}

    def save_checkpoint(self, d):
        return {"value": self.value}

    def load_checkpoint(self, c):
        self.value = c["value"]


class MyTrainableNoReset(tune.Trainable):
    """reset_config is not implemented: reuse must fall back to a new process."""

    def step(self):
        return {"pid": os.getpid(), "a": self.config["a"]}


def reports_visible_gpus(config):
    time.sleep(0.3)  # overlap with the other trial, so both hold a GPU at once
    session.report({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES", "")})


def reports_gpu_and_time(config):
    """When it held its GPU: two trials sharing one overlap in time."""
    began = time.time()
    time.sleep(1.0)
    session.report(
        {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES", ""), "began": began, "ended": time.time()}
    )


class CountsSteps(tune.Trainable):
    """Announces each step (pid, n) in config["marks"]; state is the number of steps."""

    def setup(self, config):
        self.n = 0
        self.restored_from = None

    def step(self):
        with open(self.config["marks"], "a") as f:
            f.write(f"{os.getpid()} {self.n + 1} {time.monotonic()}\n")
        time.sleep(self.config["step_s"])
        self.n += 1
        return {"n": self.n, "restored_from": self.restored_from}

    def save_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "n.txt"), "w") as f:
            f.write(str(self.n))

    def load_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "n.txt")) as f:
            self.n = int(f.read())
        self.restored_from = self.n


def flags_when_done(config):
    """Reports a boolean ``finished`` that turns true at iteration config["at"]."""
    for i in range(1, 50):
        session.report({"score": i, "finished": i >= config["at"]})


def reports_its_cpus(config):
    """Checkpoints every step and reports the CPUs its trial was given (Ray's head_cpus)."""
    from kubetune.tune import get_context

    step = 0
    loaded = session.get_checkpoint()
    if loaded:
        step = loaded.to_dict()["step"]
    cpus = get_context().get_trial_resources().head_cpus
    while step < config["steps"]:
        step += 1
        time.sleep(config.get("sleep", 0.05))
        session.report(
            {"step": step, "cpus": cpus}, checkpoint=Checkpoint.from_dict({"step": step})
        )
