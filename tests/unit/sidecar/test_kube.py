"""The sidecar's API door without a cluster: 401 re-reads the token, verdict matching."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubetune.sidecar import kube


def test_a_401_reconnects_with_a_fresh_token_and_retries_once(monkeypatch) -> None:
    api = object.__new__(kube.KubeTrialApi)
    connects: list[int] = []
    monkeypatch.setattr(api, "_connect", lambda: connects.append(1))
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ApiException(status=401, reason="Unauthorized")
        return "ok"

    assert api._call(flaky) == "ok"
    assert len(calls) == 2 and len(connects) == 1

    def always_401() -> Any:
        raise ApiException(status=401, reason="Unauthorized")

    with pytest.raises(ApiException):
        api._call(always_401)  # once only: a second 401 is a real refusal

    def forbidden() -> Any:
        raise ApiException(status=403, reason="Forbidden")

    connects.clear()
    with pytest.raises(ApiException):
        api._call(forbidden)
    assert connects == []


def test_verdict_matches_the_pending_decision_only() -> None:
    obj = {"spec": {"verdict": {"seq": 2, "action": "stop"}}}
    assert kube._verdict(obj, 2) == {"seq": 2, "action": "stop"}
    assert kube._verdict(obj, 3) is None
    assert kube._verdict({"spec": {}}, 1) is None
