"""The trial runner's decisions: its stop criteria, and the scheduler's verdicts at the gate."""

from __future__ import annotations

from typing import Any

from kubetune._util import unflattened_lookup
from kubetune.trial import exit_codes
from kubetune.trial.ending import TrialExit
from kubetune.trial.gate import DecisionTracker, Gate
from kubetune.trial.spec import TrialSpec


class StopCriterionError(KeyError):
    """A stop criterion names a metric the result does not have."""

    def __str__(self) -> str:
        return str(self.args[0])


class RunnerDecisions:
    """Whether a result ends the trial, and what the scheduler says at a decision point."""

    # the runner's state (TrialRunner.__init__ sets it up)
    spec: TrialSpec
    stopper: Any
    points: DecisionTracker
    gate: Gate | None
    seq: int
    _at_gate: bool

    # -- decisions --------------------------------------------------------------------------
    def _should_stop(self, result: dict[str, Any]) -> str | None:
        for key, threshold in (self.spec.stop or {}).items():
            try:
                value = unflattened_lookup(key, result)
            except KeyError:
                raise StopCriterionError(
                    f"stop criterion {key!r} is not in the reported result (keys:"
                    f" {', '.join(sorted(k for k in result if k != 'config'))})"
                ) from None
            if value is not None and value >= threshold:
                return f"{key} >= {threshold}"
        if self.stopper is not None and self.stopper(self.spec.trial_id, result):
            return "stopper"
        return None

    def _maybe_ask(self, result: dict[str, Any], due: bool | None = None) -> None:
        if due is None:
            due = self.points.due(result)
        if not due or self.gate is None:
            return
        self.seq += 1
        self._at_gate = True
        try:
            verdict = self.gate.ask(
                {
                    "seq": self.seq,
                    "trial_id": self.spec.trial_id,
                    "training_iteration": result["training_iteration"],
                    "time_attr": self.points.time_attr,
                    "value": result.get(self.points.time_attr),
                }
            )
        finally:
            self._at_gate = False
        action = verdict["action"]
        reason = str(verdict.get("reason") or f"scheduler: {action}")
        if action == "stop":
            raise TrialExit(exit_codes.STOPPED, reason)
        if action == "pause":
            raise TrialExit(exit_codes.PAUSED, reason)
        if action == "restart":
            raise TrialExit(exit_codes.RESTART, reason)
