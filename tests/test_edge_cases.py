"""Edge cases found in review: each test pins a behaviour that once went wrong."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import weakref

import pytest

import asyncpool
from tests._jobs import Gate, check_stats


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


async def test_job_leaving_an_unbalanced_cancel_keeps_its_worker() -> None:
    """A job that cancels its own task and raises TimeoutError instead keeps the pool whole."""

    async def old_style_timeout() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # never balanced with uncancel(), as async_timeout <= 4.0.2 did
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise TimeoutError("timed out") from None

    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: None) as d:
        first = await d.submit(old_style_timeout)
        second = await d.submit(asyncio.sleep, 0, "still served")
        assert await second == "still served"
    assert isinstance(first.exception(), TimeoutError)


async def test_on_error_hook_raising_base_exception_keeps_worker_and_join(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An on_error hook raising CancelledError is logged; join() and the worker carry on."""
    caplog.set_level(logging.ERROR, logger="asyncpool")

    def hook(handle: asyncpool.JobHandle[object], exc: BaseException) -> None:
        raise asyncio.CancelledError

    async def fails() -> None:
        raise ValueError("job failed")

    async with asyncpool.Dispatcher(workers=1, on_error=hook) as d:
        await d.submit(fails)
        await d.join()
        assert await (await d.submit(asyncio.sleep, 0, "next")) == "next"
    assert len([r for r in caplog.records if r.exc_info]) == 2


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


async def test_fail_fast_body_raising_after_close_leaves_no_stray_cancel() -> None:
    """A fail_fast body that raises after the dispatcher closed gets its own exception back."""
    with pytest.raises(ExceptionGroup) as caught:
        async with asyncpool.Dispatcher(workers=1, fail_fast=True) as d:
            await d.close()
            raise KeyError("body")
    assert [type(e) for e in caught.value.exceptions] == [KeyError]
    await asyncio.sleep(0)  # the caller's next await is not hit by a leftover cancel


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


async def test_idle_worker_keeps_nothing_of_its_last_job() -> None:
    """Once a job is done and its handle dropped, the idle worker keeps no reference to it."""

    class Payload:
        pass

    async def make() -> Payload:
        return Payload()

    async with asyncpool.Dispatcher(workers=1) as d:
        handle = await d.submit(make)
        ref = weakref.ref(await handle)
        del handle
        await asyncio.sleep(0)
        gc.collect()
        assert ref() is None


async def test_cancelling_many_queued_jobs_keeps_dead_count_exact() -> None:
    """Mass cancellation with compaction leaves the queue's books exact."""
    blocker = Gate()
    async with asyncpool.Dispatcher(workers=1, queue_size=0) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        handles = [d.submit_nowait(asyncio.sleep, 0) for _ in range(300)]
        for handle in handles:
            handle.cancel()
        assert d._dead == len(d._job_queue)  # every entry left is a dead one
        assert check_stats(d).queued == 0
        blocker.release()
    assert d._dead == 0
