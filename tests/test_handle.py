"""JobHandle (asyncpool._handle): a real asyncio.Future with job facts on top, and cancel()."""

from __future__ import annotations

import asyncio

import pytest

import asyncpool
from asyncpool import JobState
from tests._jobs import Gate, check_stats, state_of


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def test_handle_works_with_asyncio_combinators() -> None:
    """gather, wait, as_completed and shield take handles directly."""
    async with asyncpool.Dispatcher(workers=4) as d:
        handles = [await d.submit(double, i) for i in range(8)]
        assert await asyncio.gather(*handles) == [2 * i for i in range(8)]
        done, pending = await asyncio.wait(handles)
        assert (len(done), pending) == (8, set())
        assert sorted([await f for f in asyncio.as_completed(handles)]) == [2 * i for i in range(8)]
        assert await asyncio.shield(handles[0]) == 0
        assert all(isinstance(h, asyncio.Future) for h in handles)


async def test_handle_wait_for_timeout_cancels_the_job(fast_clock: None) -> None:
    """wait_for on a handle that takes too long cancels the job, as it would a task."""
    async with asyncpool.Dispatcher(workers=1) as d:
        handle = await d.submit(asyncio.sleep, 60)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(handle, 1)
        assert handle.cancelled()


async def test_handle_reports_state_attempts_and_times() -> None:
    """A handle's state, attempts and timestamps follow the job through its life."""
    gate = Gate(value="v")
    blocker = Gate()
    loop = asyncio.get_running_loop()
    async with asyncpool.Dispatcher(workers=1) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        before = loop.time()
        handle = await d.submit(gate)
        assert handle.state is JobState.QUEUED
        assert not handle.state.is_final
        assert (handle.attempts, handle.started_at, handle.finished_at) == (0, None, None)
        assert before <= handle.queued_at <= loop.time()
        assert handle.dispatcher is d
        blocker.release()
        await gate.started.wait()
        assert state_of(handle) is JobState.RUNNING
        assert handle.attempts == 1
        assert handle.started_at is not None
        assert handle.queued_at <= handle.started_at
        gate.release()
        assert await handle == "v"
    assert state_of(handle) is JobState.SUCCEEDED
    assert state_of(handle).is_final
    assert handle.finished_at is not None
    assert handle.started_at <= handle.finished_at


async def test_handle_outcome_cannot_be_set_by_callers() -> None:
    """set_result and set_exception belong to the dispatcher: callers get RuntimeError."""
    gate = Gate()
    async with asyncpool.Dispatcher(workers=1) as d:
        handle = await d.submit(gate)
        with pytest.raises(RuntimeError, match="dispatcher"):
            handle.set_result(1)
        with pytest.raises(RuntimeError, match="dispatcher"):
            handle.set_exception(ValueError())
        gate.release()
    assert handle.result() is None


async def test_handle_ids_are_submission_order() -> None:
    """Handles are numbered 1, 2, 3, ... in the order the dispatcher accepted them."""
    async with asyncpool.Dispatcher(workers=3) as d:
        handles = [await d.submit(double, i) for i in range(5)]
    assert [h.id for h in handles] == [1, 2, 3, 4, 5]


# ----------------------------------------------------------------- cancel()


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


# Regression: a job that turned the dispatcher's default timeout (or retry)
# off had empty options, so resubmitting it with them brought the default back.
async def test_handle_options_say_a_default_was_turned_off() -> None:
    """`handle.options` keeps `timeout: None` / `retry: None` given against a default."""
    policy = asyncpool.Retry(attempts=2)

    async def job() -> int:
        return 1

    async with asyncpool.Dispatcher(workers=1, timeout=5, retry=policy) as d:
        off = await d.submit(job, timeout=None, retry=None)
        default = await d.submit(job)
        assert off.options == {"timeout": None, "retry": None}
        assert default.options == {"timeout": 5.0, "retry": policy}
        again = await d.submit(off.fn, *off.args, **off.kwargs, **off.options)
        assert again.options == {"timeout": None, "retry": None}
        assert [await off, await default, await again] == [1, 1, 1]
