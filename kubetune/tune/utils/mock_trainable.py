"""``tune.utils.mock_trainable``: the toy Class-API trainable Ray's examples use.

Its learning curve is ``height * tanh(timestep / width)`` from the config (defaults 1), with
optional ``sleep`` seconds per step and ``mock_error`` to fail after the first step (once, or
every time with ``persistent_error``); it checkpoints its timestep.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from kubetune.tune.trainable import Trainable

MOCK_TRAINABLE_NAME = "mock_trainable"
MOCK_ERROR_KEY = "mock_error"


class MyTrainableClass(Trainable):
    def setup(self, config: dict[str, Any]) -> None:
        self._sleep_time = config.get("sleep", 0)
        self._mock_error = config.get(MOCK_ERROR_KEY, False)
        self._persistent_error = config.get("persistent_error", False)
        self.timestep = 0
        self.restored = False

    def step(self) -> dict[str, Any]:
        if self._mock_error and self.timestep > 0 and (self._persistent_error or not self.restored):
            raise RuntimeError(f"failing on purpose at timestep {self.timestep}")
        if self._sleep_time > 0:
            time.sleep(self._sleep_time)
        self.timestep += 1
        value = math.tanh(float(self.timestep) / self.config.get("width", 1))
        return {"episode_reward_mean": value * self.config.get("height", 1)}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        with open(os.path.join(checkpoint_dir, "checkpoint"), "w") as f:
            json.dump({"timestep": self.timestep}, f)

    def load_checkpoint(self, checkpoint_dir: dict[str, Any] | str) -> None:
        assert isinstance(checkpoint_dir, str)
        with open(os.path.join(checkpoint_dir, "checkpoint")) as f:
            self.timestep = json.load(f)["timestep"]
        self.restored = True


def register_mock_trainable() -> None:
    from kubetune.tune.registry import register_trainable

    register_trainable(MOCK_TRAINABLE_NAME, MyTrainableClass)
