"""From a TuneExperiment object to an engine and a storage root, or a :class:`BadSpec`.

Everything the schema cannot check is checked here, before anything is created, so a bad
spec ends in ``Stalled`` with a message naming the field and nothing half-made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubetune.engine import EngineConfig, ExperimentEngine
from kubetune.manifest.experiment import plan_from_manifest
from kubetune.manifest.validate import Manifest, ManifestError
from kubetune.search.errors import ConfigError
from kubetune.storage import Storage
from kubetune.storage.s3 import S3Config, S3Storage


class BadSpec(ValueError):
    """The experiment cannot run as written; the message names the field."""


@dataclass
class StorageSpec:
    bucket: str
    prefix: str
    endpoint: str | None
    region: str | None
    addressing_style: str
    secret_name: str | None


def storage_spec(experiment: dict[str, Any], default: dict[str, Any]) -> StorageSpec:
    spec = (experiment.get("spec") or {}).get("storage") or {}
    merged = {**default, **spec} if spec.get("bucket") is None else dict(spec)
    if not merged.get("bucket"):
        raise BadSpec(
            "spec.storage.bucket: no storage is configured and the operator has no default"
            " (KUBETUNE_DEFAULT_S3_BUCKET)"
        )
    return StorageSpec(
        bucket=merged["bucket"],
        prefix=(merged.get("prefix") or "").strip("/"),
        endpoint=merged.get("endpoint") or default.get("endpoint"),
        region=merged.get("region") or default.get("region"),
        addressing_style=merged.get("addressingStyle") or default.get("addressingStyle") or "auto",
        secret_name=spec.get("secretName"),
    )


SHIPPED_FIELDS = ("codeFrom", "parametersFrom")


def check_shipped_uris(experiment: dict[str, Any], spec: StorageSpec) -> None:
    """``spec.trainable.codeFrom`` / ``parametersFrom`` must lie inside ``spec.storage``: the
    sidecar fetches them with this experiment's storage credentials, so a URI elsewhere would
    let one experiment hand its trial pods another tenant's objects (or code)."""
    trainable = (experiment.get("spec") or {}).get("trainable") or {}
    root = f"s3://{spec.bucket}/{spec.prefix}/" if spec.prefix else f"s3://{spec.bucket}/"
    for key in SHIPPED_FIELDS:
        uri = trainable.get(key)
        if uri is None or uri == "":
            continue
        rest = uri[len(root) :].rstrip("/") if isinstance(uri, str) else ""
        inside = isinstance(uri, str) and uri.startswith(root) and bool(rest)
        if not inside or any(part in ("", ".", "..") for part in rest.split("/")):
            raise BadSpec(
                f"spec.trainable.{key}: {uri!r} is not inside the experiment's storage"
                f" ({root}, from spec.storage bucket and prefix): its trial pods read it with"
                " this experiment's storage credentials, so it must name a folder under that"
                " prefix (as `kubetune submit` writes it), without '.' or '..' segments"
            )


def s3_config(spec: StorageSpec, credentials: dict[str, str]) -> S3Config:
    """How the operator reaches the experiment's S3 (endpoint, region, its Secret's keys)."""
    return S3Config(
        endpoint_url=spec.endpoint,
        region=spec.region,
        access_key_id=credentials.get("AWS_ACCESS_KEY_ID"),
        secret_access_key=credentials.get("AWS_SECRET_ACCESS_KEY"),
        session_token=credentials.get("AWS_SESSION_TOKEN"),
        addressing_style=spec.addressing_style,
    )


def open_experiment_storage(
    experiment: dict[str, Any], spec: StorageSpec, credentials: dict[str, str]
) -> Storage:
    name = experiment["metadata"]["name"]
    prefix = f"{spec.prefix}/{name}" if spec.prefix else name
    return S3Storage(spec.bucket, prefix, s3_config(spec, credentials))


def secrets_needed(experiment: dict[str, Any], pull_secrets: list[str]) -> list[tuple[str, str]]:
    """(field, Secret name) pairs that must exist before anything is created."""
    spec = experiment.get("spec") or {}
    out: list[tuple[str, str]] = []
    secret = (spec.get("storage") or {}).get("secretName")
    if secret:
        out.append(("spec.storage.secretName", secret))
    for i, ref in enumerate((spec.get("trainable") or {}).get("imagePullSecrets") or []):
        if isinstance(ref, dict) and ref.get("name"):
            out.append((f"spec.trainable.imagePullSecrets[{i}].name", ref["name"]))
    out.extend(("KUBETUNE_IMAGE_PULL_SECRETS (operator setting)", s) for s in pull_secrets)
    return out


def build_engine(experiment: dict[str, Any]) -> ExperimentEngine:
    doc = {
        "apiVersion": experiment.get("apiVersion", "kubetune.io/v1alpha1"),
        "kind": experiment.get("kind", "TuneExperiment"),
        "metadata": {"name": experiment["metadata"]["name"]},
        "spec": experiment.get("spec") or {},
    }
    name = doc["metadata"]["name"]
    try:
        plan = plan_from_manifest(Manifest.from_dict(json.loads(json.dumps(doc)), name))
    except ManifestError as exc:
        raise BadSpec(_strip_source(str(exc), name)) from None
    trainable = doc["spec"].get("trainable") or {}
    if not trainable.get("image") and not trainable.get("codeFrom"):
        # shipped code (codeFrom) runs in the trial base image the operator is configured with
        raise BadSpec("spec.trainable.image: a cluster needs the image that holds the trainable")
    rc = plan.run_config
    config = EngineConfig.from_run_config(
        rc,
        param_space=plan.param_space,
        metric=plan.tune["metric"],
        mode=plan.tune["mode"],
        num_samples=plan.tune["num_samples"],
        max_concurrent_trials=plan.tune["max_concurrent_trials"],
        time_budget_s=plan.tune["time_budget_s"],
        resources=plan.resources or {"bundles": [{"CPU": 1}], "strategy": "PACK"},
        name=name,
        trainable_name=plan.entrypoint.rpartition(":")[2] or "trainable",
    )
    kwargs = {
        "search_alg": plan.tune.get("search_alg"),
        "scheduler": plan.tune.get("scheduler"),
        "stopper": rc.stop,
    }
    try:
        return ExperimentEngine(config, seed=plan.tune.get("seed"), **kwargs)
    except (ConfigError, ValueError, TypeError) as exc:
        raise BadSpec(f"spec: {exc}") from None


def restore_engine(experiment: dict[str, Any], state: dict[str, Any]) -> ExperimentEngine:
    fresh = build_engine(experiment)  # same searcher/scheduler objects, then the saved state
    try:
        return ExperimentEngine.from_json(
            json.dumps(state["engine"]),
            search_alg=fresh.searcher,
            scheduler=fresh.scheduler,
            stopper=(experiment.get("spec") or {}).get("runConfig", {}).get("stop"),
            config=fresh.config,
        )
    except (ConfigError, ValueError, TypeError, KeyError) as exc:
        raise BadSpec(f"status: the saved experiment state cannot be restored: {exc}") from None


def _strip_source(message: str, source: str) -> str:
    lines = []
    for line in message.splitlines():
        head, sep, rest = line.partition(": ")
        lines.append(rest if sep and head.startswith(source) else line)
    return "; ".join(lines)
