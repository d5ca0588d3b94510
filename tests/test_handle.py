"""JobHandle: a real asyncio.Future with job facts on top."""

from __future__ import annotations

import asyncio

import pytest

import asyncpool
from asyncpool import JobState
from tests._jobs import Gate, state_of


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
