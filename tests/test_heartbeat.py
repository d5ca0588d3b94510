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
