"""The engine's read-only queries: counts, summaries, the best trial and checkpoint."""

from __future__ import annotations

import math
from typing import Any

from kubetune.engine.actions import CheckpointRef, ExperimentFinished
from kubetune.engine.checkpoints import _NUMBER
from kubetune.engine.checkpoints import lookup as _lookup
from kubetune.engine.config import SCOPES
from kubetune.engine.core import EngineCore
from kubetune.engine.trial import ERROR, PAUSED, PENDING, RUNNING, TERMINATED
from kubetune.search.errors import ConfigError, check_mode


class EngineQueries(EngineCore):
    """Questions a backend, the result grid or the scheduler asks of the engine."""

    @property
    def finished(self) -> ExperimentFinished | None:
        return self._finished

    def is_finished(self) -> bool:
        return self._finished is not None

    def num_active(self) -> int:
        return self._num_active

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in (PENDING, RUNNING, PAUSED, TERMINATED, ERROR)}
        for rec in self.trials.values():
            out[rec.status] += 1
        return out

    def num_preemptions(self) -> int:
        """Attempts of all trials that the cluster ended (preempted, evicted, node lost)."""
        return self._preemptions

    def trial_ids(self) -> list[str]:
        return list(self._order)

    def best_checkpoint(self, trial_id: str) -> CheckpointRef | None:
        rec = self._get(trial_id)
        if not rec.checkpoints:
            return None
        if self._ckpt.checkpoint_score_attribute:
            name = rec.checkpoints[-1][2]
        else:
            name = rec.latest_checkpoint
        return CheckpointRef(trial_id, name) if name else None

    def trial_summary(self, trial_id: str) -> dict[str, Any]:
        rec = self._get(trial_id)
        best = self.best_checkpoint(trial_id)
        latest = rec.latest_checkpoint
        return {
            "trial_id": rec.trial_id,
            "trial_name": rec.name,
            "trial_dirname": rec.dirname or rec.name,
            "experiment_tag": rec.tag,
            "status": rec.status,
            "config": rec.config,
            "last_result": rec.last_result,
            "num_results": rec.num_results,
            "num_failures": rec.num_failures,
            "num_preemptions": rec.num_preemptions,
            "last_disruption": rec.last_disruption,
            "error": rec.error,
            "stop_reason": rec.stop_reason,
            "best_checkpoint": best.to_dict() if best else None,
            "latest_checkpoint": CheckpointRef(trial_id, latest).to_dict() if latest else None,
            "checkpoints": [c[2] for c in rec.checkpoints],
        }

    def best_trial(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> str | None:
        """Ray's ``get_best_trial``: the trial with the best ``metric`` under ``scope``."""
        metric = metric or self.config.metric
        mode = mode or self.config.mode
        if not metric:
            raise ConfigError("metric", "best trial needs `metric` (argument or tune config)")
        if mode is None:
            raise ConfigError("mode", "best trial needs `mode` ('min' or 'max')")
        check_mode(mode)
        if scope not in SCOPES:
            raise ConfigError("scope", f"must be one of {', '.join(SCOPES)}, got {scope!r}")
        tracked = metric == self.config.metric
        if not tracked and scope != "last":
            raise ConfigError(
                "scope",
                f"only 'last' is available for `{metric}`: the engine keeps statistics for the "
                f"experiment metric `{self.config.metric}` only",
            )
        best_id: str | None = None
        best_value = -math.inf
        sign = 1.0 if mode == "max" else -1.0
        for tid in self._order:
            rec = self.trials[tid]
            if tracked:
                if rec.stats is None:
                    continue
                value = rec.stats.value(scope, mode)
            else:
                if rec.last_result is None:
                    continue
                value = _lookup(rec.last_result, metric)
                if not isinstance(value, _NUMBER):
                    continue
            if filter_nan_and_inf and not math.isfinite(value):
                continue
            if math.isnan(value):
                continue
            if best_id is None or sign * value > best_value:
                best_id, best_value = tid, sign * value
        return best_id
