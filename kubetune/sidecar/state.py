"""What the sidecar has done so far, kept in ``ROOT/.sidecar/`` so a restart loses nothing.

Written atomically (temporary file, fsync, rename) after every step that must not be redone.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SidecarState:
    ready: bool = False
    base_lines: int = 0  # result lines of earlier attempts (in .sidecar/base/result.json)
    uploaded: list[str] = field(default_factory=list)  # checkpoints complete in storage
    partial: dict[str, list[str]] = field(default_factory=dict)  # checkpoint -> files stored
    keep: list[list[Any]] = field(default_factory=list)  # keep-rule entries (worst first)
    keep_seq: int = 0
    registered: list[str] = field(default_factory=list)  # checkpoints given to the keep-rule
    deleted: list[str] = field(default_factory=list)  # removed from storage
    pending_delete: list[str] = field(default_factory=list)
    freed: list[str] = field(default_factory=list)  # removed from ROOT/out only (stored)
    report_seq: int = 0
    verdict_seq: int = 0
    finished: bool = False

    @classmethod
    def load(cls, path: str) -> SidecarState:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return cls()
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(asdict(self), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
