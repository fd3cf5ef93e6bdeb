"""``python -m tests.chaos.driver STORAGE NAME MODE CONFIG_JSON``: one local-mode driver.

MODE: ``fresh`` (a new Tuner), ``restore`` (Tuner.restore), ``auto`` (the scheduler-script
pattern: restore if Tuner.can_restore, else a new Tuner). CONFIG_JSON: the param space's
constants plus ``trials`` (how many, by grid search over ``k``) and ``concurrent``.
Exit codes: 0 finished, 3 refused because another driver holds the experiment, 4 another
clean kubetune error (message on stderr), 130 interrupted or terminated.
"""

from __future__ import annotations

import json
import sys

from kubetune import air, tune
from kubetune.local.lock import ExperimentLockedError
from kubetune.storage import StorageError
from tests.chaos.trainables import stepper


def main(argv: list[str]) -> int:
    storage, name, mode, raw = argv
    cfg = json.loads(raw)
    trials = int(cfg.pop("trials", 1))
    concurrent = int(cfg.pop("concurrent", 2))
    path = f"{storage}/{name}"
    space = {**cfg, "k": tune.grid_search(list(range(trials)))}
    try:
        if mode == "restore" or (mode == "auto" and tune.Tuner.can_restore(path)):
            tuner = tune.Tuner.restore(path, stepper)
        else:
            tuner = tune.Tuner(
                stepper,
                param_space=space,
                tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
                run_config=air.RunConfig(name=name, storage_path=storage, verbose=0),
            )
        grid = tuner.fit()
    except KeyboardInterrupt:
        return 130
    except ExperimentLockedError as exc:
        print(f"kubetune: {exc}", file=sys.stderr)
        return 3
    except (StorageError, FileExistsError, ValueError) as exc:
        print(f"kubetune: {exc}", file=sys.stderr)
        return 4
    return 0 if grid.num_errors == 0 else 5


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
