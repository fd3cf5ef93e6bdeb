"""``tune.ResumeConfig``: how ``Tuner.restore`` treats unfinished, errored and finished trials."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


@dataclass
class ResumeConfig:
    class ResumeType(str, Enum):
        RESUME = "resume"  # from the latest checkpoint
        RESTART = "restart"  # from the beginning
        SKIP = "skip"  # leave as it is

    finished: str = ResumeType.SKIP
    unfinished: str = ResumeType.RESUME
    errored: str = ResumeType.SKIP

    def __post_init__(self) -> None:
        allowed = {t.value for t in self.ResumeType}
        for field in ("finished", "unfinished", "errored"):
            value = getattr(self, field)
            value = value.value if isinstance(value, Enum) else value
            if value not in allowed:
                raise ValueError(
                    f"ResumeConfig.{field} must be one of {sorted(allowed)}, got {value!r}"
                )
            setattr(self, field, self.ResumeType(value))

    def restore_flags(self) -> dict[str, Any]:
        """The equivalent ``Tuner.restore`` keyword arguments."""
        R = self.ResumeType
        if self.finished != R.SKIP:
            raise ValueError(
                "ResumeConfig.finished: only 'skip' is supported (finished trials keep their"
                " results)"
            )
        if self.unfinished == R.RESTART:
            raise ValueError(
                "ResumeConfig.unfinished: 'restart' is not supported; use 'resume' or 'skip'"
            )
        return {
            "resume_unfinished": self.unfinished == R.RESUME,
            "resume_errored": self.errored == R.RESUME,
            "restart_errored": self.errored == R.RESTART,
        }
