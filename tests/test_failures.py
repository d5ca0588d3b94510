"""Failures: to the awaiter, or on_error / the log, exactly once; fail_fast; fatal errors."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import asyncpool
from asyncpool import JobState
from tests._jobs import Gate, check_stats


class Boom(Exception):
    pass


async def explode(message: str) -> None:
    raise Boom(message)


async def test_failure_goes_to_the_awaiter_not_the_hook() -> None:
    """An awaited handle gets the job's exception; on_error is not called."""
    reported: list[tuple[asyncpool.JobHandle[object], BaseException]] = []
    gate = Gate()
    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: reported.append((h, e))) as d:
        handle = await d.submit(gate)
        waiter = asyncio.create_task(asyncio.wait_for(handle, None))
        await gate.started.wait()
        await asyncio.sleep(0)  # the waiter is now awaiting the handle
        error = Boom("seen")
        gate.fail(error)
        with pytest.raises(Boom) as caught:
            await waiter
    assert caught.value is error
    assert handle.state is JobState.FAILED
    assert reported == []


async def test_failure_nobody_awaits_goes_to_on_error_once() -> None:
    """A failure with no awaiter at that moment reaches on_error exactly once, with its handle."""
    reported: list[tuple[asyncpool.JobHandle[object], BaseException]] = []
    async with asyncpool.Dispatcher(workers=2, on_error=lambda h, e: reported.append((h, e))) as d:
        handle = await d.submit(explode, "unseen")
        other = await d.submit(asyncio.sleep, 0, "fine")
    assert len(reported) == 1
    assert reported[0][0] is handle
    assert isinstance(reported[0][1], Boom)
    assert other.result() == "fine"
    # Awaiting it later still gives the exception: the handle is the record.
    with pytest.raises(Boom):
        await handle
    assert check_stats(d).failed == 1


async def test_failure_default_hook_logs_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """By default an unawaited failure is logged at ERROR on 'asyncpool', traceback included."""
    caplog.set_level(logging.ERROR, logger="asyncpool")
    async with asyncpool.Dispatcher(workers=1, name="logs") as d:
        handle = await d.submit(explode, "logged")
    records = [r for r in caplog.records if r.name == "asyncpool"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Boom)
    assert "logs" in record.getMessage()
    assert repr(handle) in record.getMessage()


async def test_failure_is_not_reported_again_by_asyncio(caplog: pytest.LogCaptureFixture) -> None:
    """A reported failure does not come back as asyncio's 'exception was never retrieved'."""
    caplog.set_level(logging.ERROR)
    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: None) as d:
        handle = await d.submit(explode, "once")
    del handle
    import gc

    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_failure_hook_that_raises_does_not_kill_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If on_error raises, both errors are logged and the worker goes on with the next job."""
    caplog.set_level(logging.ERROR, logger="asyncpool")

    def bad_hook(handle: asyncpool.JobHandle[object], exc: BaseException) -> None:
        raise RuntimeError("hook broke")

    async with asyncpool.Dispatcher(workers=1, on_error=bad_hook) as d:
        await d.submit(explode, "first")
        after = await d.submit(asyncio.sleep, 0, "next")
    assert after.result() == "next"
    logged = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert [type(e) for e in logged] == [Boom, RuntimeError]


async def test_failure_with_done_callback_counts_as_awaited() -> None:
    """A handle with a done callback is being watched: its failure is not sent to on_error."""
    reported: list[BaseException] = []
    seen: list[BaseException | None] = []
    gate = Gate()
    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: reported.append(e)) as d:
        handle = await d.submit(gate)
        handle.add_done_callback(lambda h: seen.append(h.exception()))
        gate.fail(Boom("watched"))
    assert reported == []
    assert len(seen) == 1
    assert isinstance(seen[0], Boom)


async def test_failure_never_stops_the_pool() -> None:
    """With fail_fast=False, failures leave the other jobs running to completion."""
    async with asyncpool.Dispatcher(workers=2, on_error=lambda h, e: None) as d:
        handles = []
        for i in range(10):
            handles.append(await d.submit(explode, str(i)))
            handles.append(await d.submit(asyncio.sleep, 0))
    states = [h.state for h in handles]
    assert states.count(JobState.FAILED) == 10
    assert states.count(JobState.SUCCEEDED) == 10


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


async def test_fail_fast_without_failure_behaves_normally() -> None:
    """fail_fast with jobs that all succeed simply waits for them."""
    async with asyncpool.Dispatcher(workers=2, fail_fast=True) as d:
        handles = [await d.submit(asyncio.sleep, 0, i) for i in range(10)]
    assert [h.result() for h in handles] == list(range(10))


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


@pytest.mark.slow
@pytest.mark.parametrize("where", ["coroutine", "thread"])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("fatal", ["KeyboardInterrupt", "SystemExit"])
def test_fatal_exception_in_job_propagates(fatal: str, loop: str, where: str) -> None:
    """KeyboardInterrupt and SystemExit raised by a job are never swallowed: they escape."""
    script = Path(__file__).with_name("fatal_job.py")
    done = subprocess.run(
        [sys.executable, str(script), fatal, loop, where],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    # The long job was cancelled on the way out; the fatal one is FAILED.
    assert outcome == {"escaped": fatal, "states": ["CANCELLED", "FAILED"]}
