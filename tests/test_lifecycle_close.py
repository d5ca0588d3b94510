"""close() (asyncpool._lifecycle): drain, cancel, timeout, abandoned jobs, the shutdown report.

close(timeout=...) returns even when a job will not stop, and reports the
job it gave up on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from typing import Any

import pytest

import asyncpool
from asyncpool import Dispatcher, JobState
from asyncpool._testing import internals
from tests._jobs import Gate, check_stats, other_tasks

# --------------------------------------------------------- drain and cancel


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


# Regression: coroutine objects cancelled before they ran warned 'never awaited'.
async def test_coroutine_objects_that_never_start_are_closed() -> None:
    """Coroutine objects cancelled before they run are closed, so nothing warns 'never awaited'."""
    blocker = Gate()
    coros = [asyncio.sleep(0) for _ in range(3)]
    d = asyncpool.Dispatcher(workers=1)
    await d.start()
    await d.submit(blocker)
    await blocker.started.wait()
    handles = [await d.submit(c) for c in coros]
    handles[0].cancel()
    await d.close(cancel=True)
    assert all(inspect.getcoroutinestate(c) == inspect.CORO_CLOSED for c in coros)
    assert all(h.cancelled() for h in handles)


# ------------------------------------------------------------------ timeout


# Bad input: a bad close(timeout=...) must be refused and change nothing.
@pytest.mark.parametrize(
    ("timeout", "error"),
    [(-1, ValueError), (float("nan"), ValueError), ("5", TypeError), (True, TypeError)],
)
async def test_bad_input_close_timeout(timeout: Any, error: type[Exception]) -> None:
    """close(timeout=...) rejects what is not a non-negative number, naming timeout."""
    async with asyncpool.Dispatcher(workers=1) as d:
        with pytest.raises(error, match="timeout"):
            await d.close(timeout=timeout)
        assert d.running  # a rejected close changes nothing


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


# -------------------------------------------------- jobs that will not stop


async def _wait_for_teardown(d: Dispatcher) -> None:
    """Wait for the dispatcher's runner, which ends when the abandoned job does."""
    runner = internals(d).runner
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
    runner = internals(d).runner
    assert runner is not None
    assert runner.done()


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


# Regression: a second close(), or the async with exit, waited for an abandoned job.
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
    runner = internals(d).runner
    assert runner is not None
    await asyncio.wait((runner,))


# Regression: an abandoned job the user had cancelled was missing from `interrupted`.
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
    runner = internals(d).runner
    assert runner is not None
    await asyncio.wait((runner,))


# ------------------------------------------------------ the shutdown report


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


async def test_shutdown_report_lists_jobs_in_submission_order() -> None:
    """The report's tuples are in submission (id) order, whatever order the shutdown met them in."""
    gates = [Gate() for _ in range(3)]
    d = Dispatcher(workers=3)
    await d.start()
    handles = [await d.submit(g) for g in gates]
    for g in gates:
        await g.started.wait()
    queued = [await d.submit(asyncio.sleep, 0, priority=p) for p in (1, 5, 3)]
    report = await d.close(cancel=True)
    assert report.interrupted == tuple(handles)
    assert report.never_started == tuple(queued)
