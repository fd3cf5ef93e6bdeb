"""examples/pbt.py's Optimiser for the PBT operator test, made so that exploits must happen.

PBT (as Ray's) ranks each live trial's newest score at its perturbation points against the
others' newest scores, which may be older. With scores that improve over time, members that
report in lockstep each look better than the others' stale scores, and for some orders of
arrival nobody is ever in the lower quantile: no exploit, and the test would depend on timing.
Here the score is the member's ``lr`` (fixed until an exploit changes it), so the worst member
ranks lowest whatever the order, and members first wait (up to a minute) until ``population``
have started, through files in ``barrier`` (the test kubelet's pods share this machine's
filesystem), so they are alive together. A restarted member finds the barrier full.
Imported only inside trial pods (``pbt`` comes from examples/ on their pythonPath).
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

    def step(self) -> dict:
        result = super().step()
        return {**result, "score": self.lr}
