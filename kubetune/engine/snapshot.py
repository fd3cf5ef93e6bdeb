"""The engine's snapshot in storage, written incrementally (pure: blobs in, blobs out).

Rewriting the whole engine state after every change costs O(trials) per write, so an
experiment of 10,000 trials would spend most of its time serialising records that no longer
change. A :class:`SnapshotWriter` keeps the records of finished trials (TERMINATED or ERROR)
in immutable *segments*, written once, and a small *head* that holds everything else:

    experiment_state.json              head: the engine state without sealed records,
                                       plus ``segments``: the segment keys in order
    experiment_state/trials-000000.json  {"trials": [record, ...]}  (finished trials)

The head is written last, so a reader never sees a segment key that does not exist yet; a
segment written by a writer that died before its head is simply overwritten later. A record
the head carries overrides a sealed copy (a finished trial that was resumed and changed again
is written anew). :func:`load_state` gives back the whole state that
``ExperimentEngine.from_json`` takes, whether the snapshot has segments or not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubetune.engine.engine import ExperimentEngine
from kubetune.engine.trial import FINISHED, TrialRecord

HEAD_KEY = "experiment_state.json"
SEGMENT_PREFIX = "experiment_state/"


def _fingerprint(rec: TrialRecord) -> tuple[Any, ...]:
    """What changes when a finished record changes (results, failures, checkpoints, status)."""
    return (
        rec.status,
        rec.num_results,
        rec.num_failures,
        rec.seq,
        len(rec.checkpoints),
        rec.latest_checkpoint,
        rec.ended_at,
    )


class SnapshotWriter:
    """Renders an engine's state as the blobs to write, in order (segments first, head last).

    ``segment_trials`` finished trials make one segment; fewer stay in the head until enough
    have finished, so the head holds at most the live trials plus ``segment_trials``.
    """

    def __init__(
        self, segment_trials: int = 256, wrap: Callable[[dict[str, Any]], Any] | None = None
    ) -> None:
        self.segment_trials = segment_trials
        self.wrap = wrap or (lambda state: state)
        self.segments: list[str] = []
        self._sealed: dict[str, tuple[Any, ...]] = {}

    def adopt(self, segments: list[str], sealed: dict[str, tuple[Any, ...]]) -> None:
        """Continue the segments of a snapshot read back with :func:`load_state`."""
        self.segments = list(segments)
        self._sealed = dict(sealed)

    def render(self, engine: ExperimentEngine) -> list[tuple[str, bytes]]:
        unsealed: list[TrialRecord] = []
        changed: set[str] = set()
        for trial_id in engine.trial_ids():
            rec = engine.trials[trial_id]
            if rec.status not in FINISHED:
                continue
            mark = self._sealed.get(trial_id)
            if mark is None:
                unsealed.append(rec)
            elif mark != _fingerprint(rec):
                changed.add(trial_id)
        blobs: list[tuple[str, bytes]] = []
        while len(unsealed) >= self.segment_trials:
            batch, unsealed = unsealed[: self.segment_trials], unsealed[self.segment_trials :]
            key = f"{SEGMENT_PREFIX}trials-{len(self.segments):06d}.json"
            body = {"trials": [rec.to_dict() for rec in batch]}
            blobs.append((key, json.dumps(body, separators=(",", ":")).encode()))
            self.segments.append(key)
            for rec in batch:
                self._sealed[rec.trial_id] = _fingerprint(rec)
        omit = {t for t in self._sealed if t not in changed}
        state = engine.to_state(omit=omit)
        state["segments"] = list(self.segments)
        blobs.append((HEAD_KEY, json.dumps(self.wrap(state), separators=(",", ":")).encode()))
        return blobs


def load_state(
    head: dict[str, Any], read: Callable[[str], bytes]
) -> tuple[dict[str, Any], dict[str, tuple[Any, ...]]]:
    """The whole engine state of a head's engine state (``read(key)`` fetches a segment),
    and the fingerprints of the sealed records for :meth:`SnapshotWriter.adopt`."""
    segments = head.get("segments") or []
    if not segments:
        return {k: v for k, v in head.items() if k != "segments"}, {}
    records: dict[str, dict[str, Any]] = {}
    for key in segments:
        for d in json.loads(read(key))["trials"]:
            records[d["trial_id"]] = d
    sealed = {tid: _fingerprint(TrialRecord.from_dict(d)) for tid, d in records.items()}
    for d in head["trials"]:
        records[d["trial_id"]] = d
    state = {k: v for k, v in head.items() if k != "segments"}
    state["trials"] = sorted(records.values(), key=lambda d: d["index"])
    return state, sealed
