"""``kubetune dashboard --cluster``: the TuneExperiments of a cluster, read from the storage
each one names, plus what only the cluster knows: phases, a trial's pods, their Events and the
trial container's log tail.

Every Kubernetes read goes through :class:`kubetune.cluster.kube.Cluster` (the kubeconfig's
current context, or the pod's ServiceAccount in the chart's dashboard); they are get/list
calls and a log read, nothing that writes. The result logs and snapshots are read from S3 with
this process's own credentials (``AWS_*`` / ``KUBETUNE_S3_*`` or a cloud identity, as for
``kubetune results s3://...``), never from the experiments' Secrets.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kubetune.dashboard.server import Dashboard
from kubetune.dashboard.source import ExperimentView
from kubetune.storage import Storage, StorageError, open_storage

LOG_LINES = 200
TRIAL_CONTAINER = "trial"  # the operator's name for the container that runs user code


def parse_target(target: str | None, namespaces: list[str]) -> tuple[list[str] | None, str | None]:
    """(namespaces to list, one experiment's name) of ``[NAMESPACE/]NAME`` and ``-n``;
    namespaces None means every namespace."""
    name = None
    if target:
        ns, sep, name = target.rpartition("/")
        if not name:
            raise ValueError(f"--cluster {target!r}: expected [NAMESPACE/]NAME")
        if sep:
            if namespaces and namespaces != [ns]:
                raise ValueError(f"--cluster {target!r} names namespace {ns}, -n says {namespaces}")
            namespaces = [ns]
        elif len(namespaces) > 1:
            raise ValueError(f"--cluster {target!r}: give one namespace with -n, or NAMESPACE/NAME")
    return (list(namespaces) if namespaces else []), name


class ClusterDashboard(Dashboard):
    """Experiments keyed ``NAMESPACE/NAME``: those of ``namespaces`` (None: every namespace;
    empty: the context's), or the one named ``only``."""

    def __init__(
        self,
        cluster: Any,
        namespaces: list[str] | None,
        only: str | None = None,
        min_interval_s: float = 1.5,
        s3_endpoint: str | None = None,
    ) -> None:
        super().__init__(None, min_interval_s)
        self.cluster = cluster
        # the S3 endpoint as this machine reaches it, over the one each experiment names for
        # its pods (an in-cluster Service name that only resolves in the cluster)
        self.s3_endpoint = s3_endpoint
        if namespaces is not None and not namespaces:
            namespaces = [cluster.namespace]
        self.namespaces = namespaces
        self.only = only
        self.objects: dict[str, dict[str, Any]] = {}
        self._storages: dict[tuple[Any, ...], Storage] = {}
        self._objects_lock = threading.Lock()

    def root(self) -> str:
        context = "every namespace" if self.namespaces is None else ", ".join(self.namespaces)
        return f"cluster ({context})"

    def find_keys(self) -> list[str]:
        items: list[dict[str, Any]] = []
        if self.only is not None:
            assert self.namespaces
            obj = self.cluster.read_experiment(self.namespaces[0], self.only)
            if obj is None:
                raise RuntimeError(f"no TuneExperiment {self.namespaces[0]}/{self.only}")
            items = [obj]
        elif self.namespaces is None:
            items = self.cluster.list_experiments(None)
        else:
            for ns in self.namespaces:
                items.extend(self.cluster.list_experiments(ns))
        keys = []
        with self._objects_lock:
            for obj in items:
                meta = obj["metadata"]
                key = f"{meta['namespace']}/{meta['name']}"
                self.objects[key] = obj
                keys.append(key)
        return keys

    def name(self, key: str) -> str:
        return key

    def _object(self, key: str) -> dict[str, Any]:
        with self._objects_lock:
            obj = self.objects.get(key)
        if obj is None:
            self.find_keys()
            obj = self.objects.get(key)
        if obj is None:
            raise KeyError(key)
        return obj

    def open_view(self, key: str) -> ExperimentView:
        obj = self._object(key)
        uri = str((obj.get("status") or {}).get("storageUri") or "")
        if not uri.startswith("s3://"):
            raise FileNotFoundError(
                f"TuneExperiment {key} has no status.storageUri yet (the operator has not"
                " started it)"
            )
        root, _, exp_key = uri.rstrip("/").rpartition("/")
        return ExperimentView(self._storage(root, obj), exp_key, self.min_interval_s)

    def view(self, key: str) -> ExperimentView:
        view = self.views.get(key)
        if view is None:
            view = self.open_view(key)  # not cached until its storage URI is known
            with self._lock:
                view = self.views.setdefault(key, view)
        view.refresh()
        return view

    def _storage(self, root: str, obj: dict[str, Any]) -> Storage:
        spec = (obj.get("spec") or {}).get("storage") or {}
        options: dict[str, Any] = {}
        endpoint = self.s3_endpoint or spec.get("endpoint")
        if endpoint:
            options["endpoint_url"] = endpoint
        if spec.get("region"):
            options["region"] = spec["region"]
        if spec.get("addressingStyle"):
            options["addressing_style"] = spec["addressingStyle"]
        ident = (root, tuple(sorted(options.items())))
        storage = self._storages.get(ident)
        if storage is None:
            storage = self._storages[ident] = open_storage(root, **options)
        return storage

    def extra_summary(self, key: str) -> dict[str, Any]:
        obj = self.objects.get(key) or {}
        status = obj.get("status") or {}
        return {"phase": status.get("phase") or "", "message": status.get("message") or ""}

    def extra_trial(self, key: str, view: ExperimentView, trial_id: str) -> dict[str, Any]:
        namespace, _, experiment = key.partition("/")
        try:
            return {"cluster": self._trial_objects(namespace, experiment, trial_id)}
        except (RuntimeError, StorageError) as exc:
            return {"cluster": {"error": str(exc)}}

    def _trial_objects(self, namespace: str, experiment: str, trial_id: str) -> dict[str, Any]:
        trial = next(
            (
                t
                for t in self.cluster.list_trials(namespace, experiment)
                if (t.get("spec") or {}).get("trialId") == trial_id
            ),
            None,
        )
        if trial is None:
            return {"error": f"no TuneTrial of {experiment} for trial {trial_id}"}
        name = trial["metadata"]["name"]
        status = trial.get("status") or {}
        pods = self.cluster.list_pods(namespace, experiment, name)
        pods.sort(key=lambda p: int((p["metadata"].get("labels") or {}).get(_ATTEMPT, 0) or 0))
        events = self.cluster.list_events(namespace, [name, *(p["metadata"]["name"] for p in pods)])
        log = None
        if pods:
            newest = pods[-1]["metadata"]["name"]
            log = {
                "pod": newest,
                "container": TRIAL_CONTAINER,
                "lines": LOG_LINES,
                "text": self.cluster.log_tail(namespace, newest, TRIAL_CONTAINER, LOG_LINES),
            }
        return {
            "namespace": namespace,
            "tunetrial": name,
            "phase": status.get("phase"),
            "reason": status.get("reason"),
            "attempts": status.get("attempts"),
            "pods": [_pod_summary(p) for p in pods],
            "events": [_event_summary(e) for e in events],
            "log": log,
            "read_at": time.time(),
        }


_ATTEMPT = "kubetune.io/attempt"


def _pod_summary(pod: dict[str, Any]) -> dict[str, Any]:
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    containers = []
    for c in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        state = c.get("state") or {}
        kind = next(iter(state), "")
        detail = state.get(kind) or {}
        containers.append(
            {
                "name": c.get("name"),
                "state": kind,
                "reason": detail.get("reason") or "",
                "exit_code": detail.get("exitCode"),
                "restarts": c.get("restartCount", 0),
            }
        )
    return {
        "name": meta["name"],
        "attempt": (meta.get("labels") or {}).get(_ATTEMPT),
        "phase": status.get("phase"),
        "node": spec.get("nodeName"),
        "reason": status.get("reason") or "",
        "message": status.get("message") or "",
        "started": status.get("startTime"),
        "containers": containers,
    }


def _event_summary(event: dict[str, Any]) -> dict[str, Any]:
    involved = event.get("involvedObject") or {}
    return {
        "type": event.get("type"),
        "reason": event.get("reason"),
        "message": event.get("message"),
        "object": f"{involved.get('kind', '')}/{involved.get('name', '')}",
        "count": event.get("count") or 1,
        "last": event.get("lastTimestamp") or event.get("eventTime") or "",
    }


def make_cluster_server(
    target: str | None,
    namespaces: list[str],
    all_namespaces: bool,
    host: str,
    port: int,
    context: str | None = None,
    s3_endpoint: str | None = None,
) -> Any:
    """The server of ``kubetune dashboard --cluster``."""
    from kubetune.cluster.kube import Cluster
    from kubetune.dashboard.server import serve_dashboard

    chosen, only = parse_target(target, namespaces)
    if all_namespaces:
        if only is not None or chosen:
            raise ValueError("--all-namespaces takes no NAMESPACE/NAME and no -n")
        chosen_ns: list[str] | None = None
    else:
        chosen_ns = chosen
    cluster = Cluster(context=context, namespace=chosen[0] if chosen else None)
    dashboard = ClusterDashboard(cluster, chosen_ns, only, s3_endpoint=s3_endpoint)
    dashboard.find_keys()  # fail now (no access, no such experiment), not in the browser
    return serve_dashboard(dashboard, host, port)
