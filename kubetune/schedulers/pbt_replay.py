"""``PopulationBasedTrainingReplay``: replay one trial's PBT schedule (Ray's name).

``policy_file`` is a PBT policy log in Ray's format: one JSON list per line, ``[target_tag,
donor_tag, donor_time, target_time, old_config, new_config]``, oldest first (the history of one
final trial, its donors' exploits included). The replayed trial starts with the first line's
``old_config`` (the config in the param space is replaced) and, when ``time_attr`` reaches a
line's ``donor_time``, continues from its own latest checkpoint with that line's
``new_config``: the hyperparameter schedule the PBT run found, without a population. Run it with
``num_samples=1`` and checkpoints at least as often as the changes (a change waits for a
checkpoint).
"""

from __future__ import annotations

import json
from typing import Any

from kubetune.schedulers.trial_scheduler import Exploit, TrialScheduler, result_value
from kubetune.search.errors import ConfigError


class PopulationBasedTrainingReplay(TrialScheduler):
    needs_metric = False

    def __init__(self, policy_file: str, time_attr: str = "training_iteration") -> None:
        super().__init__(time_attr=time_attr)
        try:
            with open(policy_file) as f:
                lines: list[Any] = [json.loads(x) for x in f if x.strip()]
        except (OSError, ValueError) as exc:
            raise ConfigError("policy_file", f"cannot read {policy_file!r}: {exc}") from exc
        if not lines or any(not isinstance(x, list) or len(x) != 6 for x in lines):
            raise ConfigError(
                "policy_file",
                "needs lines [target_tag, donor_tag, donor_time, target_time, "
                "old_config, new_config]",
            )
        self._initial: dict[str, Any] = dict(lines[0][4])
        self._policy: list[tuple[float, dict[str, Any]]] = [
            (float(x[2]), dict(x[5])) for x in lines
        ]
        self._trial: str | None = None
        self._next = 0  # index of the next change

    @property
    def config_schedule(self) -> list[tuple[float, dict[str, Any]]]:
        return [(t, dict(c)) for t, c in self._policy]

    def on_trial_add(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any] | None:
        if self._trial is not None and self._trial != trial_id:
            raise ConfigError(
                "num_samples", "PopulationBasedTrainingReplay replays one trial: num_samples=1"
            )
        self._trial = trial_id
        return {**config, **self._initial}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> str | Exploit:
        if self._next >= len(self._policy):
            return self.CONTINUE
        t = result_value(result, self._time_attr or "training_iteration", trial_id, "PBTReplay")
        when, config = self._policy[self._next]
        assert isinstance(config, dict)
        if t < when:
            return self.CONTINUE
        ckpt = self.context.latest_checkpoint(trial_id)
        if ckpt is None:
            return self.CONTINUE  # wait for a checkpoint to continue from
        self._next += 1
        return Exploit(
            donor_trial_id=trial_id,
            donor_checkpoint=ckpt,
            new_config=dict(config),
            info={"replay_step": self._next, "at": t},
        )

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "trial": self._trial, "next": self._next}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._trial = state.get("trial")
        self._next = int(state.get("next", 0))
