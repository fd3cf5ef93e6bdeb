"""The sidecar's settings, from ``KUBETUNE_SIDECAR_*`` variables (see the package docstring)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

PREFIX = "KUBETUNE_SIDECAR_"
DEFAULT_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
READY_FILE = ".ready"
STATE_DIR = ".sidecar"


class ConfigError(ValueError):
    """A sidecar setting is unusable; the message names the variable."""


@dataclass
class SidecarConfig:
    root: str = "/kubetune"
    storage_uri: str = ""
    trial_spec: dict[str, Any] | None = None
    restore_from: str | None = None
    params_from: str | None = None
    code_from: str | None = None
    trial: str | None = None
    namespace: str | None = None
    token_dir: str = DEFAULT_TOKEN_DIR
    attempt: int = 0
    pod: str | None = None
    metric: str | None = None
    num_to_keep: int | None = None
    score_attribute: str | None = None
    score_order: str = "max"
    report_interval_s: float = 0.5
    report_results: int = 16
    upload_interval_s: float = 5.0
    poll_interval_s: float = 0.1
    gpus: int = 0
    gpu_interval_s: float = 0.0
    grace_s: float = 30.0
    # a surplus checkpoint is deleted only after this long, with the pins read again then: a
    # PBT exploit's pin (spec.pinnedCheckpoints) reaches this sidecar with some delay
    delete_grace_s: float = 5.0
    # False under the operator: the engine deletes surplus checkpoints from storage (it knows
    # every pending PBT restore); the keep-rule here only frees the pod's disk
    delete_stored: bool = True
    restore_timeout_s: float = 600.0
    retry_max_s: float = 2.0
    s3_options: dict[str, Any] = field(default_factory=dict)

    def path(self, *parts: str) -> str:
        """A path under the shared volume."""
        return os.path.join(self.root, *parts)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SidecarConfig:
        env = dict(os.environ if env is None else env)

        def get(name: str) -> str | None:
            value = env.get(PREFIX + name)
            return value if value not in (None, "") else None

        def number(name: str, default: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                return float(raw)
            except ValueError:
                raise ConfigError(f"{PREFIX}{name} must be a number, got {raw!r}") from None

        spec = None
        raw_spec = get("TRIAL_SPEC")
        if raw_spec is not None:
            try:
                spec = json.loads(raw_spec)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{PREFIX}TRIAL_SPEC is not valid JSON: {exc}") from None
        keep = get("NUM_TO_KEEP")
        gpus = int(number("GPUS", 0))
        order = get("SCORE_ORDER") or "max"
        if order not in ("min", "max"):
            raise ConfigError(f"{PREFIX}SCORE_ORDER must be 'min' or 'max', got {order!r}")
        cfg = cls(
            root=get("ROOT") or "/kubetune",
            storage_uri=get("STORAGE_URI") or "",
            trial_spec=spec,
            restore_from=get("RESTORE_FROM"),
            params_from=get("PARAMS_FROM"),
            code_from=get("CODE_FROM"),
            trial=get("TRIAL"),
            namespace=get("NAMESPACE"),
            token_dir=get("TOKEN_DIR") or DEFAULT_TOKEN_DIR,
            attempt=int(number("ATTEMPT", 0)),
            pod=get("POD"),
            metric=get("METRIC"),
            num_to_keep=int(keep) if keep is not None else None,
            score_attribute=get("SCORE_ATTRIBUTE"),
            score_order=order,
            report_interval_s=number("REPORT_INTERVAL_S", 0.5),
            report_results=int(number("REPORT_RESULTS", 16)),
            upload_interval_s=number("UPLOAD_INTERVAL_S", 5.0),
            poll_interval_s=number("POLL_INTERVAL_S", 0.1),
            gpus=gpus,
            gpu_interval_s=number("GPU_INTERVAL_S", 10.0 if gpus > 0 else 0.0),
            grace_s=number("GRACE_S", 30.0),
            delete_grace_s=number("DELETE_GRACE_S", 5.0),
            delete_stored=(get("DELETE_STORED") or "1").strip().lower() not in ("0", "false", "no"),
            restore_timeout_s=number("RESTORE_TIMEOUT_S", 600.0),
        )
        if not cfg.storage_uri:
            raise ConfigError(f"{PREFIX}STORAGE_URI is required (s3://BUCKET/PREFIX/EXP/TRIAL)")
        if cfg.num_to_keep is not None and cfg.num_to_keep < 1:
            raise ConfigError(f"{PREFIX}NUM_TO_KEEP must be >= 1")
        return cfg
