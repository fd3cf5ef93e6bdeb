"""Fixtures for tests against the real control plane and the real S3 server.

Session-scoped: ``control_plane`` (a tests.testenv.controlplane.ControlPlane), ``kube_api`` (a
kubernetes.client.ApiClient logged in as the admin), ``s3_server`` (a tests.testenv.s3.S3Server).
Function-scoped: ``namespace`` (a fresh namespace's name, deleted afterwards) and ``s3_bucket``
(a fresh bucket's name, emptied and deleted afterwards).
Also here, from tests/testenv: the test kubelet's (``kubelet``, ``kubelet_factory``) and
Kueue's (``kueue``, ``kueue_namespace``, ``kueue_queue``).

Tests that use them are marked ``cluster`` / ``s3`` automatically. When the binaries are not
built the cluster tests are skipped with the reason, except under CI (``CI`` set), where they
fail: `make test` builds the binaries first, so in CI a missing binary is a bug.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from tests.testenv.controlplane import BinariesMissing, ControlPlane
from tests.testenv.kubelet_fixtures import kubelet, kubelet_factory  # noqa: F401
from tests.testenv.kueue import kueue, kueue_namespace, kueue_queue  # noqa: F401
from tests.testenv.s3 import S3Server

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run every test)", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & {"control_plane", "kube_api", "namespace"}:
            item.add_marker(pytest.mark.cluster)
        if fixtures & {"s3_server", "s3_bucket"}:
            item.add_marker(pytest.mark.s3)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    try:
        cp = ControlPlane.start()
    except BinariesMissing as err:
        _unavailable(str(err))
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane) -> Iterator[ApiClient]:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(control_plane.kubeconfig), client_configuration=configuration
    )
    api = client.ApiClient(configuration)
    try:
        yield api
    finally:
        api.close()


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(
    control_plane: ControlPlane, kube_api: ApiClient, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace, ready for pods: its `default` ServiceAccount and `kube-root-ca.crt`
    ConfigMap exist (the controller-manager makes both)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    if not control_plane.alive():
        pytest.fail("a control-plane process died:\n" + control_plane.log_tails(), pytrace=False)

    core: Any = client.CoreV1Api(kube_api)
    name = _namespace_name(request.node.name)
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"kubetune.test/namespace": "true"})
        )
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            core.read_namespaced_config_map("kube-root-ca.crt", name)
            break
        except ApiException as err:
            if err.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except ApiException as err:
            if err.status != 404:
                raise


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    try:
        server = S3Server.start()
    except FileNotFoundError as err:
        _unavailable(str(err))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh, empty bucket on the session's S3 server; emptied and deleted afterwards."""
    name = f"kubetune-test-{secrets.token_hex(6)}"
    s3: Any = s3_server.client()
    s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=name):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=name, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=name)
