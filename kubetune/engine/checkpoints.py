"""The checkpoint keep-rule (Ray's ``CheckpointConfig``), shared by the engine and the sidecar.

A trial's checkpoints still on storage are kept as entries ``[sort key, seq, name]``, worst
first; the sort key is ``[1, sign * score]`` for a numeric score and ``[0, 0.0]`` for a NaN or
missing one (Ray ranks those worst). Without a score attribute the newest is best. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from kubetune._util import unflattened_lookup

_NUMBER = (int, float)


def lookup(result: Mapping[str, Any], key: str) -> Any:
    """``result[key]``, or the nested value for a '/'-joined key; None when absent."""
    if key in result:
        return result[key]
    try:
        return unflattened_lookup(key, result)
    except KeyError:
        return None


def score_key(
    result: Mapping[str, Any], seq: int, score_attribute: str | None, score_order: str = "max"
) -> list[Any]:
    if not score_attribute:
        return [1, float(seq)]
    value = lookup(result, score_attribute)
    if isinstance(value, _NUMBER) and not isinstance(value, bool) and not math.isnan(value):
        sign = 1.0 if score_order == "max" else -1.0
        return [1, sign * float(value)]
    return [0, 0.0]


def register_checkpoint(
    entries: list[list[Any]],
    name: str,
    result: Mapping[str, Any],
    seq: int,
    *,
    num_to_keep: int | None,
    score_attribute: str | None,
    score_order: str = "max",
    pinned: Collection[str] = (),
) -> tuple[list[list[Any]], list[str]]:
    """Add checkpoint ``name`` (registered as the ``seq``-th) and apply ``num_to_keep``.

    Returns the surviving entries (worst first) and the names to delete. The newest checkpoint
    and the ``pinned`` ones are never deleted. A name registered again is re-ranked.
    """
    ckpts = [e for e in entries if e[2] != name]
    key = score_key(result, seq, score_attribute, score_order)
    if score_attribute:
        pos = len(ckpts)
        while pos > 0 and ckpts[pos - 1][0] > key:
            pos -= 1
        ckpts.insert(pos, [key, seq, name])
    else:
        ckpts.append([key, seq, name])
    if num_to_keep is None or len(ckpts) <= num_to_keep:
        return ckpts, []
    survivors = ckpts[-num_to_keep:]
    deleted: list[str] = []
    for entry in ckpts[:-num_to_keep]:
        if entry[2] == name or entry[2] in pinned:
            survivors.append(entry)
        else:
            deleted.append(entry[2])
    survivors.sort(key=lambda e: (e[0], e[1]))
    return survivors, deleted


def best_checkpoint(entries: list[list[Any]]) -> str | None:
    """The best surviving checkpoint (the newest when nothing is scored)."""
    if not entries:
        return None
    return str(max(entries, key=lambda e: (e[0], e[1]))[2])
