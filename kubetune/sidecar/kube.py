"""The sidecar's one door to the API server: its own TuneTrial (status.report, spec.verdict).

In-cluster config is built from the projected token directory. Tokens rotate: the client
re-reads the file, and a 401 re-reads it at once and retries the request once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.config.incluster_config import InClusterConfigLoader

GROUP = "kubetune.io"
VERSION = "v1alpha1"
PLURAL = "tunetrials"
FIELD_MANAGER = "kubetune-sidecar"
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT_S = 10.0

T = TypeVar("T")


class KubeTrialApi:
    def __init__(self, name: str, namespace: str | None, token_dir: str) -> None:
        self.name = name
        self.token_dir = token_dir
        if namespace is None:
            with open(os.path.join(self.token_dir, "namespace"), encoding="utf-8") as f:
                namespace = f.read().strip()
        self.namespace = namespace
        self._connect()
        self._pins: tuple[float, set[str]] | None = None

    def _connect(self) -> None:
        cfg = client.Configuration()
        InClusterConfigLoader(
            token_filename=os.path.join(self.token_dir, "token"),
            cert_filename=os.path.join(self.token_dir, "ca.crt"),
        ).load_and_set(cfg)
        self.api_client = client.ApiClient(cfg)
        self.custom = client.CustomObjectsApi(self.api_client)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ApiException as exc:
            if exc.status != 401:
                raise
        self._connect()  # the token rotated under us: read it again, retry once
        return fn()

    def get(self) -> dict[str, Any]:
        obj: Any = self._call(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                self.name,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        )
        return dict(obj)

    def patch_report(self, report: dict[str, Any]) -> dict[str, Any] | None:
        body = {"status": {"report": report}}
        obj: Any = self._call(
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                self.name,
                body,
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        )
        return dict(obj)

    def pinned_checkpoints(self) -> set[str]:
        now = time.monotonic()
        if self._pins is not None and now - self._pins[0] < 2.0:
            return self._pins[1]
        spec = self.get().get("spec") or {}
        pins = {str(p) for p in spec.get("pinnedCheckpoints") or []}
        self._pins = (now, pins)
        return pins

    def wait_verdict(self, seq: int, timeout: float) -> dict[str, Any] | None:
        """Read the TuneTrial; if its verdict is not for ``seq`` yet, watch it until it is."""
        obj = self.get()
        verdict = _verdict(obj, seq)
        if verdict is not None:
            return verdict
        from kubernetes import watch

        w = watch.Watch()
        try:
            for event in w.stream(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                field_selector=f"metadata.name={self.name}",
                resource_version=obj["metadata"]["resourceVersion"],
                timeout_seconds=max(1, int(timeout)),
                _request_timeout=timeout + REQUEST_TIMEOUT_S,
                deserialize=False,
            ):
                raw = event.get("object") or event.get("raw_object")
                if isinstance(raw, dict):
                    verdict = _verdict(raw, seq)
                    if verdict is not None:
                        return verdict
        finally:
            w.stop()
        return None


def _verdict(obj: dict[str, Any], seq: int) -> dict[str, Any] | None:
    verdict = (obj.get("spec") or {}).get("verdict")
    if isinstance(verdict, dict) and verdict.get("seq") == seq:
        return verdict
    return None
