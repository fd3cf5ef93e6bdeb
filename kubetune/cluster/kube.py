"""The user's calls to the API server (the kubernetes client, imported here only).

The cluster and user are the kubeconfig's current context (``KUBETUNE_CONTEXT`` picks another),
as for kubectl; in a pod without a kubeconfig (the chart's dashboard), its ServiceAccount. The
calls are exactly those of ``kubectl apply/get/patch`` of a TuneExperiment (``kubetune
submit``) and, for ``kubetune dashboard --cluster``, reads only: get/list of TuneExperiments,
TuneTrials, Pods and Events, and a pod's log tail (``kubectl logs --tail``), so the user needs
no more RBAC than that.
"""

from __future__ import annotations

from typing import Any, cast

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "tuneexperiments"
TRIALS = "tunetrials"
LABEL_EXPERIMENT = "kubetune.io/experiment"
LABEL_TRIAL = "kubetune.io/trial"


class Cluster:
    def __init__(self, context: str | None = None, namespace: str | None = None) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        in_cluster = _in_cluster() and not _kubeconfig_present()
        try:
            if in_cluster:
                config.load_incluster_config(client_configuration=configuration)
            else:
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
        self.core = client.CoreV1Api(self.api_client)
        self.namespace = namespace or (
            _pod_namespace() if in_cluster else _context_namespace(context)
        )
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

    # -- reads (kubetune dashboard --cluster) ----------------------------------------------
    def list_experiments(self, namespace: str | None) -> list[dict[str, Any]]:
        """The TuneExperiments of ``namespace`` (every namespace for None)."""
        try:
            if namespace is None:
                out = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            else:
                out = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        except self._api_exception as exc:
            where = f"namespace {namespace}" if namespace else "the cluster"
            raise RuntimeError(
                f"cannot list TuneExperiments in {where}: {exc.status} {_detail(exc)}"
            ) from None
        return list(cast("dict[str, Any]", out).get("items") or [])

    def read_experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            out = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except self._api_exception as exc:
            if exc.status == 404:
                return None
            raise RuntimeError(_api_message(exc, "read", f"{namespace}/{name}")) from None
        return cast("dict[str, Any]", out)

    def list_trials(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        """The experiment's TuneTrial objects (by the operator's experiment label)."""
        try:
            out = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, TRIALS, label_selector=f"{LABEL_EXPERIMENT}={experiment}"
            )
        except self._api_exception as exc:
            raise RuntimeError(_api_message(exc, "list trials of", experiment)) from None
        return list(cast("dict[str, Any]", out).get("items") or [])

    def list_pods(self, namespace: str, experiment: str, trial: str) -> list[dict[str, Any]]:
        """The pods of one TuneTrial (one per attempt), as plain dicts."""
        selector = f"{LABEL_EXPERIMENT}={experiment},{LABEL_TRIAL}={trial}"
        try:
            pods = self.core.list_namespaced_pod(namespace, label_selector=selector)
        except self._api_exception as exc:
            raise RuntimeError(_api_message(exc, "list pods of", trial)) from None
        return [self.api_client.sanitize_for_serialization(p) for p in pods.items]

    def list_events(self, namespace: str, names: list[str]) -> list[dict[str, Any]]:
        """Events about the objects named ``names`` (a TuneTrial, its pods), oldest first."""
        out: list[dict[str, Any]] = []
        for name in names:
            try:
                events = self.core.list_namespaced_event(
                    namespace, field_selector=f"involvedObject.name={name}"
                )
            except self._api_exception as exc:
                raise RuntimeError(_api_message(exc, "list events of", name)) from None
            out.extend(self.api_client.sanitize_for_serialization(e) for e in events.items)
        out.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return out

    def log_tail(self, namespace: str, pod: str, container: str, lines: int = 200) -> str:
        """The last ``lines`` lines of a container's log (``kubectl logs --tail``)."""
        try:
            response: Any = self.core.read_namespaced_pod_log(
                pod, namespace, container=container, tail_lines=lines, _preload_content=False
            )
            return str(response.data.decode("utf-8", "replace"))
        except self._api_exception as exc:
            return f"(no log: {exc.status} {_detail(exc)})"

    def close(self) -> None:
        self.api_client.close()


def _kubeconfig() -> str | None:
    """$KUBECONFIG as it is now (the client reads it once, when it is first imported)."""
    import os

    return os.environ.get("KUBECONFIG") or None


def _in_cluster() -> bool:
    import os

    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _kubeconfig_present() -> bool:
    import os

    path = _kubeconfig() or os.path.expanduser("~/.kube/config")
    return any(os.path.exists(p) for p in path.split(os.pathsep))


def _pod_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def _context_namespace(context: str | None) -> str:
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(config_file=_kubeconfig())
    except config.ConfigException:
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def _detail(exc: Any) -> str:
    import json

    detail = str(exc.reason)
    try:
        detail = json.loads(exc.body).get("message") or detail
    except (TypeError, ValueError, AttributeError):
        pass
    return detail


def _api_message(exc: Any, verb: str, name: str) -> str:
    return f"cannot {verb} TuneExperiment {name}: {exc.status} {_detail(exc)}"
