"""The one module that talks to the Kubernetes API (besides kopf's own watching).

A small REST client over ``requests`` with the credentials of ``kubernetes.config`` (kubeconfig
or in-cluster, token re-read as it rotates): it sends plain dicts, merge patches for custom
resources (they refuse strategic merge), treats 409 on create and 404 on delete as done, and
counts every write so the benchmark and /metrics can report writes per trial.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from typing import Any

import requests

from kubetune_operator import kueue, metrics, objects

log = logging.getLogger("kubetune_operator.api")

MERGE = "application/merge-patch+json"
TRIALS = f"/apis/{objects.GROUP}/{objects.VERSION}/namespaces/{{ns}}/tunetrials"
EXPERIMENTS = f"/apis/{objects.GROUP}/{objects.VERSION}/namespaces/{{ns}}/tuneexperiments"
PODS = "/api/v1/namespaces/{ns}/pods"


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class KubeApi:
    def __init__(self, timeout_s: float = 15.0) -> None:
        from kubernetes import client, config

        self.configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=self.configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=self.configuration)
        self.host = self.configuration.host.rstrip("/")
        self.timeout_s = timeout_s
        self.writes: Counter[str] = Counter()
        self._local = threading.local()
        self._token_read = 0.0

    # -- transport --------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            c = self.configuration
            session = requests.Session()
            session.trust_env = False  # no proxies or CA bundles from the environment
            session.verify = c.ssl_ca_cert if c.verify_ssl and c.ssl_ca_cert else c.verify_ssl
            if c.cert_file and c.key_file:
                session.cert = (c.cert_file, c.key_file)
            self._local.session = session
        return session

    def _auth(self) -> dict[str, str]:
        c = self.configuration
        hook = getattr(c, "refresh_api_key_hook", None)
        if hook is not None and time.monotonic() - self._token_read > 60:
            hook(c)
            self._token_read = time.monotonic()
        key = (c.api_key or {}).get("authorization") or (c.api_key or {}).get("BearerToken")
        if not key:
            return {}
        prefix = (c.api_key_prefix or {}).get("authorization", "")
        if prefix:
            return {"Authorization": f"{prefix} {key}"}
        return {"Authorization": key if key.lower().startswith("bearer ") else f"Bearer {key}"}

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (),
    ) -> dict[str, Any] | None:
        headers = {"Accept": "application/json", **self._auth()}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        if method != "GET":
            self.writes[method] += 1
            metrics.API_WRITES.labels(method).inc()
        try:
            response = self._session().request(
                method,
                self.host + path,
                data=data,
                headers=headers,
                params=params,
                timeout=self.timeout_s,
            )
        except requests.RequestException as exc:
            metrics.API_ERRORS.labels("connection").inc()
            raise ApiError(0, str(exc)) from exc
        if response.status_code in ok:
            return None
        if response.status_code >= 400:
            metrics.API_ERRORS.labels(str(response.status_code)).inc()
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, f"{method} {path}: {message}")
        return response.json() if response.content else {}

    # -- TuneTrials -------------------------------------------------------------------------
    def create_trial(self, body: dict[str, Any]) -> dict[str, Any]:
        ns = body["metadata"]["namespace"]
        try:
            return self.request("POST", TRIALS.format(ns=ns), body) or {}
        except ApiError as exc:
            if exc.status != 409:
                raise
        name = body["metadata"]["name"]
        existing = self.request("GET", f"{TRIALS.format(ns=ns)}/{name}") or {}
        self.patch_trial(ns, name, {"spec": body["spec"]})
        return existing

    def patch_trial(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.request("PATCH", f"{TRIALS.format(ns=namespace)}/{name}", patch, MERGE, ok=(404,))

    def patch_trial_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        path = f"{TRIALS.format(ns=namespace)}/{name}/status"
        self.request("PATCH", path, patch, MERGE, ok=(404,))

    def list_trials(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        params = {"labelSelector": f"{objects.LABEL_EXPERIMENT}={experiment}"}
        out = self.request("GET", TRIALS.format(ns=namespace), params=params) or {}
        return list(out.get("items") or [])

    # -- Pods -------------------------------------------------------------------------------
    def create_pod(self, body: dict[str, Any]) -> None:
        ns = body["metadata"]["namespace"]
        self.request("POST", PODS.format(ns=ns), body, ok=(409,))

    def delete_pod(self, namespace: str, name: str, grace_s: int | None) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if grace_s is not None:
            body["gracePeriodSeconds"] = grace_s  # type: ignore[assignment]
        self.request("DELETE", f"{PODS.format(ns=namespace)}/{name}", body, ok=(404,))

    def list_pods(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        params = {"labelSelector": f"{objects.LABEL_EXPERIMENT}={experiment}"}
        out = self.request("GET", PODS.format(ns=namespace), params=params) or {}
        return list(out.get("items") or [])

    # -- Kueue (read only) ------------------------------------------------------------------
    def list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        """Kueue's Workloads in NAMESPACE (the newest API version served); ApiError 404 when
        Kueue is not installed, 403 without the chart's rbac.readKueueWorkloads."""
        error: ApiError | None = None
        for version in kueue.API_VERSIONS:
            path = f"/apis/{kueue.API_GROUP}/{version}/namespaces/{namespace}/workloads"
            try:
                out = self.request("GET", path) or {}
            except ApiError as exc:
                if exc.status != 404:
                    raise
                error = exc
                continue
            return list(out.get("items") or [])
        assert error is not None
        raise error

    # -- TuneExperiments --------------------------------------------------------------------
    def patch_experiment_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        path = f"{EXPERIMENTS.format(ns=namespace)}/{name}/status"
        self.request("PATCH", path, patch, MERGE, ok=(404,))

    # -- Secrets, RBAC, Events --------------------------------------------------------------
    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        import base64

        try:
            secret = self.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}") or {}
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return {
            k: base64.b64decode(v).decode("utf-8", "replace")
            for k, v in (secret.get("data") or {}).items()
        }

    def ensure(self, body: dict[str, Any]) -> None:
        """Create a namespaced object unless it exists (GET first: no write when present)."""
        kind = body["kind"]
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        base = {
            "ServiceAccount": f"/api/v1/namespaces/{ns}/serviceaccounts",
            "Role": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
            "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
        }[kind]
        try:
            self.request("GET", f"{base}/{name}")
            return
        except ApiError as exc:
            if exc.status != 404:
                raise
        self.request("POST", base, body, ok=(409,))

    def event(self, obj: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        meta = obj["metadata"]
        ns = meta["namespace"]
        stamp = objects.now_iso()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": ns},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", objects.API_VERSION),
                "kind": obj.get("kind", "TuneExperiment"),
                "name": meta["name"],
                "namespace": ns,
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "kubetune-operator"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.request("POST", f"/api/v1/namespaces/{ns}/events", body)
        except ApiError as exc:
            log.warning("cannot post event %s: %s", reason, exc)


class Watcher(threading.Thread):
    """List + watch of one kind in one namespace (or all), feeding ``on_event(type, obj)``.

    Lighter than a kopf handler per event (no diff-base, no progress storage): the trial and
    pod streams are the busiest, and only small views of them are kept. Bookmarks keep the
    resourceVersion fresh; a 410 Gone re-lists (``on_event`` must be idempotent); the server
    ends each watch after ``timeoutSeconds`` and a client read timeout catches silent stalls.
    """

    def __init__(
        self,
        api: KubeApi,
        path: str,
        on_event: Any,
        label_selector: str | None = None,
        timeout_s: int = 240,
    ) -> None:
        super().__init__(name=f"watch {path}", daemon=True)
        self.api = api
        self.path = path
        self.on_event = on_event
        self.label_selector = label_selector
        self.timeout_s = timeout_s
        self.stopped = threading.Event()
        self.synced = threading.Event()

    def _list(self) -> str:
        params: dict[str, Any] = {}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        out = self.api.request("GET", self.path, params=params) or {}
        for item in out.get("items") or []:
            self.on_event("ADDED", item)
        self.synced.set()
        return str((out.get("metadata") or {}).get("resourceVersion") or "")

    def run(self) -> None:
        version = ""
        while not self.stopped.is_set():
            try:
                if not version:
                    version = self._list()
                version = self._watch(version)
            except Exception as exc:  # keep watching whatever happens; log and back off
                log.warning("watch %s failed: %s", self.path, exc)
                metrics.API_ERRORS.labels("watch").inc()
                version = ""
                self.stopped.wait(1.0)

    def _watch(self, version: str) -> str:
        params: dict[str, Any] = {
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.timeout_s),
        }
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        session = requests.Session()
        session.trust_env = False
        c = self.api.configuration
        verify = c.ssl_ca_cert if c.verify_ssl and c.ssl_ca_cert else c.verify_ssl
        cert = (c.cert_file, c.key_file) if c.cert_file and c.key_file else None
        with session.get(
            self.api.host + self.path,
            params=params,
            headers={"Accept": "application/json", **self.api._auth()},
            stream=True,
            timeout=(10, self.timeout_s + 30),
            verify=verify,
            cert=cert,
        ) as response:
            if response.status_code == 410:
                return ""
            if response.status_code >= 400:
                raise ApiError(response.status_code, response.text[:200])
            for line in response.iter_lines():
                if self.stopped.is_set():
                    break
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    return "" if obj.get("code") == 410 else version
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind != "BOOKMARK":
                    self.on_event(kind, obj)
        return version
