"""The operator process's shared state: configuration, API client, watch store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubetune_operator.config import OperatorConfig
from kubetune_operator.store import Store


@dataclass
class OperatorState:
    config: OperatorConfig | None = None
    api: Any = None
    store: Store = field(default_factory=Store)
    rbac_done: set[str] = field(default_factory=set)
    watchers: list[Any] = field(default_factory=list)


STATE = OperatorState()
