"""asyncpool.JobLog: what it remembers of jobs, for how long, and what a record shows."""

from __future__ import annotations

import asyncio
import time

import pytest

from asyncpool import Dispatcher, JobLog
from tests._jobs import guarded

pytestmark = pytest.mark.timeout(10)


async def quick(x: int) -> int:
    return x


async def test_an_unfinished_job_is_kept_past_keep() -> None:
    """A job still running is never forgotten for newer jobs; finished ones past `keep` are."""
    release = asyncio.Event()

    async def long() -> str:
        await release.wait()
        return "done"

    log = JobLog(keep=3)
    async with Dispatcher(workers=2, instruments=[log]) as dispatcher:
        running = await dispatcher.submit(long)
        for i in range(10):
            assert await guarded(await dispatcher.submit(quick, i)) == i
        record = log.find(str(running.id))
        assert record is not None
        assert record.state == "running"
        remembered = [r.id for r in log.records(limit=100)]
        assert len(remembered) <= 3 + 1
        assert remembered.count(str(running.id)) == 1
        release.set()
        assert await guarded(running) == "done"
    record = log.find(str(running.id))
    assert record is not None
    assert (record.state, record.result) == ("succeeded", "'done'")


async def test_finished_times_lists_the_jobs_finished_since() -> None:
    """finished_times(since) gives one wall-clock time per job finished at or after `since`."""
    log = JobLog()
    before = time.time()
    async with Dispatcher(workers=2, instruments=[log]) as dispatcher:
        handles = [await dispatcher.submit(quick, i) for i in range(4)]
        await guarded(asyncio.gather(*handles))
        after = time.time()
        times = log.finished_times(before - 1)
        assert len(times) == 4
        assert all(before - 1 <= t <= after + 1 for t in times)
        assert log.finished_times(after + 60) == []


async def test_a_failure_keeps_its_traceback_from_the_jobs_own_frame() -> None:
    """An error's type is module-qualified; its traceback starts in the job, not asyncpool."""

    async def fails() -> None:
        raise KeyError("missing")

    log = JobLog()
    async with Dispatcher(workers=1, instruments=[log], on_error=lambda h, e: None) as d:
        handle = await d.submit(fails)
        with pytest.raises(KeyError):
            await guarded(handle)
    record = log.find(str(handle.id))
    assert record is not None
    assert record.error is not None
    assert record.error["type"] == "builtins.KeyError"
    traceback = record.error["traceback"]
    assert "in fails" in traceback
    assert "asyncpool/_core.py" not in traceback
    assert "asyncpool/_joblog.py" not in traceback


def test_keep_must_be_a_positive_int() -> None:
    """A bad `keep` is refused at once, naming it."""
    with pytest.raises(ValueError, match="keep"):
        JobLog(keep=0)


async def test_a_thread_jobs_traceback_starts_at_the_job() -> None:
    """A sync job (in a worker thread): its traceback leaves out anyio and asyncio frames."""

    def fails_in_a_thread() -> None:
        raise OSError("disk gone")

    log = JobLog()
    async with Dispatcher(workers=1, instruments=[log], on_error=lambda h, e: None) as d:
        handle = await d.submit(fails_in_a_thread)
        with pytest.raises(OSError, match="disk gone"):
            await guarded(handle)
    record = log.find(str(handle.id))
    assert record is not None
    assert record.error is not None
    lines = record.error["traceback"].splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "in fails_in_a_thread" in lines[1]
    assert "anyio" not in record.error["traceback"]
