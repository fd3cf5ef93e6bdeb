"""WriteQueue: ordered per key, parallel across keys, dependencies, failures, urgent lane."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubetune_operator.writes import WriteQueue


@pytest.fixture
def queue() -> Any:
    q = WriteQueue(threads=4, urgent_threads=2)
    yield q
    q.close()


def test_writes_of_one_key_run_in_order(queue: WriteQueue) -> None:
    done: list[int] = []
    for i in range(50):
        queue.submit("a", lambda i=i: (time.sleep(0.001 * (i % 3)), done.append(i)))
    assert queue.drain(10)
    assert done == list(range(50))


def test_keys_run_in_parallel(queue: WriteQueue) -> None:
    barrier = threading.Barrier(3, timeout=5)  # fails unless three keys run at the same time
    for key in "abc":
        queue.submit(key, barrier.wait)
    assert queue.drain(10)
    assert queue.take_errors() == []


def test_a_failed_write_is_reported_once_and_its_key_stops(queue: WriteQueue) -> None:
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("409? no: 500")

    queue.submit("t", boom)
    later = queue.submit("t", lambda: ran.append("pod"))
    queue.submit("other", lambda: ran.append("other"))
    assert queue.drain(10)
    errors = queue.take_errors()
    assert [str(e) for e in errors] == ["409? no: 500"]
    assert ran == ["other"]  # the pod of a trial whose create failed is never created
    assert isinstance(later.exception(), RuntimeError)
    assert queue.take_errors() == []


def test_after_waits_for_another_key_and_fails_with_it(queue: WriteQueue) -> None:
    order: list[str] = []
    gate = threading.Event()
    snap = queue.submit("~snapshot", lambda: (gate.wait(5), order.append("snapshot")))
    queue.submit("trial", lambda: order.append("create"), after=[snap])
    time.sleep(0.05)
    assert order == []  # the create waits for the snapshot
    gate.set()
    assert queue.drain(10)
    assert order == ["snapshot", "create"]

    def fail() -> None:
        raise OSError("S3 down")

    snap = queue.submit("~snapshot", fail)
    created: list[str] = []
    queue.submit("trial2", lambda: created.append("create"), after=[snap])
    assert queue.drain(10)
    assert created == []
    assert [type(e) for e in queue.take_errors()] == [OSError]


def test_urgent_writes_pass_a_backlog(queue: WriteQueue) -> None:
    release = threading.Event()
    for i in range(8):  # every normal thread is busy, more are queued
        queue.submit(f"slow{i}", lambda: release.wait(5))
    t0 = time.monotonic()
    verdict = queue.submit("verdict", lambda: time.monotonic(), urgent=True)
    took = verdict.result(5) - t0
    release.set()
    assert queue.drain(10)
    assert took < 1.0


def test_inline_queue_runs_at_once() -> None:
    q = WriteQueue(threads=0)
    ran: list[int] = []
    q.submit("a", lambda: ran.append(1))
    assert ran == [1]
    assert q.pending == 0


def test_a_write_after_tails_waits_for_every_key_before_it(queue: WriteQueue) -> None:
    """The experiment's final phase is written after each trial's final status
    (loop.publish_status): whoever sees Succeeded reads every trial as it ended."""
    order: list[str] = []
    gates = {key: threading.Event() for key in ("trial-1", "trial-2")}
    for key, gate in gates.items():
        queue.submit(key, lambda key=key, gate=gate: (gate.wait(5), order.append(key)))
    queue.submit("~status", lambda: order.append("Succeeded"), after=queue.tails())
    gates["trial-2"].set()
    time.sleep(0.05)
    assert order == ["trial-2"]
    gates["trial-1"].set()
    assert queue.drain(10)
    assert order == ["trial-2", "trial-1", "Succeeded"]
    assert queue.tails() == []
