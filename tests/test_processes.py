"""sync_in="process": blocking jobs in a pool of worker processes owned by the dispatcher."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures.process import BrokenProcessPool

import pytest

import asyncpool
from tests import cpu_jobs

pytestmark = pytest.mark.slow


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


async def test_process_unpicklable_job_is_refused_at_submit() -> None:
    """A job that cannot be pickled is a TypeError from submit, not a crash in a child."""
    lock = threading.Lock()
    async with asyncpool.Dispatcher(workers=1, sync_in="process") as d:
        with pytest.raises(TypeError, match="cannot be pickled"):
            await d.submit(cpu_jobs.pid_and_square, lock)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="module level"):
            d.submit_nowait(lambda: 1)
        assert d.stats().submitted == 0


async def test_process_crash_fails_the_job_and_the_pool_recovers() -> None:
    """A child that dies fails its job with BrokenProcessPool; later jobs get a fresh pool."""
    async with asyncpool.Dispatcher(workers=1, sync_in="process", on_error=lambda h, e: None) as d:
        crashed = await d.submit(cpu_jobs.crash)
        await asyncio.wait([crashed])
        after = await d.submit(cpu_jobs.pid_and_square, 3)
    assert isinstance(crashed.exception(), BrokenProcessPool)
    assert after.result()[1] == 9


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


def test_process_bad_sync_in_value() -> None:
    """sync_in accepts only 'thread' or 'process', and says so."""
    with pytest.raises(ValueError, match="sync_in must be 'thread' or 'process', got 'gpu'"):
        asyncpool.Dispatcher(sync_in="gpu")  # type: ignore[arg-type]
