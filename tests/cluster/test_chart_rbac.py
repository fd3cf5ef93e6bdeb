"""The chart installed for real with `helm install`: its operator and dashboard
ServiceAccounts checked with impersonation (`kubectl auth can-i --as=...`) and with a real token
(TokenRequest): every permission each uses is granted, nothing more (no Secret outside the
served namespaces, no list/watch of Secrets, nothing cluster-wide in namespaced mode); the
dashboard's rendered Deployment and read-only rules."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.cluster import chart_helpers
from tests.cluster.chart_helpers import (
    CHART,
    by_kind,
    can_i,
    component,
    container_of,
    install,
    kubectl_json,
    release_name,
    render,
)

crds = chart_helpers.crds  # fixtures
extra_namespaces = chart_helpers.extra_namespaces
releases = chart_helpers.releases


# -- RBAC of an installed release -------------------------------------------------------------

# (verb, resource) pairs the operator uses in every namespace it serves (from
# operator/kubetune_operator/api.py and kopf's watches and patches).
OPERATOR_NEEDS = [
    ("list", "tuneexperiments.kubetune.io"),
    ("watch", "tuneexperiments.kubetune.io"),
    ("patch", "tuneexperiments.kubetune.io"),
    ("patch", "tuneexperiments.kubetune.io/status"),
    ("get", "tunetrials.kubetune.io"),
    ("list", "tunetrials.kubetune.io"),
    ("watch", "tunetrials.kubetune.io"),
    ("create", "tunetrials.kubetune.io"),
    ("patch", "tunetrials.kubetune.io"),
    ("patch", "tunetrials.kubetune.io/status"),
    # granted onwards to the trial sidecars' Role, so held too
    ("get", "tunetrials.kubetune.io/status"),
    ("list", "tunetrials.kubetune.io/status"),
    ("watch", "tunetrials.kubetune.io/status"),
    ("update", "tuneexperiments.kubetune.io/finalizers"),
    ("update", "tunetrials.kubetune.io/finalizers"),
    ("list", "pods"),
    ("watch", "pods"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "events"),
    ("get", "secrets"),
    ("get", "serviceaccounts"),
    ("create", "serviceaccounts"),
    ("get", "roles.rbac.authorization.k8s.io"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("get", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
]
# What it must never be able to do, even where it serves.
OPERATOR_MUST_NOT = [
    ("list", "secrets"),
    ("watch", "secrets"),
    ("create", "secrets"),
    ("get", "configmaps"),
    ("create", "pods/exec"),
    ("get", "pods/log"),
    ("patch", "pods/status"),
    ("update", "tuneexperiments.kubetune.io/status"),
    ("delete", "tuneexperiments.kubetune.io"),
    ("create", "tuneexperiments.kubetune.io"),
    ("escalate", "roles.rbac.authorization.k8s.io"),
    ("bind", "roles.rbac.authorization.k8s.io"),
    ("delete", "roles.rbac.authorization.k8s.io"),
    ("create", "deployments.apps"),
]


# Kueue's Workloads, read for why a trial is not admitted (rbac.readKueueWorkloads): asked by
# SubjectAccessReview, since `kubectl auth can-i` cannot name a resource whose CRD is absent.
KUEUE_NEEDS = [("get", "workloads"), ("list", "workloads")]
KUEUE_MUST_NOT = [("watch", "workloads"), ("patch", "workloads"), ("delete", "workloads")]


def can_kueue(cp: Any, user: str, verb: str, resource: str, namespace: str) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {
                "group": "kueue.x-k8s.io",
                "resource": resource,
                "verb": verb,
                "namespace": namespace,
            },
        },
    }
    status, body = cp.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    assert status == 201, body
    return bool(body["status"].get("allowed"))


def test_namespaced_release_grants_what_the_operator_needs_and_nothing_else(
    crds, namespace, extra_namespaces, releases, tmp_path
):
    served, other = extra_namespaces("served"), extra_namespaces("other")
    release = release_name()
    install(crds, release, namespace, "--set", f"watchNamespaces={{{served}}}")
    releases.append((release, namespace))
    sa = f"{release}-kubetune"
    user = f"system:serviceaccount:{namespace}:{sa}"

    missing = [p for p in OPERATOR_NEEDS if not can_i(crds, user, *p, served)]
    assert not missing, f"the chart does not grant {missing} in the served namespace"
    extra = [p for p in OPERATOR_MUST_NOT if can_i(crds, user, *p, served)]
    assert not extra, f"the chart grants {extra}"
    assert all(can_kueue(crds, user, *p, served) for p in KUEUE_NEEDS)
    assert not any(can_kueue(crds, user, *p, served) for p in KUEUE_MUST_NOT)
    assert not any(can_kueue(crds, user, *p, other) for p in KUEUE_NEEDS)
    leaked = [p for p in OPERATOR_NEEDS if can_i(crds, user, *p, other)]
    assert not leaked, f"namespaced mode grants {leaked} in a namespace it does not serve"
    assert not can_i(crds, user, "get", "secrets", namespace)  # not even its own namespace
    for verb, resource in [("list", "tuneexperiments.kubetune.io"), ("list", "pods")]:
        assert not can_i(crds, user, verb, resource, None), f"cluster-wide {verb} {resource}"
    for verb, resource in [("list", "nodes"), ("create", "namespaces"), ("get", "secrets")]:
        assert not can_i(crds, user, verb, resource, None)
    # Read-only, cluster-wide, names and schemas only: kopf resolves the served namespaces and
    # notices CRD upgrades.
    assert can_i(crds, user, "watch", "customresourcedefinitions.apiextensions.k8s.io", None)
    assert can_i(crds, user, "list", "namespaces", None)

    # The same with the ServiceAccount's own token (TokenRequest), not impersonation.
    for ns in (served, other):
        crds.kubectl("create", "secret", "generic", "s3", "-n", ns, "--from-literal=k=v")
    token = crds.kubectl("create", "token", sa, "-n", namespace, "--duration=10m").stdout.strip()
    kubeconfig = crds.write_kubeconfig(tmp_path / "sa.kubeconfig", token, user=sa)
    as_sa = [str(crds.kubectl_path), f"--kubeconfig={kubeconfig}"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_sa, *args], capture_output=True, text=True, timeout=30)

    assert run("get", "secret", "s3", "-n", served).returncode == 0
    denied = run("get", "secret", "s3", "-n", other)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr
    assert "Forbidden" in run("get", "secrets", "-n", served).stderr  # no list
    assert "Forbidden" in run("get", "tuneexperiments", "-A").stderr


def test_clusterwide_release_serves_every_namespace_without_listing_secrets(
    crds, namespace, extra_namespaces, releases
):
    anywhere = extra_namespaces("any")
    release = release_name()
    install(crds, release, namespace, "-f", str(CHART / "ci" / "default-values.yaml"))
    releases.append((release, namespace))
    user = f"system:serviceaccount:{namespace}:{release}-kubetune"
    missing = [p for p in OPERATOR_NEEDS if not can_i(crds, user, *p, anywhere)]
    assert not missing, f"the chart does not grant {missing}"
    extra = [p for p in OPERATOR_MUST_NOT if can_i(crds, user, *p, anywhere)]
    assert not extra, f"the chart grants {extra}"
    assert can_i(crds, user, "watch", "tuneexperiments.kubetune.io", None)
    assert not can_i(crds, user, "list", "secrets", None)
    assert not can_i(crds, user, "patch", "clusterkopfpeerings.kopf.dev", None)  # standalone


def test_ha_release_creates_the_peering_object_and_may_patch_it(crds, namespace, releases):
    release = release_name()
    install(crds, release, namespace, "-f", str(CHART / "ci" / "ha-values.yaml"))
    releases.append((release, namespace))
    user = f"system:serviceaccount:{namespace}:{release}-kubetune"
    assert crds.kubectl("get", "clusterkopfpeering", "kubetune").returncode == 0
    for verb in ("list", "watch", "patch"):
        assert can_i(crds, user, verb, "clusterkopfpeerings.kopf.dev", None)
    deployment = json.loads(
        crds.kubectl(
            "get", "deployment", f"{release}-kubetune", "-n", namespace, "-o", "json"
        ).stdout
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=kubetune" in args


# -- the dashboard (dashboard.enabled) ----------------------------------------------------------
DASHBOARD_RULES = [
    {"apiGroups": ["kubetune.io"], "resources": ["tuneexperiments"], "verbs": ["get", "list"]},
    {"apiGroups": ["kubetune.io"], "resources": ["tunetrials"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]
DASHBOARD_NEEDS = [
    ("get", "tuneexperiments.kubetune.io"),
    ("list", "tuneexperiments.kubetune.io"),
    ("list", "tunetrials.kubetune.io"),
    ("list", "pods"),
    ("list", "events"),
    ("get", "pods/log"),
]
DASHBOARD_MUST_NOT = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("watch", "tuneexperiments.kubetune.io"),
    ("patch", "tuneexperiments.kubetune.io"),
    ("create", "tuneexperiments.kubetune.io"),
    ("delete", "tuneexperiments.kubetune.io"),
    ("patch", "tunetrials.kubetune.io"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "pods/exec"),
    ("create", "events"),
    ("get", "configmaps"),
]


def test_dashboard_renders_read_only_next_to_the_operator(crds, namespace, extra_namespaces):
    """`helm template` with dashboard.enabled: the dashboard's Deployment runs `kubetune
    dashboard --cluster` from the operator image on every interface of its pod, behind a
    ClusterIP Service; the S3 keys come by secretKeyRef; its RBAC is the read-only rules above,
    per served namespace in namespaced mode; it has its own ServiceAccount."""
    release = release_name()
    values = CHART / "ci" / "dashboard-values.yaml"
    served = [extra_namespaces("a"), extra_namespaces("b")]
    for sets in ([], ["watchNamespaces={" + ",".join(served) + "}"]):
        docs = render(crds, release, namespace, values, *sets)
        dash = component(docs, "dashboard")
        container = container_of(docs, "dashboard")
        assert container["image"] == container_of(docs)["image"]  # the operator image
        assert container["command"] == ["kubetune"]
        args = container["args"]
        assert args[:2] == ["dashboard", "--cluster"] and "--host=0.0.0.0" in args
        if sets:
            assert [a for a in args if a.startswith("--namespace")] == [
                f"--namespace={ns}" for ns in served
            ]
        else:
            assert "--all-namespaces" in args
        env = {e["name"]: e for e in container["env"]}
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-credentials"
        assert env["KUBETUNE_S3_ENDPOINT_URL"]["value"] == "http://minio.minio.svc:9000"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        (service,) = by_kind(dash, "Service")
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["ports"][0]["targetPort"] == "http"
        (deployment,) = by_kind(dash, "Deployment")
        pod = deployment["spec"]["template"]
        assert service["spec"]["selector"] == pod["metadata"]["labels"]
        (sa,) = by_kind(dash, "ServiceAccount")
        name = f"{release}-kubetune-dashboard"
        assert pod["spec"]["serviceAccountName"] == sa["metadata"]["name"] == name
        roles = by_kind(dash, "Role" if sets else "ClusterRole")
        assert [r["rules"] for r in roles] == [DASHBOARD_RULES] * (len(served) if sets else 1)
        if sets:
            assert {r["metadata"]["namespace"] for r in roles} == set(served)
            assert not by_kind(dash, "ClusterRole")
        result = kubectl_json(crds, "apply", "--dry-run=server", docs=dash)
        assert "(server dry run)" in result.stdout


def test_dashboard_release_may_read_and_nothing_more(crds, namespace, extra_namespaces, releases):
    served, other = extra_namespaces("served"), extra_namespaces("other")
    release = release_name()
    install(
        crds,
        release,
        namespace,
        "--set",
        f"watchNamespaces={{{served}}}",
        "--set",
        "dashboard.enabled=true",
    )
    releases.append((release, namespace))
    user = f"system:serviceaccount:{namespace}:{release}-kubetune-dashboard"
    missing = [p for p in DASHBOARD_NEEDS if not can_i(crds, user, *p, served)]
    assert not missing, f"the dashboard lacks {missing} in the served namespace"
    extra = [p for p in DASHBOARD_MUST_NOT if can_i(crds, user, *p, served)]
    assert not extra, f"the dashboard may {extra}"
    leaked = [p for p in DASHBOARD_NEEDS if can_i(crds, user, *p, other)]
    assert not leaked, f"the dashboard may {leaked} in a namespace the operator does not serve"
    assert not can_i(crds, user, "get", "secrets", namespace)
    assert not can_i(crds, user, "list", "tuneexperiments.kubetune.io", None)
