"""A mutation fuzz of TuneExperiments through ``kubectl apply`` with the operator running.

Each case mutates a valid experiment (a value replaced by another of any type, a key dropped,
an unknown or misspelled key added, a fractional GPU, a huge number) and applies it. The API
server refuses it cleanly, or the operator takes it: then it must soon be progressing (a
phase, not Stalled) or Stalled with a message. The operator must stay up throughout.

``KUBETUNE_FUZZ_CASES`` (default 24) sets the number of cases; the counts are printed.
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.cluster import operator_helpers
from tests.cluster.operator_helpers import experiment, get_experiment
from tests.testenv.helpers import s3_secret

crds = operator_helpers.crds
operator_process = operator_helpers.operator_process

CASES = int(os.environ.get("KUBETUNE_FUZZ_CASES", "24"))
WAIT_S = 30.0

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(
        st.sampled_from(["x", "lower", "upper", "CPU", "GPU", "q"]), st.integers(-2, 9), max_size=3
    ),
)
TYPOS = ["tunConfig", "num_samples", "unifrom", "choise", "grid_search", "maxConcurent", "GPUs"]


def paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += paths(value, (*prefix, i))
    return out


def mutate(doc: dict, data: Any) -> tuple[dict, str]:
    doc = copy.deepcopy(doc)
    # storage is left alone: without its endpoint an experiment would reach for AWS, and
    # tests send traffic to loopback only (the Pending status of a setup retry is tested here
    # with an endpoint on loopback where nothing listens)
    spec_paths = [p for p in paths(doc["spec"]) if p[0] != "storage"]
    kind = data.draw(
        st.sampled_from(["replace", "drop", "add", "gpu", "both-samplers", "dead-endpoint"])
    )
    if kind == "dead-endpoint":
        doc["spec"]["storage"]["endpoint"] = "http://127.0.0.1:9"  # discard port: refused
        return doc, "storage endpoint where nothing listens"
    if kind == "gpu":
        gpu = data.draw(st.sampled_from([0.5, 0.25, 1.5, 2, 1e20, -1]))
        doc["spec"]["resources"] = {"bundles": [{"CPU": 1, "GPU": gpu}]}
        return doc, f"gpu={gpu}"
    if kind == "both-samplers":
        doc["spec"]["paramSpace"]["x"]["choice"] = [1, 2]
        return doc, "two sampler keys"
    path = data.draw(st.sampled_from(spec_paths))
    parent = doc["spec"]
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if kind == "replace":
        value = data.draw(VALUES)
        parent[last] = value
        return doc, f"spec.{'.'.join(map(str, path))} = {value!r}"[:120]
    if kind == "drop" and isinstance(parent, dict):
        del parent[last]
        return doc, f"drop spec.{'.'.join(map(str, path))}"
    target = parent[last] if isinstance(parent[last], dict) else parent
    if isinstance(target, dict):
        key = data.draw(st.sampled_from(TYPOS))
        target[key] = data.draw(VALUES)
        return doc, f"add {key} under spec.{'.'.join(map(str, path))}"
    return doc, "unchanged"


def outcome(kube_api: Any, namespace: str, name: str) -> str:
    """'progressing', 'stalled' (with a message) or 'nothing' (no usable status in time)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        status = get_experiment(kube_api, namespace, name).get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        stalled = conditions.get("Stalled", {})
        if stalled.get("status") == "True":
            return "stalled" if stalled.get("message") and status.get("message") else "nothing"
        if status.get("phase") in ("Pending", "Running", "Suspended", "Succeeded"):
            return "progressing"
        time.sleep(0.3)
    return "nothing"


def test_mutated_experiments_are_refused_progressing_or_stalled(
    kube_api, namespace, s3_server, s3_bucket, operator_process, crds
):
    s3_secret(kube_api, namespace, s3_server)
    proc = operator_process()
    base = experiment("base", s3_bucket, s3_server.endpoint_url, numSamples=1)
    base["spec"]["resources"] = {"bundles": [{"CPU": 1}]}
    base["spec"]["runConfig"] = {
        "checkpointConfig": {"numToKeep": 2},
        "stop": {"training_iteration": 3},
    }
    counts = {"cases": 0, "refused": 0, "progressing": 0, "stalled": 0, "no_status": 0}
    failures: list[str] = []
    began = time.monotonic()

    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def case(data: Any) -> None:
        doc, what = mutate(base, data)
        counts["cases"] += 1
        name = f"fz-{counts['cases']}"
        doc["metadata"] = {"name": name}
        applied = crds.kubectl(
            "apply", "-n", namespace, "-f", "-", input=json.dumps(doc), check=False
        )
        if applied.returncode != 0:
            assert applied.stderr.strip(), what
            assert "Internal error" not in applied.stderr, applied.stderr
            counts["refused"] += 1
            return
        result = outcome(kube_api, namespace, name)
        counts[{"progressing": "progressing", "stalled": "stalled"}.get(result, "no_status")] += 1
        if result == "nothing":
            failures.append(
                f"{name}: {what}: {get_experiment(kube_api, namespace, name).get('status')}"
            )
        crds.kubectl("delete", "tuneexperiment", name, "-n", namespace, "--wait=false", check=False)
        assert proc.poll() is None, f"the operator exited after {name}: {what}"

    case()
    log = operator_process.log.read_text()
    counts["operator_exits"] = 0 if proc.poll() is None else 1
    counts["reconcile_tracebacks"] = log.count("Traceback")
    print(f"\nmanifest fuzz: {counts} in {time.monotonic() - began:.0f} s")
    assert proc.poll() is None
    assert failures == [], "\n".join(failures) + "\n" + log[-6000:]


def test_a_typo_the_api_server_cannot_see_stalls_once_naming_the_field_and_logs_once(
    kube_api, namespace, s3_server, s3_bucket, operator_process, crds
):
    s3_secret(kube_api, namespace, s3_server)
    proc = operator_process()
    doc = experiment("typo", s3_bucket, s3_server.endpoint_url, numSamples=1)
    doc["spec"]["paramSpace"] = {"x": {"nested": {"unifrom": {"lower": 0, "upper": 1}}}}
    crds.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))  # accepted
    assert outcome(kube_api, namespace, "typo") == "stalled"
    status = get_experiment(kube_api, namespace, "typo")["status"]
    assert (
        "spec.paramSpace.x.nested.unifrom: not a sampler (did you mean uniform?)"
        in (status["message"])
    )
    time.sleep(3)  # a stall is reported once, not on every retry
    log = operator_process.log.read_text()
    lines = [line for line in log.splitlines() if "did you mean uniform?" in line]
    assert len(lines) == 1, log[-4000:]  # one handler: each line printed once
    assert proc.poll() is None
