"""Small helpers that cluster tests (and the operator bench) share."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """``predicate()``'s first truthy value; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def s3_secret(kube_api: Any, namespace: str, s3_server: Any, name: str = "s3") -> None:
    """The Secret an experiment's ``spec.storage.secretName`` names, with the S3 server's keys."""
    from kubernetes import client

    client.CoreV1Api(kube_api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            string_data={
                "AWS_ACCESS_KEY_ID": s3_server.access_key,
                "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
            },
        ),
    )


def operator_command(
    namespace: str, metrics_port: int | str = 0, liveness_port: int | str = 0
) -> list[str]:
    """The operator of this checkout as a process: standalone, watching ``namespace``, its
    liveness probe on ``liveness_port`` and its metrics on ``metrics_port`` (0: none)."""
    return [
        sys.executable,
        "-m",
        "kubetune_operator",
        "--namespace",
        namespace,
        "--standalone",
        "--liveness-port",
        str(liveness_port),
        "--metrics-port",
        str(metrics_port),
    ]


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The ``kind`` condition in the object's status (a Workload, a TuneTrial, ...), if any."""
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind),
        None,
    )


def ctrl_c_reaches_it() -> None:
    """``preexec_fn`` for a child the test interrupts with SIGINT: a shell starts background
    jobs (``cmd &``, nohup) with SIGINT ignored, children inherit that, and Python then never
    raises KeyboardInterrupt; a user's terminal delivers Ctrl-C with the default action."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
