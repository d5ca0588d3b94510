"""Blocking jobs: they run in worker threads, one thread per worker at most."""

from __future__ import annotations

import asyncio
import threading

import anyio.to_thread
import pytest

import asyncpool
from asyncpool import JobState
from tests._jobs import check_stats


class Blocking:
    """A sync job that blocks its thread until released; records where it ran."""

    def __init__(self, release: threading.Event, started: threading.Semaphore) -> None:
        self.release = release
        self.started = started
        self.thread: int | None = None

    def process(self) -> int:
        self.thread = threading.get_ident()
        self.started.release()
        self.release.wait(timeout=30)
        return self.thread


async def test_sync_callable_runs_in_a_worker_thread() -> None:
    """A plain function runs off the event loop's thread, with its arguments."""

    def where(a: int, *, b: int) -> tuple[int, int]:
        return threading.get_ident(), a + b

    async with asyncpool.Dispatcher(workers=2) as d:
        handle = await d.submit(where, 1, b=2)
    thread, total = handle.result()
    assert thread != threading.get_ident()
    assert total == 3


async def test_threads_never_exceed_workers() -> None:
    """With 2 workers and 5 blocking jobs, exactly 2 threads run at once; the rest wait."""
    release = threading.Event()
    started = threading.Semaphore(0)
    jobs = [Blocking(release, started) for _ in range(5)]
    async with asyncpool.Dispatcher(workers=2) as d:
        handles = [await d.submit(job) for job in jobs]
        for _ in range(2):
            await anyio.to_thread.run_sync(started.acquire)
        stats = check_stats(d)
        assert (stats.busy, stats.queued) == (2, 3)
        assert sum(job.thread is not None for job in jobs) == 2
        release.set()
    assert all(h.state is JobState.SUCCEEDED for h in handles)


async def test_cancelled_thread_job_ends_when_its_thread_returns() -> None:
    """A running thread job cannot be interrupted: it ends cancelled when its thread returns."""
    release = threading.Event()
    started = threading.Semaphore(0)
    job = Blocking(release, started)
    async with asyncpool.Dispatcher(workers=1) as d:
        handle = await d.submit(job)
        follower = await d.submit(asyncio.sleep, 0, "next")
        await anyio.to_thread.run_sync(started.acquire)
        assert handle.cancel() is True
        await asyncio.sleep(0)
        # The thread still runs, so the job still occupies its worker.
        assert handle.state is JobState.RUNNING
        assert check_stats(d).busy == 1
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await handle
        assert await follower == "next"
    assert handle.cancelled()
    assert handle.finished_at is not None


async def test_close_cancel_waits_for_running_threads() -> None:
    """close(cancel=True) returns only after the running threads have returned."""
    release = threading.Event()
    started = threading.Semaphore(0)
    job = Blocking(release, started)
    d = asyncpool.Dispatcher(workers=1)
    await d.start()
    handle = await d.submit(job)
    await anyio.to_thread.run_sync(started.acquire)
    closing = asyncio.create_task(d.close(cancel=True))
    await asyncio.sleep(0)
    assert not closing.done()
    release.set()
    await closing
    assert handle.cancelled()


async def test_sync_job_returning_an_awaitable_fails_clearly() -> None:
    """A sync process() that returns a coroutine fails with a TypeError saying to use async def."""

    async def inner() -> int:
        return 1

    class Confused:
        def process(self) -> object:
            return inner()

    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: None) as d:
        handle = await d.submit(Confused())
    with pytest.raises(TypeError, match="async def"):
        handle.result()


async def test_sync_job_exception_reaches_the_handle() -> None:
    """An exception raised in the thread is the handle's exception, unchanged."""
    error = OSError("disk")

    def fails() -> None:
        raise error

    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: None) as d:
        handle = await d.submit(fails)
    assert handle.exception() is error
