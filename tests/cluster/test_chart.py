"""The Helm chart against the real control plane: `helm lint` and `helm template` over every
values file in helm/kubetune/ci/, each rendered set applied with `kubectl apply --dry-run=server`
(CRDs that the set brings, and a minimal prometheus-operator ServiceMonitor CRD, are applied for
real first, as Helm would); the NOTES' sample experiment; the examples as a kustomization.

The RBAC of installed releases is checked in test_chart_rbac.py, the operator under the chart's
identity in test_chart_operator.py.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.cluster import chart_helpers
from tests.cluster.chart_helpers import (
    CHART,
    CI_VALUES,
    REPO,
    by_kind,
    component,
    container_of,
    docs_of,
    helm,
    kubectl_json,
    release_name,
    render,
)

crds = chart_helpers.crds  # fixtures
extra_namespaces = chart_helpers.extra_namespaces


# -- lint and template -----------------------------------------------------------------------


def test_helm_lint_passes_for_every_values_file(control_plane):
    helm(control_plane, "lint", "--strict", str(CHART))
    for values in CI_VALUES:
        # `helm lint` has no --api-versions: the ServiceMonitor (which needs that API) is
        # covered by `helm template` and the server-side dry run below.
        no_monitor = ["--set", "metrics.serviceMonitor.enabled=false"]
        helm(control_plane, "lint", "--strict", str(CHART), "-f", str(values), *no_monitor)


def test_service_monitor_without_its_api_fails_with_a_clear_message(control_plane):
    proc = helm(
        control_plane,
        "template",
        "x",
        str(CHART),
        "-f",
        str(CHART / "ci" / "metrics-values.yaml"),
        check=False,
    )
    assert proc.returncode != 0
    assert "monitoring.coreos.com/v1 ServiceMonitor API" in proc.stderr


def test_a_shared_gpu_resource_without_its_replicas_fails_with_a_clear_message(control_plane):
    proc = helm(
        control_plane,
        "template",
        "x",
        str(CHART),
        "--set",
        "trial.sharedGpuResourceName=nvidia.com/gpu.shared",
        check=False,
    )
    assert proc.returncode != 0
    assert "trial.sharedGpuReplicas must be the device plugin's replicas" in proc.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_rendered_set_passes_server_side_dry_run(crds, namespace, extra_namespaces, values):
    release = release_name()
    sets: list[str] = []
    if "namespaced" in values.name:
        served = [extra_namespaces("a"), extra_namespaces("b")]
        sets.append("watchNamespaces={" + ",".join(served) + "}")
    docs = render(crds, release, namespace, values, *sets)

    # CRDs in the set (kopf's peering CRDs) first, for real, as `helm install` would.
    bundled = by_kind(docs, "CustomResourceDefinition")
    if bundled:
        kubectl_json(crds, "apply", "--server-side", "--force-conflicts", docs=bundled)
        crds.wait_established(*(crd["metadata"]["name"] for crd in bundled))
    rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    result = kubectl_json(crds, "apply", "--dry-run=server", docs=rest)
    assert "(server dry run)" in result.stdout

    container = container_of(docs)
    args = container["args"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    (deployment,) = by_kind(component(docs, "operator"), "Deployment")
    replicas = deployment["spec"]["replicas"]
    if replicas > 1:
        assert "--peering=kubetune" in args and "--standalone" not in args
        assert {c["metadata"]["name"] for c in bundled} == {
            "clusterkopfpeerings.kopf.dev",
            "kopfpeerings.kopf.dev",
        }
        assert by_kind(docs, "ClusterKopfPeering")
    else:
        assert "--standalone" in args and deployment["spec"]["strategy"]["type"] == "Recreate"
        assert not bundled
    if sets:
        assert [a for a in args if a.startswith("--namespace")] == [
            f"--namespace={ns}" for ns in served
        ]
        assert {r["metadata"]["namespace"] for r in by_kind(docs, "Role")} == set(served)
        assert {c["metadata"]["name"] for c in by_kind(docs, "ClusterRole")} == {
            f"{release}-kubetune-discovery"
        }
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["KUBETUNE_DEFAULT_S3_BUCKET"] == "tuning"
        assert env["KUBETUNE_IMAGE_PULL_SECRETS"] == "registry-credentials"
        assert json.loads(env["KUBETUNE_EXTENDED_RESOURCES"]) == {"TPU": "google.com/tpu"}
    else:
        assert "--all-namespaces" in args
    if "metrics" in values.name:
        assert by_kind(docs, "Service") and by_kind(docs, "ServiceMonitor")
    if "pdb" in values.name or "ha" in values.name:
        assert by_kind(docs, "PodDisruptionBudget")
    env = {e["name"]: e.get("value") for e in container["env"]}
    if "fractional-gpu" in values.name:
        assert env["KUBETUNE_SHARED_GPU_RESOURCE"] == "nvidia.com/gpu.shared"
        assert env["KUBETUNE_SHARED_GPU_REPLICAS"] == "4"
    else:  # not configured: the operator refuses shares of a GPU
        assert "KUBETUNE_SHARED_GPU_RESOURCE" not in env


def test_notes_show_a_valid_sample_experiment_and_the_crd_upgrade_step(crds, namespace):
    out = helm(crds, "install", release_name(), str(CHART), "-n", namespace, "--dry-run=server")
    notes = out.stdout.split("NOTES:", 1)[1]
    assert "kubectl apply --server-side -f" in notes and "crds/" in notes
    sample = notes.split("cat <<'YAML' | kubectl apply -f -\n", 1)[1].split("\n  YAML", 1)[0]
    manifest = yaml.safe_load("\n".join(line[2:] for line in sample.splitlines()))
    assert manifest["kind"] == "TuneExperiment"
    result = kubectl_json(crds, "apply", "-n", namespace, "--dry-run=server", docs=[manifest])
    assert "(server dry run)" in result.stdout


# -- GitOps: the examples as a kustomization --------------------------------------------------


def test_examples_build_with_kustomize_and_pass_server_side_dry_run(crds, namespace):
    built = docs_of(crds.kubectl("kustomize", str(REPO / "examples")).stdout)
    kinds = {d["kind"] for d in built}
    assert kinds == {"TuneExperiment"}, kinds
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kubetune" for d in built)
    result = crds.kubectl(
        "apply", "-k", str(REPO / "examples"), "-n", namespace, "--dry-run=server"
    )
    assert result.stdout.count("(server dry run)") == len(built)
