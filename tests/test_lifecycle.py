"""Lifecycle: start, close (drain, cancel, timeout), async with, and what is left afterwards."""

from __future__ import annotations

import asyncio
import inspect

import pytest

import asyncpool
from asyncpool import JobState
from tests._jobs import Gate, check_stats


def other_tasks() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def test_close_drains_queued_and_running_jobs() -> None:
    """close() lets every queued and running job finish, then no dispatcher task is left."""
    before = other_tasks()
    gates = [Gate(value=i) for i in range(6)]
    dispatcher = asyncpool.Dispatcher(workers=2)
    await dispatcher.start()
    assert len(other_tasks() - before) == 4  # runner, loop, two workers
    handles = [await dispatcher.submit(g) for g in gates]
    closing = asyncio.create_task(dispatcher.close())
    await asyncio.sleep(0)
    assert not dispatcher.running
    with pytest.raises(asyncpool.DispatcherClosed, match="is closing"):
        await dispatcher.submit(Gate())
    for gate in gates:
        gate.release()
    await closing
    assert [h.result() for h in handles] == list(range(6))
    assert dispatcher.closed
    assert other_tasks() == before


async def test_close_cancel_cancels_queued_and_running_jobs_at_once() -> None:
    """close(cancel=True): running jobs see CancelledError, queued ones never run."""
    before = other_tasks()
    running = [Gate(), Gate()]
    queued = [Gate(), Gate(), Gate()]
    dispatcher = asyncpool.Dispatcher(workers=2)
    await dispatcher.start()
    handles = [await dispatcher.submit(g) for g in running + queued]
    for gate in running:
        await gate.started.wait()
    await dispatcher.close(cancel=True)
    assert all(h.state is JobState.CANCELLED for h in handles)
    assert all(h.cancelled() for h in handles)
    assert [g.saw_cancel for g in running] == [True, True]
    assert [g.runs for g in queued] == [0, 0, 0]
    stats = check_stats(dispatcher)
    assert (stats.cancelled, stats.busy, stats.queued) == (5, 0, 0)
    assert other_tasks() == before


async def test_close_timeout_cancels_what_is_left(fast_clock: None) -> None:
    """close(timeout=5): a job that ends within 5 s succeeds, the rest is cancelled at 5 s."""
    loop = asyncio.get_running_loop()
    dispatcher = asyncpool.Dispatcher(workers=2)
    await dispatcher.start()
    quick = await dispatcher.submit(asyncio.sleep, 1, "quick")
    slow = await dispatcher.submit(asyncio.sleep, 100, "slow")
    started = loop.time()
    await dispatcher.close(timeout=5)
    assert loop.time() - started == pytest.approx(5)
    assert quick.result() == "quick"
    assert slow.cancelled()
    assert slow.started_at is not None
    assert slow.finished_at == pytest.approx(started + 5)


async def test_close_timeout_zero_cancels_at_once() -> None:
    """close(timeout=0) gives running jobs no time at all."""
    gate = Gate()
    dispatcher = asyncpool.Dispatcher(workers=1)
    await dispatcher.start()
    handle = await dispatcher.submit(gate)
    await gate.started.wait()
    await dispatcher.close(timeout=0)
    assert handle.cancelled()
    assert gate.saw_cancel


async def test_close_twice_and_concurrently_is_harmless() -> None:
    """Several close() calls, concurrent or repeated, all return once the dispatcher is closed."""
    gate = Gate()
    dispatcher = asyncpool.Dispatcher(workers=1)
    await dispatcher.start()
    handle = await dispatcher.submit(gate)
    closers = [asyncio.create_task(dispatcher.close()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(c.done() for c in closers)
    gate.release()
    await asyncio.gather(*closers)
    await dispatcher.close()
    await dispatcher.close(cancel=True)
    assert handle.result() is None
    assert dispatcher.closed


async def test_close_never_started_dispatcher() -> None:
    """Closing a dispatcher that never started just marks it closed."""
    dispatcher = asyncpool.Dispatcher()
    await dispatcher.close()
    assert dispatcher.closed
    with pytest.raises(asyncpool.DispatcherClosed, match="runs once"):
        await dispatcher.start()


async def test_submit_before_start_and_after_close_says_which() -> None:
    """DispatcherClosed's message says whether the dispatcher is not started or closed."""
    dispatcher = asyncpool.Dispatcher()
    with pytest.raises(asyncpool.DispatcherClosed, match=r"not started.*start"):
        await dispatcher.submit(asyncio.sleep, 0)
    with pytest.raises(asyncpool.DispatcherClosed, match="not started"):
        dispatcher.submit_nowait(asyncio.sleep, 0)
    async with dispatcher:
        pass
    with pytest.raises(asyncpool.DispatcherClosed, match="is closed"):
        await dispatcher.submit(asyncio.sleep, 0)
    with pytest.raises(asyncpool.DispatcherClosed, match="runs once"):
        await dispatcher.start()


async def test_start_twice_is_an_error() -> None:
    """start() on a running dispatcher raises instead of starting a second pool."""
    async with asyncpool.Dispatcher() as dispatcher:
        with pytest.raises(RuntimeError, match="already running"):
            await dispatcher.start()


async def test_submit_coroutine_object_refused_is_closed() -> None:
    """A coroutine object refused by submit is closed, so no 'never awaited' warning follows."""
    dispatcher = asyncpool.Dispatcher()
    coro = asyncio.sleep(0)
    with pytest.raises(asyncpool.DispatcherClosed):
        await dispatcher.submit(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


async def test_start_and_close_from_different_tasks() -> None:
    """A framework may start the dispatcher in one task and close it in another."""
    dispatcher = asyncpool.Dispatcher(workers=2)
    await asyncio.create_task(dispatcher.start())
    handle = await dispatcher.submit(asyncio.sleep, 0, 42)
    await asyncio.create_task(dispatcher.close())
    assert handle.result() == 42
    assert dispatcher.closed


async def test_async_with_body_raising_cancels_jobs_and_reraises_unchanged() -> None:
    """If the body raises, its jobs are cancelled and the same exception propagates."""
    before = other_tasks()
    running, queued = Gate(), Gate()
    error = LookupError("from the body")
    handles = []
    with pytest.raises(LookupError) as caught:
        async with asyncpool.Dispatcher(workers=1) as dispatcher:
            handles.append(await dispatcher.submit(running))
            handles.append(await dispatcher.submit(queued))
            await running.started.wait()
            raise error
    assert caught.value is error
    assert all(h.cancelled() for h in handles)
    assert running.saw_cancel
    assert queued.runs == 0
    assert other_tasks() == before


async def test_async_with_body_cancelled_cancels_jobs_and_propagates() -> None:
    """If the task running the body is cancelled, its jobs are cancelled and so is the task."""
    gate = Gate()
    handles: list[asyncpool.JobHandle[object]] = []

    async def body() -> None:
        async with asyncpool.Dispatcher(workers=1) as dispatcher:
            handles.append(await dispatcher.submit(gate))
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await gate.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handles[0].cancelled()
    assert gate.saw_cancel


async def test_async_with_exit_cancelled_during_join_cancels_jobs() -> None:
    """A task cancelled while `async with` waits for its jobs cancels them and stays cancelled."""
    gate = Gate()
    handles: list[asyncpool.JobHandle[object]] = []
    exited = asyncio.Event()

    async def body() -> None:
        try:
            async with asyncpool.Dispatcher(workers=1) as dispatcher:
                handles.append(await dispatcher.submit(gate))
                exited.set()
        finally:
            pass

    task = asyncio.create_task(body())
    await exited.wait()
    await gate.started.wait()
    await asyncio.sleep(0)  # the body is now waiting in __aexit__
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handles[0].cancelled()


async def test_close_caller_cancelled_cancels_remaining_jobs() -> None:
    """Cancelling the task that waits in close() cancels the jobs it was draining."""
    before = other_tasks()
    gate = Gate()
    dispatcher = asyncpool.Dispatcher(workers=1)
    await dispatcher.start()
    handle = await dispatcher.submit(gate)
    await gate.started.wait()
    closer = asyncio.create_task(dispatcher.close())
    await asyncio.sleep(0)
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer
    # Even a cancelled close() leaves nothing behind.
    assert gate.saw_cancel
    assert handle.cancelled()
    assert dispatcher.closed
    assert other_tasks() == before
    await dispatcher.close()  # harmless afterwards


async def test_repr_shows_state_and_load() -> None:
    """The repr says the name, the lifecycle state and the load."""
    gate = Gate()
    dispatcher = asyncpool.Dispatcher(workers=2, name="images")
    assert repr(dispatcher) == "<Dispatcher 'images' not started workers=2 busy=0 queued=0>"
    async with dispatcher:
        handle = await dispatcher.submit(gate)
        await gate.started.wait()
        await dispatcher.submit(asyncio.sleep, 0)
        assert repr(dispatcher) == "<Dispatcher 'images' running workers=2 busy=1 queued=1>"
        assert repr(handle) == "<JobHandle id=1 RUNNING Gate.process>"
        gate.release()
    assert repr(dispatcher) == "<Dispatcher 'images' closed workers=2 busy=0 queued=0>"


async def test_close_report_lists_never_started_and_interrupted_jobs() -> None:
    """close() returns what it cancelled: queued jobs never started, running ones interrupted."""
    running, queued = Gate(), Gate()
    d = asyncpool.Dispatcher(workers=1)
    await d.start()
    finished = await d.submit(asyncio.sleep, 0, "done")
    await d.join()
    first = await d.submit(running)
    second = await d.submit(queued)
    cancelled_by_caller = await d.submit(asyncio.sleep, 0)
    cancelled_by_caller.cancel()
    await running.started.wait()
    report = await d.close(cancel=True)
    assert report.never_started == (second,)
    assert report.interrupted == (first,)
    assert report.unfinished == (second, first)
    assert len(report) == 2
    assert repr(report) == "<ShutdownReport never_started=1 interrupted=1>"
    assert d.shutdown_report is report
    assert finished not in report.unfinished
    assert await d.close() == report  # a second close reports the same


async def test_close_report_is_empty_when_everything_finished() -> None:
    """A drained shutdown cancels nothing, and says so."""
    async with asyncpool.Dispatcher(workers=2) as d:
        reports = [d.shutdown_report]
        await d.submit(asyncio.sleep, 0)
    reports.append(d.shutdown_report)
    assert reports == [None, asyncpool.ShutdownReport()]


async def test_close_timeout_report_lists_what_the_timeout_cut(fast_clock: None) -> None:
    """close(timeout=...) reports the jobs it had to cancel when time ran out."""
    d = asyncpool.Dispatcher(workers=1)
    await d.start()
    slow = await d.submit(asyncio.sleep, 100)
    waiting = await d.submit(asyncio.sleep, 0)
    report = await d.close(timeout=1)
    assert (report.interrupted, report.never_started) == ((slow,), (waiting,))


async def test_close_report_handles_can_be_submitted_again() -> None:
    """A never-started job from the report carries what is needed to submit it elsewhere."""
    blocker = Gate()
    first = asyncpool.Dispatcher(workers=1)
    await first.start()
    await first.submit(blocker)
    await blocker.started.wait()
    waiting = await first.submit(asyncio.sleep, 0, "again")
    report = await first.close(cancel=True)
    assert report.never_started == (waiting,)
    async with asyncpool.Dispatcher(workers=1) as second:
        for handle in report.never_started:
            assert handle.kwargs == {}
            retry = await second.submit(handle.fn, *handle.args, **handle.kwargs)
            assert await retry == "again"


async def test_close_cancelled_still_records_a_report() -> None:
    """When close() itself is cancelled, shutdown_report still lists what it cut off."""
    gate = Gate()
    d = asyncpool.Dispatcher(workers=1)
    await d.start()
    handle = await d.submit(gate)
    await gate.started.wait()
    closer = asyncio.create_task(d.close())
    await asyncio.sleep(0)
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer
    assert d.shutdown_report is not None
    assert d.shutdown_report.interrupted == (handle,)
