"""Lifecycle (asyncpool._lifecycle): start, async with, join and fail_fast.

close() and what it leaves (drain, cancel, timeout, abandoned jobs, the
shutdown report) are in test_lifecycle_close.py.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

import pytest

import asyncpool
from tests._jobs import Gate, check_stats, other_tasks

# -------------------------------------------------------------------- start


async def test_start_twice_is_an_error() -> None:
    """start() on a running dispatcher raises instead of starting a second pool."""
    async with asyncpool.Dispatcher() as dispatcher:
        with pytest.raises(RuntimeError, match="already running"):
            await dispatcher.start()


async def test_start_and_close_from_different_tasks() -> None:
    """A framework may start the dispatcher in one task and close it in another."""
    dispatcher = asyncpool.Dispatcher(workers=2)
    await asyncio.create_task(dispatcher.start())
    handle = await dispatcher.submit(asyncio.sleep, 0, 42)
    await asyncio.create_task(dispatcher.close())
    assert handle.result() == 42
    assert dispatcher.closed


# Regression: a cancelled start() left its runner running, and close() then raised.
async def test_start_cancelled_leaves_a_clean_dispatcher() -> None:
    """Cancelling start() stops the runner it began; close() then raises nothing."""
    d = asyncpool.Dispatcher(workers=2)
    starting = asyncio.create_task(d.start())
    await asyncio.sleep(0)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    await d.close()
    assert d.closed


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


async def test_submit_coroutine_object_refused_is_closed() -> None:
    """A coroutine object refused by submit is closed, so no 'never awaited' warning follows."""
    dispatcher = asyncpool.Dispatcher()
    coro = asyncio.sleep(0)
    with pytest.raises(asyncpool.DispatcherClosed):
        await dispatcher.submit(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


# --------------------------------------------------------------- async with


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


# --------------------------------------------------------------------- join


async def test_join_waits_for_jobs_submitted_so_far_only() -> None:
    """join() returns when earlier jobs finish, even while later ones still run."""
    early = [Gate(value=i) for i in range(3)]
    late = Gate(value="late")
    async with asyncpool.Dispatcher(workers=4) as dispatcher:
        handles = [await dispatcher.submit(g) for g in early]
        joiner = asyncio.create_task(dispatcher.join())
        await asyncio.sleep(0)  # join() takes its snapshot
        late_handle = await dispatcher.submit(late)
        for gate in early:
            assert not joiner.done()
            gate.release()
            await asyncio.sleep(0)
        await joiner
        assert all(h.done() for h in handles)
        assert not late_handle.done()
        late.release()
        # The dispatcher keeps accepting jobs after join().
        assert await (await dispatcher.submit(asyncio.sleep, 0, "after")) == "after"
        assert await late_handle == "late"


async def test_join_counts_failed_and_cancelled_jobs_as_finished() -> None:
    """join() does not wait forever for jobs that failed or were cancelled."""
    fails, cancelled = Gate(), Gate()
    async with asyncpool.Dispatcher(workers=2, on_error=lambda h, e: None) as dispatcher:
        failing = await dispatcher.submit(fails)
        to_cancel = await dispatcher.submit(cancelled)
        await fails.started.wait()
        await cancelled.started.wait()
        joiner = asyncio.create_task(dispatcher.join())
        await asyncio.sleep(0)
        fails.fail(ValueError("boom"))
        to_cancel.cancel()
        await joiner
        assert failing.state is asyncpool.JobState.FAILED
        assert to_cancel.state is asyncpool.JobState.CANCELLED


async def test_join_with_nothing_submitted_returns_at_once() -> None:
    """join() on an idle dispatcher returns without waiting."""
    async with asyncpool.Dispatcher(workers=2) as dispatcher:
        await dispatcher.join()
        assert check_stats(dispatcher).submitted == 0


async def test_concurrent_joins_each_wait_for_their_own_snapshot() -> None:
    """Two join() calls taken at different times each return when their jobs are done."""
    a, b = Gate(), Gate()
    async with asyncpool.Dispatcher(workers=2) as dispatcher:
        await dispatcher.submit(a)
        first = asyncio.create_task(dispatcher.join())
        await asyncio.sleep(0)
        await dispatcher.submit(b)
        second = asyncio.create_task(dispatcher.join())
        await asyncio.sleep(0)
        a.release()
        await first
        assert not second.done()
        b.release()
        await second


# Regression: a job awaiting join() or close() of its own dispatcher hung for ever.
@pytest.mark.parametrize("method", ["join", "close"])
async def test_join_or_close_from_inside_a_job_is_an_error_not_a_hang(method: str) -> None:
    """A job awaiting join() or close() of its own dispatcher gets RuntimeError at once."""

    async def job(d: asyncpool.Dispatcher) -> None:
        await getattr(d, method)()

    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: None) as d:
        handle = await d.submit(job, d)
        await asyncio.wait([handle])
    error = handle.exception()
    assert isinstance(error, RuntimeError)
    assert f"{method}() called from a job" in str(error)


# ---------------------------------------------------------------- fail_fast


class Boom(Exception):
    pass


async def explode(message: str) -> None:
    raise Boom(message)


# fail_fast: the first failure must cancel the other jobs and the body, then raise.
async def test_fail_fast_cancels_jobs_and_body_and_raises_group() -> None:
    """fail_fast: the first failure cancels the other jobs and the body; a group is raised."""
    other = Gate()
    failing = Gate()
    body_cancelled = False
    error = Boom("first")
    with pytest.raises(ExceptionGroup) as caught:
        async with asyncpool.Dispatcher(workers=2, fail_fast=True) as d:
            other_handle = await d.submit(other)
            failing_handle = await d.submit(failing)
            queued = await d.submit(asyncio.sleep, 0)
            await other.started.wait()
            await failing.started.wait()
            failing.fail(error)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                body_cancelled = True
                raise
    assert caught.value.exceptions == (error,)
    assert body_cancelled
    assert other.saw_cancel
    assert other_handle.cancelled()
    assert queued.cancelled()
    assert failing_handle.exception() is error
    with pytest.raises(asyncpool.DispatcherClosed, match="closed"):
        await d.submit(asyncio.sleep, 0)


# fail_fast: a body error must join the job failures in the group, as in TaskGroup.
async def test_fail_fast_matches_taskgroup_when_body_also_raises() -> None:
    """fail_fast: like TaskGroup, a body error joins the job failures in the group."""
    body_error = KeyError("body")

    async def shape(group_cm: Callable[[], object]) -> tuple[type, list[str]]:
        try:
            if group_cm is asyncio.TaskGroup:
                async with asyncio.TaskGroup() as tg:
                    t = tg.create_task(explode("job"))
                    await asyncio.wait([t])
                    raise body_error
            else:
                async with asyncpool.Dispatcher(workers=1, fail_fast=True) as d:
                    h = await d.submit(explode, "job")
                    await asyncio.wait([h])
                    raise body_error
        except BaseExceptionGroup as group:
            return type(group), sorted(type(e).__name__ for e in group.exceptions)
        raise AssertionError("no group raised")

    assert await shape(asyncpool.Dispatcher) == await shape(asyncio.TaskGroup)


# fail_fast: with no failure it must simply wait for the jobs.
async def test_fail_fast_without_failure_behaves_normally() -> None:
    """fail_fast with jobs that all succeed simply waits for them."""
    async with asyncpool.Dispatcher(workers=2, fail_fast=True) as d:
        handles = [await d.submit(asyncio.sleep, 0, i) for i in range(10)]
    assert [h.result() for h in handles] == list(range(10))


# fail_fast: without a body, the group must come from close(), once.
async def test_fail_fast_with_start_and_close_raises_from_close() -> None:
    """Without a body, fail_fast's group is raised by close(), once."""
    d = asyncpool.Dispatcher(workers=1, fail_fast=True)
    await d.start()
    handle = await d.submit(explode, "late")
    await asyncio.wait([handle])
    with pytest.raises(ExceptionGroup) as caught:
        await d.close()
    assert [type(e) for e in caught.value.exceptions] == [Boom]
    await d.close()  # the second close is harmless


# fail_fast: a cancel of the body from outside must propagate, not be swallowed.
async def test_fail_fast_external_cancel_of_body_propagates() -> None:
    """fail_fast: cancelling the body's task from outside cancels it (no group, no swallow)."""
    gate = Gate()

    async def body() -> None:
        async with asyncpool.Dispatcher(workers=1, fail_fast=True) as d:
            await d.submit(gate)
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await gate.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.saw_cancel


# Regression: fail_fast raised the failures again after a close() from another task.
async def test_fail_fast_errors_are_raised_once_when_close_came_first() -> None:
    """With fail_fast, failures raised by a close() from another task are not raised again."""
    error = ValueError("once")

    async def fails() -> None:
        raise error

    with pytest.raises(ExceptionGroup) as caught:
        async with asyncpool.Dispatcher(workers=1, fail_fast=True) as d:
            handle = await d.submit(fails)
            await asyncio.wait([handle])
            await asyncio.create_task(d.close())
    assert caught.value.exceptions == (error,)


# Regression: a fail_fast body raising after close() left a stray cancel on its task.
async def test_fail_fast_body_raising_after_close_leaves_no_stray_cancel() -> None:
    """A fail_fast body that raises after the dispatcher closed gets its own exception back."""
    with pytest.raises(ExceptionGroup) as caught:
        async with asyncpool.Dispatcher(workers=1, fail_fast=True) as d:
            await d.close()
            raise KeyError("body")
    assert [type(e) for e in caught.value.exceptions] == [KeyError]
    await asyncio.sleep(0)  # the caller's next await is not hit by a leftover cancel


# Regression: join() awaited from a task that a job started (and awaits)
# waited for that job itself, for ever; now it raises at once.
@pytest.mark.parametrize("method", ["join", "close"])
async def test_lifecycle_join_or_close_from_a_jobs_child_task_is_refused(method: str) -> None:
    """join()/close() from a task a job started raises RuntimeError instead of deadlocking."""
    async with asyncpool.Dispatcher(workers=1) as d:

        async def parent() -> str:
            child = asyncio.create_task(getattr(d, method)())
            try:
                await child
            except RuntimeError as exc:
                return str(exc)
            return "no error"

        handle = await d.submit(parent)
        async with asyncio.timeout(10):  # the old code hung here
            message = await handle
    assert f"{method}() called from a job of" in message
    assert "a task one of its jobs" in message
