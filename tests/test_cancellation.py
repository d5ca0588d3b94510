"""Cancellation: of queued and running jobs, of submitters, and by the jobs themselves."""

from __future__ import annotations

import asyncio
import inspect

import pytest

import asyncpool
from asyncpool import JobState
from tests._jobs import Gate, check_stats


async def test_cancel_queued_job_never_runs() -> None:
    """handle.cancel() on a queued job removes it: it never runs, and its place is free."""
    blocker, victim, after = Gate(), Gate(), Gate(value="after")
    async with asyncpool.Dispatcher(workers=1, queue_size=1) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        handle = await d.submit(victim)
        assert handle.cancel() is True
        assert handle.cancelled()
        assert handle.state is JobState.CANCELLED
        assert handle.started_at is None
        assert handle.attempts == 0
        # The cancelled job's place in the queue is free again at once.
        later = d.submit_nowait(after)
        stats = check_stats(d)
        assert (stats.queued, stats.cancelled) == (1, 1)
        blocker.release()
        after.release()
        assert await later == "after"
    assert victim.runs == 0
    assert handle.cancel() is False  # already finished


async def test_cancel_running_job_worker_takes_next() -> None:
    """handle.cancel() on a running job: its coroutine sees CancelledError; the worker goes on."""
    running = Gate()
    async with asyncpool.Dispatcher(workers=1) as d:
        handle = await d.submit(running)
        follower = await d.submit(asyncio.sleep, 0, "next")
        await running.started.wait()
        assert handle.state is JobState.RUNNING
        assert handle.cancel("stop it") is True
        with pytest.raises(asyncio.CancelledError):
            await handle
        assert running.saw_cancel
        assert await follower == "next"
        assert check_stats(d).cancelled == 1


async def test_cancel_message_reaches_the_awaiter() -> None:
    """The message given to cancel() is carried by the CancelledError, as with tasks."""
    running = Gate()
    async with asyncpool.Dispatcher(workers=1) as d:
        handle = await d.submit(running)
        await running.started.wait()
        handle.cancel("reason")
        with pytest.raises(asyncio.CancelledError, match="reason"):
            await handle


async def test_cancel_many_queued_jobs_then_more_work() -> None:
    """Cancelling many queued jobs keeps the counts right and the pool usable."""
    blocker = Gate()
    async with asyncpool.Dispatcher(workers=1, queue_size=0) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        handles = [d.submit_nowait(asyncio.sleep, 0, i) for i in range(500)]
        for handle in handles[::2]:
            handle.cancel()
        stats = check_stats(d)
        assert (stats.queued, stats.cancelled) == (250, 250)
        blocker.release()
    assert [h.result() for h in handles[1::2]] == list(range(1, 500, 2))
    assert check_stats(d).succeeded == 251


async def test_job_swallowing_cancellation_succeeds_like_a_task() -> None:
    """A job that swallows its cancellation and returns succeeds (as a task); the worker lives."""
    started = asyncio.Event()

    async def stubborn() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "kept going"
        return "unreachable"

    async with asyncpool.Dispatcher(workers=1) as d:
        handle = await d.submit(stubborn)
        await started.wait()
        handle.cancel()
        assert await handle == "kept going"
        assert handle.state is JobState.SUCCEEDED
        # The worker is not left with a pending cancellation.
        assert await (await d.submit(asyncio.sleep, 0, "ok")) == "ok"


async def test_job_raising_cancelled_error_itself_is_cancelled() -> None:
    """A job that raises CancelledError on its own ends CANCELLED and the worker survives."""

    async def stray() -> None:
        raise asyncio.CancelledError

    async with asyncpool.Dispatcher(workers=1) as d:
        handle = await d.submit(stray)
        follower = await d.submit(asyncio.sleep, 0, 1)
    assert handle.cancelled()
    assert follower.result() == 1


async def test_submitter_cancelled_while_waiting_leaks_no_place() -> None:
    """A submitter cancelled while waiting for room queues nothing and takes no place."""
    blocker = Gate()
    ran: list[int] = []

    async def record(i: int) -> None:
        ran.append(i)

    async with asyncpool.Dispatcher(workers=1, queue_size=2) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        await d.submit(record, 1)
        await d.submit(record, 2)
        coro = record(99)
        waiting = asyncio.create_task(d.submit(coro))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # closed, never run
        stats = check_stats(d)
        assert (stats.submitted, stats.queued) == (3, 2)
        blocker.release()
        await d.join()
        # Both places are free again: exactly queue_size jobs fit.
        blocker2 = Gate()
        await d.submit(blocker2)
        await blocker2.started.wait()
        d.submit_nowait(record, 3)
        d.submit_nowait(record, 4)
        with pytest.raises(asyncpool.QueueFull):
            d.submit_nowait(record, 5)
        blocker2.release()
    assert ran == [1, 2, 3, 4]


async def test_woken_submitter_cancelled_passes_the_place_on() -> None:
    """A submitter woken for a place and cancelled before using it passes the place on."""
    blocker = Gate()
    async with asyncpool.Dispatcher(workers=1, queue_size=1) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        await d.submit(asyncio.sleep, 0)
        first = asyncio.create_task(d.submit(asyncio.sleep, 0, "first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(d.submit(asyncio.sleep, 0, "second"))
        await asyncio.sleep(0)
        blocker.release()
        # One step: the worker finishes, takes the queued job and so frees
        # one place, waking the first submitter, which has not run yet.
        await asyncio.sleep(0)
        assert len(d._putters) == 1  # only `second` still waits
        assert d._reserved == 1  # the freed place is promised to `first`
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        handle = await second
        assert await handle == "second"
        assert check_stats(d).submitted == 3


async def test_woken_submitter_is_not_overtaken() -> None:
    """A place freed for a waiting submitter is promised to it: submit_nowait cannot take it."""
    blocker = Gate()
    async with asyncpool.Dispatcher(workers=1, queue_size=1) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        await d.submit(asyncio.sleep, 0)
        waiting = asyncio.create_task(d.submit(asyncio.sleep, 0, "waited"))
        await asyncio.sleep(0)
        blocker.release()
        await asyncio.sleep(0)  # the place is freed and promised; the submitter has not run yet
        assert not waiting.done()
        with pytest.raises(asyncpool.QueueFull, match="promised"):
            d.submit_nowait(asyncio.sleep, 0)
        assert await (await waiting) == "waited"


async def test_submit_waiting_for_room_when_dispatcher_closes() -> None:
    """A submitter waiting for room gets DispatcherClosed when the dispatcher closes."""
    blocker = Gate()
    d = asyncpool.Dispatcher(workers=1, queue_size=1)
    await d.start()
    await d.submit(blocker)
    await blocker.started.wait()
    await d.submit(asyncio.sleep, 0)
    waiting = asyncio.create_task(d.submit(asyncio.sleep, 0))
    await asyncio.sleep(0)
    closing = asyncio.create_task(d.close(cancel=True))
    with pytest.raises(asyncpool.DispatcherClosed, match=r"closing|closed"):
        await waiting
    await closing


async def test_handle_awaited_by_cancelled_task_is_cancelled_like_a_task() -> None:
    """A cancelled task awaiting a handle cancels the job (as with tasks); shield prevents it."""
    a, b = Gate(), Gate(value="b")
    async with asyncpool.Dispatcher(workers=2) as d:
        ha = await d.submit(a)
        hb = await d.submit(b)
        await a.started.wait()
        await b.started.wait()
        direct = asyncio.create_task(asyncio.wait_for(ha, None))
        shielded = asyncio.create_task(asyncio.wait_for(asyncio.shield(hb), None))
        await asyncio.sleep(0)
        direct.cancel()
        shielded.cancel()
        for task in (direct, shielded):
            with pytest.raises(asyncio.CancelledError):
                await task
        with pytest.raises(asyncio.CancelledError):
            await ha
        assert not hb.done()
        b.release()
        assert await hb == "b"


async def test_cancelled_job_raising_another_error_keeps_its_worker() -> None:
    """A job that turns its cancellation into another exception fails; the worker survives."""
    started = asyncio.Event()

    async def cleanup_fails() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ValueError("cleanup failed") from None

    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: None) as d:
        handle = await d.submit(cleanup_fails)
        await started.wait()
        handle.cancel()
        with pytest.raises(ValueError, match="cleanup failed"):
            await handle
        assert await (await d.submit(asyncio.sleep, 0, "next")) == "next"


async def test_job_cancelling_its_own_handle_ends_cancelled_and_spares_the_worker() -> None:
    """A job that cancels its own handle and returns ends CANCELLED, like a task; worker lives."""
    handles: list[asyncpool.JobHandle[str]] = []

    async def self_cancelling() -> str:
        handles[0].cancel()
        return "returned anyway"

    async def innocent() -> str:
        await asyncio.sleep(0)
        return "innocent"

    async with asyncpool.Dispatcher(workers=1) as d:
        handles.append(await d.submit(self_cancelling))
        after = await d.submit(innocent)
        assert await after == "innocent"
        later = await d.submit(innocent)
        assert await later == "innocent"
    assert handles[0].cancelled()
    assert check_stats(d).cancelled == 1
