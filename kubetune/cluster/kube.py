"""The submitting user's calls to the API server (the kubernetes client, imported here only).

The cluster and user are the kubeconfig's current context (``KUBETUNE_CONTEXT`` picks another),
as for kubectl; the calls are exactly those of ``kubectl apply/get/patch`` of a TuneExperiment,
so the user needs no more RBAC than that.
"""

from __future__ import annotations

from typing import Any, cast

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "tuneexperiments"


class Cluster:
    def __init__(self, context: str | None = None, namespace: str | None = None) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            config.load_kube_config(
                config_file=_kubeconfig(), context=context, client_configuration=configuration
            )
        except config.ConfigException as exc:
            raise RuntimeError(
                f"cluster mode needs a kubeconfig (as kubectl does): {exc}; set KUBECONFIG, or"
                " KUBETUNE_MODE=local to run here"
            ) from None
        self.api_client = client.ApiClient(configuration)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.namespace = namespace or _context_namespace(context)
        self._api_exception = client.ApiException

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            out = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body
            )
        except self._api_exception as exc:
            raise RuntimeError(_api_message(exc, "create", body["metadata"]["name"])) from None
        return cast("dict[str, Any]", out)

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            out = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except self._api_exception as exc:
            if exc.status == 404:
                return None
            raise RuntimeError(_api_message(exc, "read", name)) from None
        return cast("dict[str, Any]", out)

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                {"spec": spec},
                _content_type="application/merge-patch+json",
            )
        except self._api_exception as exc:
            raise RuntimeError(_api_message(exc, "patch", name)) from None

    def close(self) -> None:
        self.api_client.close()


def _kubeconfig() -> str | None:
    """$KUBECONFIG as it is now (the client reads it once, when it is first imported)."""
    import os

    return os.environ.get("KUBECONFIG") or None


def _context_namespace(context: str | None) -> str:
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(config_file=_kubeconfig())
    except config.ConfigException:
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def _api_message(exc: Any, verb: str, name: str) -> str:
    import json

    detail = exc.reason
    try:
        detail = json.loads(exc.body).get("message") or detail
    except (TypeError, ValueError):
        pass
    return f"cannot {verb} TuneExperiment {name}: {exc.status} {detail}"
