"""A thin, dict-based REST layer over the ``kubernetes`` client's ApiClient.

The test kubelet talks to the API server a lot (watches, status patches, token requests) and
wants plain JSON dicts, not the client's generated models: building and validating those
models costs milliseconds per pod, which would show in the create -> Running latency. This
module reuses the client's configuration (kubeconfig loading, TLS, bearer tokens and
client certificates) and its urllib3 pool, and does its own JSON.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from kubernetes import client, config
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger("kubetune.testenv.kubelet")

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer of the API server."""

    def __init__(self, method: str, path: str, status: int, body: JSON | None, text: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        reason = (body or {}).get("message") or text[:300]
        super().__init__(f"{method} {path}: {status} {reason}")

    @property
    def reason(self) -> str:
        return str((self.body or {}).get("reason", ""))


class KubeRest:
    """Plain JSON requests against the API server described by a kubeconfig."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.configuration: client.Configuration = api_client.configuration

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | Path, pool_size: int = 64) -> KubeRest:
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(cfg))

    # -- where the API server is (for KUBERNETES_SERVICE_HOST/PORT) -----------------------
    @property
    def host(self) -> str:
        return urlparse(self.configuration.host).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parsed = urlparse(self.configuration.host)
        return parsed.port or (443 if parsed.scheme == "https" else 80)

    # -- requests -------------------------------------------------------------------------
    def _serialize(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        content_type: str | None,
        body: Any,
    ) -> tuple[str, str, dict[str, str], Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        q = [(k, _query_value(v)) for k, v in (query or {}).items() if v is not None]
        req = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=q or None,
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        m, url, hdrs, _, _ = req
        return m, url, hdrs, body

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float = 30.0,
    ) -> JSON:
        m, url, headers, payload = self._serialize(method, path, query, content_type, body)
        resp = self.api_client.rest_client.pool_manager.request(
            m,
            url,
            body=None if payload is None else json.dumps(payload).encode(),
            headers=headers,
            timeout=timeout,
            preload_content=True,
        )
        text = resp.data.decode("utf-8", "replace") if resp.data else ""
        data: JSON | None
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = None
        if not 200 <= resp.status <= 299:
            raise ApiError(method, path, resp.status, data, text)
        return data or {}

    def get(self, path: str, **query: Any) -> JSON:
        return self.call("GET", path, query=query)

    def create(self, path: str, body: JSON) -> JSON:
        return self.call("POST", path, body=body)

    def merge_patch(self, path: str, body: JSON) -> JSON:
        return self.call("PATCH", path, body=body, content_type=MERGE_PATCH)

    def status_patch(self, path: str, body: JSON) -> JSON:
        """A pod status patch as the kubelet sends it: strategic merge, so the conditions in
        BODY merge by type with the ones others set instead of replacing the list."""
        return self.call("PATCH", path, body=body, content_type=STRATEGIC_MERGE_PATCH)

    def delete(self, path: str, body: JSON | None = None, **query: Any) -> JSON:
        return self.call("DELETE", path, body=body, query=query)

    def watch(self, path: str, *, timeout_seconds: int = 300, **query: Any) -> WatchStream:
        query = dict(query, watch="true", timeoutSeconds=timeout_seconds)
        query.setdefault("allowWatchBookmarks", "true")
        m, url, headers, _ = self._serialize("GET", path, query, None, None)
        resp = self.api_client.rest_client.pool_manager.request(
            m,
            url,
            headers=headers,
            timeout=_watch_timeout(timeout_seconds),
            preload_content=False,
        )
        if not 200 <= resp.status <= 299:
            text = resp.data.decode("utf-8", "replace")
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            resp.release_conn()
            raise ApiError(m, path, resp.status, data, text)
        return WatchStream(resp)

    def close(self) -> None:
        self.api_client.close()


class WatchStream:
    """The events of one watch request; ``close()`` from another thread ends the iteration."""

    def __init__(self, resp: Any) -> None:
        self._resp = resp
        self.closed = False

    def __iter__(self) -> Iterator[JSON]:
        try:
            for line in iter_resp_lines(self._resp):
                if self.closed:
                    return
                if line:
                    yield json.loads(line)
        except Exception:
            if self.closed:
                return
            raise
        finally:
            self._release()

    def close(self) -> None:
        self.closed = True
        sock = getattr(getattr(self._resp, "connection", None), "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _release(self) -> None:
        try:
            self._resp.close()
        except Exception:
            pass


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _watch_timeout(timeout_seconds: int) -> Any:
    import urllib3

    return urllib3.Timeout(connect=10.0, read=timeout_seconds + 30.0)


def pod_path(namespace: str, name: str = "", sub: str = "") -> str:
    path = f"/api/v1/namespaces/{quote(namespace)}/pods"
    if name:
        path += "/" + quote(name)
    if sub:
        path += "/" + sub
    return path


def patch_pod_status(api: KubeRest, namespace: str, name: str, uid: str, status: JSON) -> JSON:
    """Write the pod's status (pods/status), for that pod only (a newer one of the same name
    answers 409)."""
    return api.status_patch(
        pod_path(namespace, name, "status"), {"metadata": {"uid": uid}, "status": status}
    )


def confirm_deletion(
    api: KubeRest, namespace: str, name: str, uid: str, quiet: bool = False
) -> None:
    """The kubelet's confirmation that a pod's containers are gone: delete it with grace 0,
    that pod only (``preconditions.uid``). A pod already gone (404) or replaced (409) is no
    error; another error is logged, or with ``quiet`` ignored too."""
    try:
        api.delete(
            pod_path(namespace, name),
            {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid},
            },
        )
    except ApiError as e:
        if not quiet and e.status not in (404, 409):
            log.warning("pod %s/%s: confirm deletion: %s", namespace, name, e)
