"""examples/pbt.py's Optimiser for the PBT operator test, its members waiting for each other.

PBT ranks the trials that are alive at a perturbation point, so an exploit needs peers that
train side by side; on a loaded machine pods can start so far apart that they never overlap.
Each member first waits (up to a minute) until ``population`` members have started, through
files in ``barrier`` (the test kubelet's pods share this machine's filesystem). A restarted
member finds the barrier already full. Imported only inside trial pods (``pbt`` comes from
examples/ on their pythonPath).
"""

from __future__ import annotations

import os
import time

from pbt import Optimiser  # type: ignore[import-not-found]


class Population(Optimiser):  # type: ignore[misc]
    def setup(self, config: dict) -> None:
        super().setup(config)
        barrier = config["barrier"]
        os.makedirs(barrier, exist_ok=True)
        with open(os.path.join(barrier, self.trial_id), "w"):
            pass
        deadline = time.monotonic() + 60
        while len(os.listdir(barrier)) < config["population"] and time.monotonic() < deadline:
            time.sleep(0.05)
