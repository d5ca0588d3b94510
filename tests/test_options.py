"""Per-job options (asyncpool._options): `timeout`, and the options a handle records.

The integrations' `grace` (asyncpool._integration.check_grace) is checked
here too where it shares the timeouts' rule for ints too large for a float.

`retry` is in test_retry.py and test_backoff.py, `priority` and `key` in
test_policies.py; what submit refuses is in test_job.py.
"""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from asyncpool import Dispatcher, JobState, JobTimeout, Retry
from asyncpool._integration import check_grace
from tests._jobs import Gate, check_stats

# ------------------------------------------------------------------ timeout


async def test_timeout_fails_the_job_with_job_timeout(fast_clock: None) -> None:
    """A job that runs past its timeout is cancelled, and its handle fails with JobTimeout."""
    saw_cancel = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            saw_cancel.set()
            raise

    async with Dispatcher(workers=1) as d:
        handle = await d.submit(slow, timeout=1.5)
        with pytest.raises(JobTimeout, match=r"timeout of 1.5 s") as caught:
            await handle
    assert isinstance(caught.value, TimeoutError)
    assert saw_cancel.is_set()
    assert handle.state is JobState.FAILED
    assert handle.started_at is not None
    assert handle.finished_at is not None
    assert handle.finished_at - handle.started_at == pytest.approx(1.5)
    stats = check_stats(d)
    assert (stats.failed, stats.timed_out) == (1, 1)


async def test_timeout_bounds_run_time_not_queue_wait(fast_clock: None) -> None:
    """Time spent waiting for a worker does not count against a job's timeout."""
    async with Dispatcher(workers=1) as d:
        first = await d.submit(asyncio.sleep, 5)
        second = await d.submit(asyncio.sleep, 0.5, "done", timeout=1)
    assert first.done()
    assert second.result() == "done"
    assert second.started_at is not None
    assert second.started_at - second.queued_at == pytest.approx(5)


async def test_timeout_dispatcher_default_and_per_job_override(fast_clock: None) -> None:
    """Dispatcher(timeout=...) applies to every job; submit(timeout=...) overrides it."""
    async with Dispatcher(workers=3, timeout=1) as d:
        by_default = await d.submit(asyncio.sleep, 2)
        unlimited = await d.submit(asyncio.sleep, 2, "unlimited", timeout=None)
        longer = await d.submit(asyncio.sleep, 2, "longer", timeout=3)
        with pytest.raises(JobTimeout):
            await by_default
    assert unlimited.result() == "unlimited"
    assert longer.result() == "longer"
    assert d.stats().timed_out == 1


async def test_timeout_own_timeout_error_is_not_a_job_timeout() -> None:
    """A TimeoutError the job raises itself reaches the handle unchanged, not as JobTimeout."""

    async def times_out_itself() -> None:
        raise TimeoutError("the job's own")

    async with Dispatcher(workers=1) as d:
        handle = await d.submit(times_out_itself, timeout=100)
        with pytest.raises(TimeoutError, match="the job's own") as caught:
            await handle
    assert not isinstance(caught.value, JobTimeout)
    assert d.stats().timed_out == 0


async def test_timeout_thread_job_is_waited_for_then_fails() -> None:
    """A blocking job past its timeout: its thread is waited for, then it fails (JobTimeout)."""
    entered = threading.Event()
    release = threading.Event()
    returned = threading.Event()

    def blocking() -> str:
        entered.set()
        release.wait(30)
        returned.set()
        return "discarded"

    async with Dispatcher(workers=1) as d:
        handle = await d.submit(blocking, timeout=0.05)
        await asyncio.to_thread(entered.wait, 30)
        # The timeout's deadline comes before this sleep's, and the loop runs
        # timers in deadline order: when the sleep ends, the timeout has fired.
        # (Real time: the fast clock would jump ahead of the thread.)
        await asyncio.sleep(0.1)
        assert not handle.done()  # the thread still runs: the worker waits for it
        release.set()
        with pytest.raises(JobTimeout):
            await handle
    assert returned.is_set()
    assert d.stats().timed_out == 1


# Regression (issue 16): a timeout of 10**400 (an int too large for a float) raised OverflowError.
async def test_timeout_int_too_large_for_a_float_means_no_limit(fast_clock: None) -> None:
    """A timeout of 10**400 counts as math.inf, no limit: in Dispatcher(), submit() and close()."""

    async def nap(value: str) -> str:
        await asyncio.sleep(10**6)
        return value

    async with Dispatcher(workers=2, timeout=10**400) as d:
        by_default = await d.submit(nap, "default")
        per_job = await d.submit(nap, "per job", timeout=10**400)
        assert by_default.options == per_job.options == {"timeout": math.inf}
        report = await d.close(timeout=10**400)
    assert (by_default.result(), per_job.result()) == ("default", "per job")
    assert len(report) == 0


# Regression (issue 16): a timeout of -10**400 raised OverflowError, not the ValueError naming it.
async def test_timeout_negative_int_too_large_for_a_float_is_refused() -> None:
    """timeout=-10**400 is a ValueError naming timeout, in Dispatcher(), submit() and close()."""
    below = "got a negative int too large for a float"
    with pytest.raises(ValueError, match=f"^timeout must be > 0 seconds .*, {below}$"):
        Dispatcher(workers=1, timeout=-(10**400))
    async with Dispatcher(workers=1) as d:
        with pytest.raises(ValueError, match=f"^timeout must be > 0 seconds .*, {below}$"):
            await d.submit(asyncio.sleep, 0, timeout=-(10**400))
        with pytest.raises(ValueError, match=f"^timeout must be >= 0 seconds, {below}$"):
            await d.close(timeout=-(10**400))
        assert d.stats().submitted == 0


# Regression (issue 16): a grace of 10**400 raised OverflowError (math.isfinite of a huge int).
@pytest.mark.parametrize("grace", [10**400, -(10**400)], ids=["10**400", "-10**400"])
def test_grace_int_too_large_for_a_float_is_refused(grace: int) -> None:
    """A grace must be finite: one too large for a float is a ValueError naming grace."""
    with pytest.raises(
        ValueError, match=r"^grace must be a finite number of seconds >= 0 \("
    ) as caught:
        check_grace(grace)
    assert "int too large for a float" in str(caught.value)


# ---------------------------------------------------- options on the handle


async def test_handle_options_resubmit_the_same_job() -> None:
    """handle.options gives back the options a job runs with, ready to submit it again."""
    policy = Retry(attempts=2)
    async with Dispatcher(workers=1, timeout=30) as d:
        handle = await d.submit(asyncio.sleep, 0, "x", key="k", priority=3, retry=policy)
        plain = await d.submit(Gate(value=1))
        assert handle.options == {"timeout": 30.0, "retry": policy, "priority": 3, "key": "k"}
        assert plain.options == {"timeout": 30.0}
        again = await d.submit(handle.fn, *handle.args, **handle.kwargs, **handle.options)
        assert again.options == handle.options
        plain.cancel()
    async with Dispatcher(workers=1) as d:
        bare = await d.submit(asyncio.sleep, 0)
    assert bare.options == {}
