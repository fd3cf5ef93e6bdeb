"""Writes of one experiment, off its loop's thread: ordered per object, parallel across them.

The reconcile loop must not wait for the API server: while it waits, verdicts for trials
blocked at a decision point wait too. So the loop hands each write to a :class:`WriteQueue`
under a key (the TuneTrial's name, ``~events``, ``~snapshot``...). Writes with one key run one
after another in the order given; a write starts only when the previous one of its key and
every future in ``after`` have succeeded, and fails without running when one of them failed
(a Pod is never created for a TuneTrial whose create failed, nor a TuneTrial before the
snapshot that knows it is stored); after a failure, every later write of that key fails too.
Urgent writes (verdicts) have threads of their own, so a burst of creates never delays them.
Failures are collected for the loop, which rebuilds its state from what is durable
(snapshot, objects, result logs) rather than guess what happened.

``threads=0`` runs every write at once in the caller's thread (unit tests; deterministic).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class WriteQueue:
    def __init__(self, threads: int = 8, urgent_threads: int = 4, name: str = "kt") -> None:
        self.inline = threads == 0
        self._normal = ThreadPoolExecutor(threads, f"{name}-w") if threads else None
        self._urgent = (
            ThreadPoolExecutor(urgent_threads, f"{name}-u") if threads and urgent_threads else None
        )
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._tails: dict[str, Future[Any]] = {}
        self._pending = 0
        self._errors: list[BaseException] = []

    def submit(
        self,
        key: str,
        fn: Callable[[], Any],
        urgent: bool = False,
        after: Iterable[Future[Any]] = (),
    ) -> Future[Any]:
        fut: Future[Any] = Future()
        with self._lock:
            deps = [d for d in (self._tails.get(key), *after) if d is not None]
            self._tails[key] = fut
            self._pending += 1
        pool = self._urgent if urgent and self._urgent is not None else self._normal

        def run() -> None:
            try:
                result = fn()
            except BaseException as exc:
                self._finish(key, fut, exc, record=True)
            else:
                fut.set_result(result)
                self._finish(key, fut, None, record=False)

        def start() -> None:
            failed = next((d.exception() for d in deps if d.exception() is not None), None)
            if failed is not None:
                self._finish(key, fut, failed, record=False)  # recorded where it happened
            elif pool is None:
                run()
            else:
                pool.submit(run)

        if not deps:
            start()
            return fut
        remaining = [len(deps)]
        count_lock = threading.Lock()

        def dep_done(_: Future[Any]) -> None:
            with count_lock:
                remaining[0] -= 1
                ready = remaining[0] == 0
            if ready:
                start()

        for dep in deps:
            dep.add_done_callback(dep_done)
        return fut

    def _finish(self, key: str, fut: Future[Any], exc: BaseException | None, record: bool) -> None:
        if exc is not None:
            fut.set_exception(exc)
        with self._lock:
            self._pending -= 1
            if record and exc is not None:
                self._errors.append(exc)
            if exc is None and self._tails.get(key) is fut:
                del self._tails[key]  # a failed tail stays: later writes of its key fail too
            if self._pending == 0:
                self._idle.notify_all()

    def tails(self) -> list[Future[Any]]:
        """The last write of every key still running or waiting: ``after=tails()`` makes a write
        wait for everything submitted before it."""
        with self._lock:
            return list(self._tails.values())

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def take_errors(self) -> list[BaseException]:
        with self._lock:
            errors, self._errors = self._errors, []
        return errors

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every write submitted so far has ended; False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        for pool in (self._normal, self._urgent):
            if pool is not None:
                pool.shutdown(wait=False)
