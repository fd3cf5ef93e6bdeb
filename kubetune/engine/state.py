"""The engine's state as JSON (``to_state``/``to_json``) and back (``from_json``)."""

from __future__ import annotations

import json
from collections.abc import Container
from typing import Any, TypeVar

from kubetune.engine.actions import ExperimentFinished
from kubetune.engine.config import EngineConfig
from kubetune.engine.core import EngineCore
from kubetune.engine.trial import PENDING, TrialRecord
from kubetune.schedulers.trial_scheduler import TrialScheduler
from kubetune.search.errors import ConfigError
from kubetune.search.searcher import Searcher
from kubetune.stoppers import StopSpec

STATE_VERSION = 1
_E = TypeVar("_E", bound="EngineState")


class EngineState(EngineCore):
    """Serialisation of the engine; everything but re-supplied Python objects is kept."""

    def to_state(self, omit: Container[str] = ()) -> dict[str, Any]:
        """The engine's state as JSON-ready data; the records of trials in ``omit`` are left
        out (``kubetune.engine.snapshot`` stores finished trials once, in segments)."""
        from kubetune.search.spec import to_manifest

        try:
            space: Any = to_manifest(self.config.param_space)
        except ConfigError:
            space = None  # holds sample_from: the caller re-supplies the config on restore
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(space),
            "seed": self.seed,
            "trials": [self.trials[t].to_dict() for t in self._order if t not in omit],
            "num_active": self._num_active,
            "num_paused": self._num_paused,
            "created": self._created,
            "preemptions": self._preemptions,
            "searcher_done": self._searcher_done,
            "started": self._started,
            "stopping": self._stopping,
            "finished": self._finished.to_dict() if self._finished else None,
            "start_time": self._start_time,
            "restore_pins": dict(self._restore_pins),
            "searcher": {"type": type(self.searcher).__name__, "state": self.searcher.get_state()},
            "scheduler": {
                "type": type(self.scheduler).__name__,
                "state": self.scheduler.get_state(),
            },
            "stopper": self.stopper.get_state(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_state(), separators=(",", ":"))

    @classmethod
    def from_json(
        cls: type[_E],
        state: str | dict[str, Any],
        search_alg: Searcher | None = None,
        scheduler: TrialScheduler | None = None,
        stopper: StopSpec | list[StopSpec] = None,
        config: EngineConfig | None = None,
    ) -> _E:
        """Rebuild an engine from :meth:`to_json`; pass the same kinds of objects as before."""
        from kubetune.search.spec import from_manifest

        st: dict[str, Any] = json.loads(state) if isinstance(state, str) else state
        if st.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported engine state version {st.get('version')!r}")
        if config is None:
            space = st["config"]["param_space"]
            if space is None:
                raise ConfigError(
                    "config",
                    "the param space holds sample_from functions: pass config= to from_json",
                )
            config = EngineConfig.from_dict(st["config"], from_manifest(space))
        for key, obj in (("searcher", search_alg), ("scheduler", scheduler)):
            if obj is not None and type(obj).__name__ != st[key]["type"]:
                raise ConfigError(
                    key, f"state was saved with {st[key]['type']}, got {type(obj).__name__}"
                )
        engine = cls(
            config, search_alg=search_alg, scheduler=scheduler, stopper=stopper, seed=st["seed"]
        )
        engine.searcher.set_state(st["searcher"]["state"])
        engine.scheduler.set_state(st["scheduler"]["state"])
        engine.stopper.set_state(st["stopper"])
        for d in st["trials"]:
            rec = TrialRecord.from_dict(d)
            engine.trials[rec.trial_id] = rec
            engine._order.append(rec.trial_id)
            if rec.status == PENDING:
                engine._pending.add(rec.trial_id)
        engine._num_active = st["num_active"]
        engine._num_paused = st["num_paused"]
        engine._created = st["created"]
        engine._preemptions = int(st.get("preemptions") or 0)  # absent in older states
        engine._searcher_done = st["searcher_done"]
        engine._started = st["started"]
        engine._stopping = st["stopping"]
        fin = st["finished"]
        engine._finished = (
            ExperimentFinished(fin["status"], fin["reason"], fin["best_trial_id"]) if fin else None
        )
        engine._start_time = st["start_time"]
        engine._restore_pins = {k: list(v) for k, v in st["restore_pins"].items()}
        return engine
