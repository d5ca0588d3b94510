"""Blocking jobs (asyncpool._executors): worker threads, and sync_in="process".

In threads, one thread per worker at most. With sync_in="process", blocking
jobs run in a pool of worker processes the dispatcher owns (those tests are
`slow`: they start real processes).
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures.process import BrokenProcessPool

import anyio.to_thread
import pytest

import asyncpool
from asyncpool import JobState
from tests import cpu_jobs
from tests._jobs import check_stats

# ------------------------------------------------------------------ threads


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


# ---------------------------------------------------------------- processes


@pytest.mark.slow
async def test_process_jobs_run_in_other_processes() -> None:
    """Sync callables and sync Jobs run in child processes and return their results."""
    async with asyncpool.Dispatcher(workers=2, sync_in="process") as d:
        handles = [await d.submit(cpu_jobs.pid_and_square, i) for i in range(6)]
        job = await d.submit(cpu_jobs.Square(7))
        # Async jobs still run on the event loop.
        on_loop = await d.submit(asyncio.sleep, 0, os.getpid())
    results = [h.result() for h in handles]
    assert [square for _, square in results] == [i * i for i in range(6)]
    assert all(pid != os.getpid() for pid, _ in results)
    assert len({pid for pid, _ in results}) <= 2
    assert job.result() == 49
    assert on_loop.result() == os.getpid()


@pytest.mark.slow
async def test_process_unpicklable_job_is_refused_at_submit() -> None:
    """A job that cannot be pickled is a TypeError from submit, not a crash in a child."""
    lock = threading.Lock()
    async with asyncpool.Dispatcher(workers=1, sync_in="process") as d:
        with pytest.raises(TypeError, match="cannot be pickled"):
            await d.submit(cpu_jobs.pid_and_square, lock)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="module level"):
            d.submit_nowait(lambda: 1)
        assert d.stats().submitted == 0


@pytest.mark.slow
async def test_process_crash_fails_the_job_and_the_pool_recovers() -> None:
    """A child that dies fails its job with BrokenProcessPool; later jobs get a fresh pool."""
    async with asyncpool.Dispatcher(workers=1, sync_in="process", on_error=lambda h, e: None) as d:
        crashed = await d.submit(cpu_jobs.crash)
        await asyncio.wait([crashed])
        after = await d.submit(cpu_jobs.pid_and_square, 3)
    assert isinstance(crashed.exception(), BrokenProcessPool)
    assert after.result()[1] == 9


@pytest.mark.slow
async def test_process_cancelled_job_is_waited_for_then_cancelled() -> None:
    """Cancelling a running process job waits for the child to finish, then reports cancelled."""
    async with asyncpool.Dispatcher(workers=1, sync_in="process") as d:
        running = await d.submit(cpu_jobs.nap, 0.2)
        queued = await d.submit(cpu_jobs.nap, 0.2)
        # The worker starts it within a few loop steps (a hand-over and a wake-up).
        for _ in range(100):
            if running.state is asyncpool.JobState.RUNNING:
                break
            await asyncio.sleep(0)
        assert running.state is asyncpool.JobState.RUNNING
        running.cancel()
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert running.cancelled()
    assert queued.cancelled()
    assert queued.started_at is None


@pytest.mark.slow
def test_process_bad_sync_in_value() -> None:
    """sync_in accepts only 'thread' or 'process', and says so."""
    with pytest.raises(ValueError, match="sync_in must be 'thread' or 'process', got 'gpu'"):
        asyncpool.Dispatcher(sync_in="gpu")  # type: ignore[arg-type]
