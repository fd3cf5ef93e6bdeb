"""The operator's command line and environment (a Helm chart renders both: keep them stable)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """The operator's own configuration is wrong (the process exits with this message)."""


@dataclass
class OperatorConfig:
    namespaces: list[str] = field(default_factory=list)
    all_namespaces: bool = False
    peering: str | None = None
    standalone: bool = False
    liveness_port: int = 8080
    metrics_port: int = 9090
    verbose: bool = False
    sidecar_image: str | None = None
    gpu_resource_name: str = "nvidia.com/gpu"
    extended_resources: dict[str, str] = field(default_factory=dict)
    trial_service_account: str = "kubetune-trial"
    default_storage: dict[str, Any] = field(default_factory=dict)
    image_pull_secrets: list[str] = field(default_factory=list)
    shared_gpu_resource_name: str | None = None
    shared_gpu_replicas: int = 0
    queue_name: str | None = None  # Kueue LocalQueue of experiments that name none

    def pod_settings(self) -> Any:
        from kubetune_operator.pod import PodSettings

        return PodSettings(
            sidecar_image=self.sidecar_image,
            gpu_resource_name=self.gpu_resource_name,
            extended_resources=dict(self.extended_resources),
            trial_service_account=self.trial_service_account,
            default_storage=dict(self.default_storage),
            shared_gpu_resource_name=self.shared_gpu_resource_name,
            shared_gpu_replicas=self.shared_gpu_replicas,
            queue_name=self.queue_name,
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubetune-operator",
        description="Runs TuneExperiments: one pod per trial, decisions from kubetune's engine.",
    )
    p.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; globs as in kopf)",
    )
    p.add_argument("--all-namespaces", action="store_true", help="watch the whole cluster")
    p.add_argument("--peering", metavar="NAME", help="KopfPeering object for leader election")
    p.add_argument("--standalone", action="store_true", help="no peering (a single replica)")
    p.add_argument("--liveness-port", type=int, default=8080, help="/healthz port (0: off)")
    p.add_argument("--metrics-port", type=int, default=9090, help="/metrics port (0: off)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def _json_map(name: str, raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} must be a JSON object: {exc}") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f'{name} must map strings to strings, e.g. {{"TPU": "google.com/tpu"}}')
    return value


def load(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> OperatorConfig:
    env = os.environ if env is None else env
    args = parser().parse_args(argv)
    if args.all_namespaces and args.namespace:
        raise ConfigError("--all-namespaces and --namespace exclude each other")
    if args.peering and args.standalone:
        raise ConfigError("--peering and --standalone exclude each other")
    storage = {
        key: env[var]
        for key, var in (
            ("endpoint", "KUBETUNE_DEFAULT_S3_ENDPOINT"),
            ("region", "KUBETUNE_DEFAULT_S3_REGION"),
            ("bucket", "KUBETUNE_DEFAULT_S3_BUCKET"),
            ("prefix", "KUBETUNE_DEFAULT_S3_PREFIX"),
            ("addressingStyle", "KUBETUNE_DEFAULT_S3_ADDRESSING_STYLE"),
        )
        if env.get(var)
    }
    secrets = [s.strip() for s in env.get("KUBETUNE_IMAGE_PULL_SECRETS", "").split(",")]
    shared_gpu, shared_replicas = _shared_gpu(env)
    return OperatorConfig(
        namespaces=list(args.namespace),
        all_namespaces=bool(args.all_namespaces),
        peering=args.peering,
        standalone=bool(args.standalone),
        liveness_port=args.liveness_port,
        metrics_port=args.metrics_port,
        verbose=bool(args.verbose),
        sidecar_image=env.get("KUBETUNE_SIDECAR_IMAGE") or None,
        gpu_resource_name=env.get("KUBETUNE_GPU_RESOURCE") or "nvidia.com/gpu",
        extended_resources=_json_map(
            "KUBETUNE_EXTENDED_RESOURCES", env.get("KUBETUNE_EXTENDED_RESOURCES")
        ),
        trial_service_account=env.get("KUBETUNE_TRIAL_SERVICE_ACCOUNT") or "kubetune-trial",
        default_storage=storage,
        image_pull_secrets=[s for s in secrets if s],
        shared_gpu_resource_name=shared_gpu,
        shared_gpu_replicas=shared_replicas,
        queue_name=env.get("KUBETUNE_DEFAULT_QUEUE_NAME") or None,
    )


def _shared_gpu(env: Mapping[str, str]) -> tuple[str | None, int]:
    """KUBETUNE_SHARED_GPU_RESOURCE and KUBETUNE_SHARED_GPU_REPLICAS (gpu_share.py): both or
    neither, since a wrong number of units per GPU would hand trials the wrong share."""
    name = env.get("KUBETUNE_SHARED_GPU_RESOURCE") or None
    raw = env.get("KUBETUNE_SHARED_GPU_REPLICAS") or ""
    if name is None:
        return None, 0
    try:
        replicas = int(raw)
    except ValueError:
        replicas = 0
    if replicas < 1:
        raise ConfigError(
            f"KUBETUNE_SHARED_GPU_REPLICAS must be the whole number (>= 1) of {name} units the"
            f" device plugin advertises per GPU (its time-slicing or MPS replicas), got {raw!r}"
        )
    return name, replicas
