"""close(timeout=...) returns even when a job will not stop, and reports the job it gave up on."""

from __future__ import annotations

import asyncio
import threading

import pytest

import asyncpool
from asyncpool import Dispatcher, JobState

from ._jobs import check_stats


async def _wait_for_teardown(d: Dispatcher) -> None:
    """Wait for the dispatcher's runner, which ends when the abandoned job does."""
    runner = d._runner
    assert runner is not None
    await asyncio.wait((runner,))


async def test_close_timeout_stops_a_job_that_swallows_its_first_cancellation(
    fast_clock: None,
) -> None:
    """A job that ignores one cancellation is cancelled again half-way through the grace."""
    loop = asyncio.get_running_loop()
    swallowed = 0

    async def stubborn_once() -> None:
        nonlocal swallowed
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            swallowed += 1
        await asyncio.sleep(100)  # the second cancellation lands here

    d = Dispatcher(workers=1)
    await d.start()
    handle = await d.submit(stubborn_once)
    started = loop.time()
    report = await d.close(timeout=2)
    assert loop.time() - started == pytest.approx(3)  # 2 s, then half of a 2 s grace
    assert swallowed == 1
    assert handle.cancelled()
    assert report.interrupted == (handle,)
    assert report.abandoned == ()
    assert d._runner is not None
    assert d._runner.done()


async def test_close_timeout_abandons_a_job_that_ignores_every_cancellation(
    fast_clock: None, caplog: pytest.LogCaptureFixture
) -> None:
    """close(timeout=t) returns after t plus a grace of t, and reports the stuck job."""
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    cancellations = 0

    async def immortal() -> str:
        nonlocal cancellations
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancellations += 1
        return "too late"

    d = Dispatcher(workers=2)
    await d.start()
    stuck = await d.submit(immortal)
    queued_behind = [await d.submit(asyncio.sleep, 100) for _ in range(3)]
    started = loop.time()
    report = await d.close(timeout=1)
    assert loop.time() - started == pytest.approx(2)
    assert d.closed
    assert stuck.state is JobState.CANCELLED
    assert stuck in report.interrupted
    assert report.abandoned == (stuck,)
    assert "abandoned=1" in repr(report)
    assert cancellations == 2
    assert all(h.cancelled() for h in queued_behind)
    stats = check_stats(d)
    assert (stats.busy, stats.queued, stats.cancelled) == (0, 0, 4)
    assert any("gave up on 1 job" in r.getMessage() for r in caplog.records)
    with pytest.raises(asyncpool.DispatcherClosed):
        await d.submit(asyncio.sleep, 0)
    # When the job stops at last, its worker and the dispatcher's tasks end.
    release.set()
    await _wait_for_teardown(d)
    assert any("abandoned job" in r.getMessage() for r in caplog.records)
    check_stats(d)


async def test_close_timeout_abandons_a_thread_that_does_not_return() -> None:
    """A blocking job whose thread never returns does not keep close(timeout=...) waiting."""
    release = threading.Event()
    entered = threading.Event()

    def blocked() -> None:
        entered.set()
        release.wait(30)

    d = Dispatcher(workers=1)
    await d.start()
    handle = await d.submit(blocked)
    await asyncio.to_thread(entered.wait, 30)
    report = await d.close(timeout=0.01)  # returns after the 0.1 s minimum grace
    assert report.abandoned == (handle,)
    assert handle.cancelled()
    release.set()
    await _wait_for_teardown(d)


async def test_close_without_timeout_still_waits_for_a_stubborn_job() -> None:
    """Without a timeout nothing is abandoned: close() waits, as documented."""
    release = asyncio.Event()
    cancelled = asyncio.Event()

    async def stubborn() -> str:
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.set()
            await release.wait()
        return "finished anyway"

    d = Dispatcher(workers=1)
    await d.start()
    handle = await d.submit(stubborn)
    await asyncio.sleep(0)
    closing = asyncio.create_task(d.close(cancel=True))
    await cancelled.wait()
    assert not closing.done()
    release.set()
    report = await closing
    assert report.abandoned == ()
    assert handle.result() == "finished anyway"
