"""asyncpool._heartbeat: a worker's status always fits what a broker takes."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from asyncpool import Dispatcher, JobLog
from asyncpool._heartbeat import RECENT, STATUS_BYTES, Heartbeat
from asyncpool._status import WorkerStatus
from tests._jobs import guarded

pytestmark = pytest.mark.timeout(20)


async def test_a_status_of_large_failures_is_cut_to_fit() -> None:
    """Many failures with long non-ASCII messages still make a status under STATUS_BYTES."""
    message = "échec de la facturation " * 400  # about 10 KB, non-ASCII

    async def fails(n: int, padding: str) -> None:
        raise ValueError(f"{n}: {message}")

    log = JobLog()
    async with Dispatcher(workers=4, instruments=[log], on_error=lambda h, e: None) as d:
        handles = [await d.submit(fails, n, "é" * 5000) for n in range(RECENT * 2)]
        await guarded(asyncio.wait(handles))
        for handle in handles:
            handle.exception()
        served: dict[str, int] = {"taken": 0}
        beat = Heartbeat(cast(Any, None), "host:1", d, log, lambda: served, lambda: ())
        assert len(beat.status().encode()) > STATUS_BYTES  # what would be sent uncut
        data = beat.encoded()
    assert len(data) <= STATUS_BYTES
    status = WorkerStatus.decode(data)
    assert status.recent
    assert all(r.state == "failed" for r in status.recent)
    assert "left out" in (status.recent[0].error or {}).get("traceback", "")


class LosesACancellation:
    """A status store whose put swallows the cancellation that arrives as it ends.

    As a client library's `wait_for` can on Python 3.11: the task goes on as
    if it had never been cancelled.
    """

    def __init__(self) -> None:
        self.putting = asyncio.Event()
        self.puts = 0

    async def put_status(self, worker: str, data: bytes, ttl: float) -> None:
        self.puts += 1
        self.putting.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return  # lost


async def test_the_heartbeat_ends_when_told_even_if_its_cancellation_was_lost() -> None:
    """run(until) returns once `until` is set, though the cancel was swallowed mid-put."""
    store = LosesACancellation()
    until = asyncio.Event()
    async with Dispatcher(workers=1) as d:
        beat = Heartbeat(cast(Any, store), "host:1", d, JobLog(), dict, lambda: ())
        task = asyncio.create_task(beat.run(until))
        await guarded(store.putting.wait())
        task.cancel()
        until.set()
        await guarded(task)  # the old loop went on beating for ever
    assert not task.cancelled()  # it was lost: the loop ended by `until`
    assert store.puts == 1
