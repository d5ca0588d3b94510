"""Retry timers (asyncpool._backoff): a job waiting to be tried again holds no worker."""

from __future__ import annotations

import asyncio
import logging

import pytest

from asyncpool import Dispatcher, JobState, Retry
from tests._jobs import Flaky, check_stats


async def test_retry_frees_the_worker_during_backoff(fast_clock: None) -> None:
    """While a job waits out its backoff it holds no worker (and counts as queued)."""
    loop = asyncio.get_running_loop()
    flaky = Flaky(failures=1)
    async with Dispatcher(workers=1) as d:
        retried = await d.submit(flaky, retry=Retry(backoff=10, jitter=0))
        await asyncio.sleep(1)  # the first try failed at 0 s; the retry is due at 10 s
        stats = check_stats(d)
        assert (stats.queued, stats.busy, stats.retried) == (1, 0, 1)
        assert retried.state is JobState.QUEUED
        other = await d.submit(asyncio.sleep, 2, "other")
        assert await other == "other"
        assert loop.time() == pytest.approx(3)  # it ran during the backoff
        assert not retried.done()
        assert await retried == 2
    assert flaky.starts[1] == pytest.approx(10)


async def test_retry_cancelled_during_backoff_never_runs_again(fast_clock: None) -> None:
    """Cancelling a job that waits to be retried ends it at once; it is not tried again."""
    flaky = Flaky(failures=1)
    async with Dispatcher(workers=1) as d:
        handle = await d.submit(flaky, retry=Retry(backoff=10))
        await asyncio.sleep(1)
        assert handle.cancel()
        assert handle.cancelled()
        await asyncio.sleep(20)
    assert len(flaky.starts) == 1
    assert handle.attempts == 1
    stats = check_stats(d)
    assert (stats.cancelled, stats.queued, stats.retried) == (1, 0, 1)


async def test_retry_close_waits_for_backoff_and_cancel_reports_it(fast_clock: None) -> None:
    """close() lets a job waiting for a retry finish; close(cancel=True) reports it interrupted."""
    loop = asyncio.get_running_loop()
    d = Dispatcher(workers=1)
    await d.start()
    drained = await d.submit(Flaky(failures=1), retry=Retry(backoff=5, jitter=0))
    await asyncio.sleep(1)
    await d.close()
    assert drained.result() == 2
    assert loop.time() == pytest.approx(5)

    d = Dispatcher(workers=1)
    await d.start()
    stopped = await d.submit(Flaky(failures=1), retry=Retry(backoff=5))
    await asyncio.sleep(1)
    report = await d.close(cancel=True)
    assert stopped.cancelled()
    assert report.interrupted == (stopped,)
    assert report.never_started == ()


async def test_retry_reenters_at_the_back_of_its_priority(fast_clock: None) -> None:
    """A retried job with a priority queues behind the jobs of that priority already waiting."""
    ran: list[str] = []
    flaky = Flaky(failures=1)

    async def retried() -> None:
        await flaky()
        ran.append("retried")

    async def record(name: str) -> None:
        await asyncio.sleep(1)
        ran.append(name)

    async with Dispatcher(workers=1) as d:
        await d.submit(retried, priority=5, retry=Retry(backoff=0.5, jitter=0))
        for name in "abc":
            await d.submit(record, name, priority=5)
    assert ran == ["a", "b", "c", "retried"]


# Regression (issue 16): every retry logged a WARNING; 20 flaky URLs printed 40 warnings.
async def test_retry_logs_at_info_and_final_failure_at_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A retry is logged at INFO, never WARNING; a job that fails for good is logged at ERROR."""
    caplog.set_level(logging.DEBUG, logger="asyncpool")
    async with Dispatcher(workers=1) as d:
        recovered = await d.submit(Flaky(failures=2), retry=Retry(attempts=3, backoff=0))
        assert await recovered == 3
        await d.submit(Flaky(failures=2), retry=Retry(attempts=2, backoff=0))  # nobody awaits it
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "asyncpool"]
    retries = [(level, message) for level, message in records if "retrying in" in message]
    assert [level for level, _ in retries] == [logging.INFO] * 3
    assert "failed (try 1 of 3), retrying" in retries[0][1]
    assert not [message for level, message in records if level == logging.WARNING]
    failures = [message for level, message in records if level == logging.ERROR]
    assert len(failures) == 1
    assert "failed" in failures[0]
