"""The reference page's trainables (imports changed from ray to kubetune), plus a few for
the runner's edge cases. Importable as ``tests.unit.sdk.trainables`` by trial processes."""

from __future__ import annotations

import os
import pickle
import time

from kubetune import tune
from kubetune.air import session
from kubetune.air.checkpoint import Checkpoint


def objective(x, a, b):
    return a * (x**0.5) + b


# -- Function API ---------------------------------------------------------------------------
def trainable_every_step(config: dict):
    intermediate_score = 0
    for x in range(20):
        intermediate_score = objective(x, config["a"], config["b"])
        session.report({"score": intermediate_score})  # This sends the score to Tune.


def trainable_once(config: dict):
    final_score = 0
    for x in range(20):
        final_score = objective(x, config["a"], config["b"])
    session.report({"score": final_score})  # This sends the score to Tune.


def trainable_returns(config: dict):
    final_score = 0
    for x in range(20):
        final_score = objective(x, config["a"], config["b"])

    return {"score": final_score}  # This sends the score to Tune.


def train_func(config):
    epochs = config.get("epochs", 2)
    start = 0
    loaded_checkpoint = session.get_checkpoint()
    if loaded_checkpoint:
        last_step = loaded_checkpoint.to_dict()["step"]
        start = last_step + 1

    for step in range(start, epochs):
        # Model training here
        # ...

        # Report metrics and save a checkpoint
        metrics = {"metric": "my_metric"}
        checkpoint = Checkpoint.from_dict({"step": step})
        session.report(metrics, checkpoint=checkpoint)


def train_func_trial_dir(config):
    session.report({"trial_dir": session.get_trial_dir(), "cwd": os.getcwd()})


def session_facts(config):
    resources = session.get_trial_resources()
    session.report(
        {
            "trial_name": session.get_trial_name(),
            "trial_id": session.get_trial_id(),
            "experiment_name": session.get_experiment_name(),
            "bundles": resources.bundles,
            "required": resources.required_resources,
        }
    )


def aliases(config):
    tune.report({"via": 1})
    from kubetune import train

    train.report({"via": 2})
    tune.report(via=3)  # Ray 1.x keyword style


def directory_checkpoints(config):
    for step in range(3):
        d = os.path.join(config["scratch"], f"ckpt{step}")
        os.makedirs(d)
        with open(os.path.join(d, "weights.bin"), "wb") as f:
            f.write(bytes([step]) * 10)
        session.report({"step": step}, checkpoint=Checkpoint.from_directory(d))


def fails_after(config):
    for i in range(config["n"]):
        session.report({"i": i}, checkpoint=Checkpoint.from_dict({"i": i}))
    raise ValueError("boom in user code")


def reports_non_dict(config):
    session.report({"ok": 1})
    session.report([1, 2, 3])


def reports_unserialisable(config):
    session.report({"ok": 1})
    session.report({"nested": {"bad": object()}})


def reports_missing_checkpoint_dir(config):
    session.report({"ok": 1}, checkpoint=Checkpoint.from_dict({"a": 1}))
    os.makedirs("/tmp/kubetune-test-gone", exist_ok=True)
    ckpt = Checkpoint.from_directory("/tmp/kubetune-test-gone")
    os.rmdir("/tmp/kubetune-test-gone")
    session.report({"ok": 2}, checkpoint=ckpt)


def numpy_values(config):
    import numpy as np

    session.report(
        {
            "f32": np.float32(0.5),
            "i64": np.int64(7),
            "arr": np.arange(3),
            "nan": float("nan"),
            "inf": float("inf"),
            "nested": {"loss": 0.25},
        }
    )


def slow_reporter(config):
    for i in range(10_000):
        session.report({"i": i})
        time.sleep(config.get("sleep", 0.01))


def swallows_everything(config):
    # A user's broad except must not swallow the runner's stop.
    for i in range(100):
        try:
            session.report({"i": i})
        except Exception:
            pass


# -- Class API ------------------------------------------------------------------------------
class Trainable(tune.Trainable):
    def setup(self, config: dict):
        # config (dict): A dict of hyperparameters
        self.x = 0
        self.a = config["a"]
        self.b = config["b"]

    def step(self):  # This is called iteratively.
        score = objective(self.x, self.a, self.b)
        self.x += 1
        return {"score": score}


class MyTrainableClass(tune.Trainable):
    """The page's checkpointing example with a numpy model instead of torch."""

    def setup(self, config):
        import numpy as np

        self.model = np.zeros((config.get("input_size", 32), 10))
        self.steps = 0

    def step(self):
        self.model += 1
        self.steps += 1
        return {"model_sum": float(self.model.sum()), "steps": self.steps}

    def save_checkpoint(self, tmp_checkpoint_dir):
        checkpoint_path = os.path.join(tmp_checkpoint_dir, "model.pth")
        with open(checkpoint_path, "wb") as f:
            pickle.dump((self.model, self.steps), f)
        return tmp_checkpoint_dir

    def load_checkpoint(self, tmp_checkpoint_dir):
        checkpoint_path = os.path.join(tmp_checkpoint_dir, "model.pth")
        with open(checkpoint_path, "rb") as f:
            self.model, self.steps = pickle.load(f)


class ManualCheckpoint(tune.Trainable):
    def setup(self, config):
        self.i = 0

    def step(self):
        self.i += 1
        result = {"mean_accuracy": self.i / 10}
        if self.i in self.config["preempt_at"]:
            result.update(should_checkpoint=True)
        return result

    def save_checkpoint(self, checkpoint_dir):
        return {"i": self.i}

    def load_checkpoint(self, checkpoint):
        self.i = checkpoint["i"]


class PathCheckpoint(tune.Trainable):
    """save_checkpoint returns a path inside its directory (the page's relative-path rule)."""

    def setup(self, config):
        self.value = config.get("value", 0)
        self.loaded_from = None

    def step(self):
        self.value += 1
        return {"value": self.value, "loaded_from": self.loaded_from}

    def save_checkpoint(self, checkpoint_path):
        my_checkpoint_path = os.path.join(checkpoint_path, "my/path")
        os.makedirs(os.path.dirname(my_checkpoint_path), exist_ok=True)
        with open(my_checkpoint_path, "w") as f:
            f.write(str(self.value))
        return my_checkpoint_path

    def load_checkpoint(self, my_checkpoint_path):
        self.loaded_from = my_checkpoint_path
        with open(my_checkpoint_path) as f:
            self.value = int(f.read())


class BadSavePath(tune.Trainable):
    def step(self):
        return {"should_checkpoint": True}

    def save_checkpoint(self, checkpoint_dir):
        return "/tmp/NEW_CHECKPOINT_PATH/my_checkpoint_file"


class ReportsInside(tune.Trainable):
    def step(self):
        session.report({"x": 1})
        return {}


class DoneAfterThree(tune.Trainable):
    def setup(self, config):
        self.n = 0
        self.cleaned = False

    def step(self):
        self.n += 1
        return {"n": self.n, "done": self.n >= 3}

    def cleanup(self):
        with open(os.path.join(self.logdir, "cleanup_called"), "w") as f:
            f.write("yes")


class SlowClass(tune.Trainable):
    def setup(self, config):
        self.n = 0

    def step(self):
        self.n += 1
        time.sleep(0.01)
        return {"n": self.n}

    def save_checkpoint(self, d):
        return {"n": self.n}

    def load_checkpoint(self, c):
        self.n = c["n"]
