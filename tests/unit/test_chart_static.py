"""The Helm chart without a cluster or helm: CRDs in sync, values documented and typed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kubetune"


def _values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def test_chart_crds_are_exact_copies_of_the_top_level_crds():
    top = {p.name: p.read_bytes() for p in sorted((REPO / "crds").glob("*.yaml"))}
    chart = {p.name: p.read_bytes() for p in sorted((CHART / "crds").iterdir())}
    assert top, "no CRDs in crds/"
    assert sorted(chart) == sorted(top), (
        "helm/kubetune/crds/ must hold exactly crds/: cp crds/*.yaml helm/kubetune/crds/"
    )
    for name, data in top.items():
        assert chart[name] == data, f"helm/kubetune/crds/{name} differs from crds/{name}: copy it"


def test_default_values_match_the_schema():
    jsonschema.validate(_values(), _schema())


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return override


@pytest.mark.parametrize("path", sorted((CHART / "ci").glob("*.yaml")), ids=lambda p: p.name)
def test_ci_values_files_match_the_schema(path: Path):
    jsonschema.validate(_merge(_values(), yaml.safe_load(path.read_text()) or {}), _schema())


def test_schema_refuses_bad_values():
    schema = _schema()
    for bad in (
        {"replicaCount": 0},
        {"watchNamespaces": ["Not_A_Namespace"]},
        {"unknownKey": 1},
        {"image": {"pullPolicy": "Sometimes"}},
        {"defaultStorage": {"addressingStyle": "diagonal"}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(_merge(_values(), bad), schema)


def _schema_keys(schema: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, sub in schema.get("properties", {}).items():
        keys.add(prefix + name)
        if sub.get("additionalProperties") is False:
            keys |= _schema_keys(sub, f"{prefix}{name}.")
    return keys


def _value_keys(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, value in values.items():
        keys.add(prefix + name)
        sub = schema.get("properties", {}).get(name, {})
        if isinstance(value, dict) and sub.get("additionalProperties") is False:
            keys |= _value_keys(value, sub, f"{prefix}{name}.")
    return keys


def test_schema_describes_exactly_the_values():
    schema = _schema()
    schema_keys = _schema_keys(schema) - {"global"}
    assert _value_keys(_values(), schema) == schema_keys
    assert schema.get("additionalProperties") is False


def test_every_value_is_documented():
    """Each leaf value in values.yaml has a comment right above it (its own or, for a value
    that is one field of a documented group such as resources, an ancestor's)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = i > 0 and lines[i - 1].strip().startswith("#")
        is_leaf = rest != ""
        if is_leaf and not documented and not any(doc for _, doc in stack):
            undocumented.append(f"line {i + 1}: {key}")
        if not is_leaf:
            stack.append((indent, documented))
    assert not undocumented, "values without a comment: " + ", ".join(undocumented)


def test_deployment_template_locks_the_container_down():
    values = _values()
    assert values["securityContext"] == {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert values["podSecurityContext"]["runAsNonRoot"] is True
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert "mountPath: /tmp" in deployment and "emptyDir" in deployment
    assert "path: /healthz" in deployment


# -- GitOps: the Argo CD health check, run by a real Lua interpreter ---------------------------

HEALTH_LUA = REPO / "docs" / "argocd-health.lua"


def _argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    lupa = pytest.importorskip("lupa", reason="lupa (dev group) runs the Lua health check")
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    # Argo CD's sandbox has no os, io or require: the script must not need them.
    lua.execute("os = nil; io = nil; require = nil; debug = nil; dofile = nil; loadfile = nil")
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(HEALTH_LUA.read_text())
    assert hs["status"] in ("Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown")
    return hs["status"], hs["message"] or ""


def _experiment(phase: str | None, generation: int = 1, observed: int = 1, **extra: Any) -> dict:
    from kubetune_operator.objects import kstatus

    obj: dict[str, Any] = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuneExperiment",
        "metadata": {"name": "quad", "namespace": "team-a", "generation": generation},
        "spec": {"suspend": extra.pop("suspend", False)},
    }
    if phase is not None:
        reasons = {"Succeeded": "Succeeded", "Failed": "InvalidSpec"}
        message = extra.pop("message", f"experiment is {phase}")
        status = {
            "phase": phase,
            "observedGeneration": observed,
            "message": message,
            "conditions": kstatus(phase, reasons.get(phase, phase), message, observed),
            **extra,
        }
        obj["status"] = status
    return obj


def test_argocd_health_of_a_new_experiment_is_progressing():
    status, message = _argocd_health(_experiment(None))
    assert status == "Progressing" and "operator" in message


@pytest.mark.parametrize("phase", ["Pending", "Running"])
def test_argocd_health_while_trials_run_is_progressing(phase: str):
    trials = {"total": 6, "running": 3, "terminated": 2, "pending": 1}
    status, message = _argocd_health(_experiment(phase, trials=trials))
    assert status == "Progressing"
    assert "3 running" in message and "of 6" in message


def test_argocd_health_of_a_succeeded_experiment_is_healthy_and_names_the_best_trial():
    best = {"name": "quad-00004", "metric": 0.25, "config": {"x": 3.5}}
    status, message = _argocd_health(_experiment("Succeeded", bestTrial=best))
    assert status == "Healthy"
    assert "quad-00004" in message and "0.25" in message


def test_argocd_health_of_a_failed_experiment_is_degraded_with_the_reason():
    text = "spec.storage.secretName: Secret 'missing' does not exist in namespace 'team-a'"
    status, message = _argocd_health(_experiment("Failed", message=text))
    assert status == "Degraded" and message == text


def test_argocd_health_is_degraded_whenever_stalled_is_true():
    obj = _experiment("Running")
    for condition in obj["status"]["conditions"]:
        if condition["type"] == "Stalled":
            condition.update(status="True", message="trials out of retries")
    assert _argocd_health(obj)[0] == "Degraded"


def test_argocd_health_of_a_suspended_experiment_is_suspended():
    assert _argocd_health(_experiment("Running", suspend=True))[0] == "Suspended"
    assert _argocd_health(_experiment("Suspended"))[0] == "Suspended"
    assert _argocd_health(_experiment(None, suspend=True))[0] == "Suspended"


def test_argocd_health_waits_for_the_operator_to_observe_a_new_spec():
    status, message = _argocd_health(_experiment("Succeeded", generation=3, observed=2))
    assert status == "Progressing" and "generation 3" in message


def test_gitops_doc_holds_exactly_the_health_check():
    doc = (REPO / "docs" / "gitops.md").read_text()
    key = "resource.customizations.health.kubetune.io_TuneExperiment: |\n"
    assert key in doc
    block = doc.split(key, 1)[1].split("```", 1)[0]
    unindented = "".join(line[4:] if line.strip() else line for line in block.splitlines(True))
    assert unindented == HEALTH_LUA.read_text(), "docs/gitops.md: paste docs/argocd-health.lua"
