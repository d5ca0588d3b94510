"""Regression tests for bugs a review found in the scheduling options, one test per bug."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import pytest

import asyncpool
from asyncpool import Dispatcher

from ._jobs import Gate, all_idle, check_stats


async def test_priority_job_released_by_its_key_is_not_stranded() -> None:
    """The first priority job ever seen, parked behind its key, runs once the key is free."""
    gate = Gate()
    async with Dispatcher(workers=1) as d:
        await d.submit(gate, key="k")
        await gate.started.wait()

        async def ran() -> str:
            return "ran"

        handle = await d.submit(ran, key="k", priority=5)
        gate.release()
        assert await asyncio.wait_for(asyncio.shield(handle), 10) == "ran"


@pytest.mark.parametrize("priority", [0, 5])
async def test_key_follower_keeps_fifo_among_equal_priorities(priority: int) -> None:
    """A job released by its key does not jump ahead of an older job of the same priority."""
    order: list[str] = []

    async def record(name: str) -> None:
        order.append(name)

    blocker = Gate()
    async with Dispatcher(workers=1) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        await d.submit(record, "K1", key="k", priority=priority)
        await d.submit(record, "X", priority=priority)
        await d.submit(record, "K2", key="k", priority=priority)
        blocker.release()
    assert order == ["K1", "X", "K2"]


async def test_close_again_after_abandoning_a_job_returns_at_once(
    fast_clock: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A second close(), or the async with exit, does not wait for a job close() gave up on."""
    caplog.set_level(logging.CRITICAL, logger="asyncpool")
    loop = asyncio.get_running_loop()
    release = asyncio.Event()

    async def immortal() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    async with Dispatcher(workers=1) as d:
        await d.submit(immortal)
        first = await d.close(timeout=1)
        before = loop.time()
        second = await d.close()
        assert loop.time() == before
        assert second is first
    assert loop.time() == before  # the exit did not wait either
    release.set()
    assert d._runner is not None
    await asyncio.wait((d._runner,))


async def test_rate_timer_after_the_workers_were_cancelled_loses_no_job() -> None:
    """A job waiting for a rate token ends final when the dispatcher's tasks are torn down."""
    entered, release = threading.Event(), threading.Event()

    def blocking() -> None:
        entered.set()
        release.wait(30)

    d = Dispatcher(workers=2, rate_limit=5, rate_burst=1)  # one start per 0.2 s
    await d.start()
    await d.submit(blocking)  # its thread keeps the task group alive once cancelled
    waiting = await d.submit(asyncio.sleep, 0)  # waits up to 0.2 s for a token
    await asyncio.to_thread(entered.wait, 30)
    assert d._rate_timer is not None
    assert d._runner is not None
    d._runner.cancel()  # what asyncio.run's teardown, or a fatal job, does
    # The token timer is due within 0.2 s, before this sleep ends (timers run
    # in deadline order): it fires while the cancelled workers are gone.
    await asyncio.sleep(0.3)
    release.set()
    await asyncio.wait((d._runner,))
    assert waiting.cancelled()
    assert d.closed
    check_stats(d)


async def test_abandoned_job_the_user_had_cancelled_is_in_interrupted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every abandoned job is also among `interrupted`, as the report documents."""
    caplog.set_level(logging.CRITICAL, logger="asyncpool")
    stop = asyncio.Event()
    started = asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while not stop.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await stop.wait()

    d = Dispatcher(workers=1)
    await d.start()
    handle = await d.submit(stubborn)
    await started.wait()
    handle.cancel()  # ignored by the job
    report = await d.close(timeout=0.01)
    assert report.abandoned == (handle,)
    assert handle in report.interrupted
    assert len(report) == 1
    stop.set()
    assert d._runner is not None
    await asyncio.wait((d._runner,))


async def test_task_a_job_left_behind_waits_for_room_again() -> None:
    """A task started by a finished job gets no exemption from the queue bound."""
    gate = asyncio.Event()
    producers: list[asyncio.Task[None]] = []
    submitted = 0

    async def producer(d: Dispatcher) -> None:
        nonlocal submitted
        for _ in range(10):
            await d.submit(gate.wait)
            submitted += 1

    async def starter(d: Dispatcher) -> str:
        producers.append(asyncio.create_task(producer(d)))
        return "done"

    async with Dispatcher(workers=1, queue_size=2) as d:
        assert await (await d.submit(starter, d)) == "done"
        for _ in range(20):
            await asyncio.sleep(0)
        # One job runs (gate.wait), two wait in the queue: the producer waits for room.
        assert submitted == 3
        assert check_stats(d).queued == 2
        gate.set()
        await producers[0]
    assert submitted == 10


async def test_timed_out_counts_only_the_dispatchers_own_timeouts() -> None:
    """A JobTimeout a job raises itself (say, from another dispatcher's handle) is not counted."""

    async def reraise() -> None:
        raise asyncpool.JobTimeout("from elsewhere")

    async with Dispatcher(workers=1, on_error=lambda h, e: None) as d:
        await d.submit(reraise, timeout=10)
    assert (d.stats().timed_out, d.stats().failed) == (0, 1)


async def test_jobs_taken_back_by_a_shrink_keep_their_order() -> None:
    """resize() takes back jobs handed to leaving workers: they run oldest first, as queued."""
    order: list[str] = []

    async def record(name: str) -> None:
        order.append(name)

    gate = Gate()
    async with Dispatcher(workers=3) as d:
        blocker = d.submit_nowait(gate)
        await gate.started.wait()  # one worker busy, two idle
        first = d.submit_nowait(record, "first")
        second = d.submit_nowait(record, "second")
        # submit_nowait handed both jobs to the idle workers' inboxes, and
        # the workers have not run yet.
        assert d._idle_count == 0
        assert d.stats().queued == 2
        d.resize(1)  # both workers leave; their jobs go back to the queue
        gate.release()
        await asyncio.wait_for(asyncio.gather(blocker, first, second), 10)
        check_stats(d)
    assert order == ["first", "second"]
    assert first.started_at is not None
    assert second.started_at is not None
    assert first.started_at <= second.started_at


async def test_a_shrink_takes_back_the_newest_jobs_handed_to_idle_workers() -> None:
    """resize() takes back the newest unstarted jobs: none starts before an older one."""
    order: list[str] = []

    async def record(name: str) -> None:
        order.append(name)

    async with Dispatcher(workers=2) as d:
        await all_idle(d)
        first = d.submit_nowait(record, "first")  # to the longest-idle worker
        second = d.submit_nowait(record, "second")  # to the other one
        assert d._idle_count == 0
        d.resize(1)  # one of them leaves: the one holding the newer job
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        check_stats(d)
    assert order == ["first", "second"]
    assert first.started_at is not None
    assert second.started_at is not None
    assert first.started_at <= second.started_at
