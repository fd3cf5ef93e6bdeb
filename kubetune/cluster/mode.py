"""Whether ``Tuner.fit()`` runs here or on the cluster, and the cluster settings.

Cluster mode is on when ``KUBETUNE_MODE=cluster`` (``kubetune submit`` sets it for the script
it runs) or when the config file (``KUBETUNE_CONFIG``, default
``~/.config/kubetune/config.toml``) says ``mode = "cluster"``. The environment wins over the
file, key by key. The cluster is the kubeconfig's current context, as for kubectl.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CONFIG = "~/.config/kubetune/config.toml"
# setting -> environment variable
ENV = {
    "mode": "KUBETUNE_MODE",
    "namespace": "KUBETUNE_NAMESPACE",
    "storage": "KUBETUNE_STORAGE",
    "storage_secret": "KUBETUNE_STORAGE_SECRET",
    "storage_endpoint": "KUBETUNE_S3_ENDPOINT_URL",
    "pod_storage_endpoint": "KUBETUNE_POD_S3_ENDPOINT_URL",
    "image": "KUBETUNE_IMAGE",
    "working_dir": "KUBETUNE_WORKING_DIR",
    "requirements": "KUBETUNE_REQUIREMENTS",
    "context": "KUBETUNE_CONTEXT",
}


@dataclass
class ClusterSettings:
    namespace: str | None = None  # None: the kubeconfig context's namespace, else "default"
    storage: str | None = None  # s3://bucket/prefix; None: the operator's default storage
    storage_secret: str | None = None  # Secret (in the namespace) the trial sidecars use
    storage_endpoint: str | None = None
    # the endpoint as the trial pods reach it, when not as this machine does (a port-forward
    # here, the in-cluster Service there); None: storage_endpoint
    pod_storage_endpoint: str | None = None
    image: str | None = None  # None: the trial base image the operator is configured with
    working_dir: str | None = None
    requirements: str | None = None
    context: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _read_file() -> dict[str, Any]:
    path = os.path.expanduser(os.environ.get("KUBETUNE_CONFIG") or DEFAULT_CONFIG)
    if not os.path.exists(path):
        if os.environ.get("KUBETUNE_CONFIG"):
            raise FileNotFoundError(f"KUBETUNE_CONFIG names {path}, which does not exist")
        return {}
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise RuntimeError(
            f"reading {path} needs Python 3.11 or later; set the KUBETUNE_* variables instead"
        ) from None

    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: {exc}") from None
    unknown = sorted(set(data) - set(ENV))
    if unknown:
        raise ValueError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(ENV)}"
        )
    return data


def settings() -> ClusterSettings | None:
    """The cluster settings when cluster mode is on, else None."""
    merged = _read_file()
    for key, var in ENV.items():
        if os.environ.get(var):
            merged[key] = os.environ[var]
    mode = str(merged.pop("mode", "local")).lower()
    if mode not in ("local", "cluster"):
        raise ValueError(f"KUBETUNE_MODE must be 'local' or 'cluster', got {mode!r}")
    if mode == "local":
        return None
    values: dict[str, Any] = {k: (str(v) if v is not None else None) for k, v in merged.items()}
    return ClusterSettings(**values)


def cluster_fit(tuner: Any) -> Any:
    """Run ``tuner`` on the cluster and return its ResultGrid; None when it runs here."""
    restore = tuner._restore
    cluster = settings()
    if restore is not None and restore.get("operator"):
        if cluster is None:
            raise RuntimeError(
                f"{restore['storage_uri']} is an experiment the operator ran: continue it on"
                " the cluster (KUBETUNE_MODE=cluster, or `kubetune submit`), or apply a"
                " TuneExperiment with spec.restoreFrom set to that URI; get_results() reads"
                " it from here"
            )
    elif cluster is None:
        return None
    from kubetune.cluster.submit import ClusterRun

    return ClusterRun(tuner, cluster).run()
