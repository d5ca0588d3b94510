"""Stats (asyncpool._stats): the counters, rejections and the latency percentiles.

Latency tests run on the fast-forward clock (`fast_clock`), where loop time
is virtual and exact to looptime's resolution (1 microsecond).
"""

from __future__ import annotations

import asyncio
import random

import pytest

import asyncpool
from asyncpool import Dispatcher
from tests._jobs import Gate, check_stats, guarded, instant, let_run


async def test_stats_rejected_counts_queue_full_refusals() -> None:
    """Each submit_nowait refused with QueueFull counts once in rejected; nothing else does."""
    gates = [Gate(value=i) for i in range(3)]
    async with asyncpool.Dispatcher(workers=1, queue_size=1) as d:
        assert d.stats().rejected == 0
        handles = [await d.submit(gates[0])]
        await guarded(gates[0].started.wait())
        handles.append(d.submit_nowait(gates[1]))
        assert check_stats(d).rejected == 0
        for n in range(1, 4):
            with pytest.raises(asyncpool.QueueFull):
                d.submit_nowait(instant)
            s = check_stats(d)
            assert (s.rejected, s.submitted) == (n, 2)
        waiting = asyncio.create_task(d.submit(gates[2]))  # waits: not a rejection
        await let_run()
        assert not waiting.done()
        assert check_stats(d).rejected == 3
        for gate in gates:
            gate.release()
        handles.append(await guarded(waiting))
        assert await guarded(asyncio.gather(*handles)) == [0, 1, 2]
    with pytest.raises(asyncpool.DispatcherClosed):
        d.submit_nowait(instant)
    s = check_stats(d)
    assert (s.rejected, s.submitted, s.succeeded) == (3, 3, 3)


# Regression: a JobTimeout a job raised itself was counted in stats().timed_out.
async def test_timed_out_counts_only_the_dispatchers_own_timeouts() -> None:
    """A JobTimeout a job raises itself (say, from another dispatcher's handle) is not counted."""

    async def reraise() -> None:
        raise asyncpool.JobTimeout("from elsewhere")

    async with Dispatcher(workers=1, on_error=lambda h, e: None) as d:
        await d.submit(reraise, timeout=10)
    assert (d.stats().timed_out, d.stats().failed) == (0, 1)


# ------------------------------------------------------------------ latency


async def test_stats_latencies_are_none_before_the_first_sample() -> None:
    """queue_wait and run_time are None until a job has run, then cover it."""
    gate = Gate()
    async with asyncpool.Dispatcher(workers=1) as d:
        s = check_stats(d)
        assert (s.queue_wait, s.run_time) == (None, None)
        handle = await d.submit(gate)
        s = check_stats(d)
        assert (s.queue_wait, s.run_time) == (None, None)  # queued, not run
        await guarded(gate.started.wait())
        assert check_stats(d).run_time is None  # running: no run time yet
        gate.release()
        await guarded(handle)
        s = check_stats(d)
        assert s.queue_wait is not None
        assert s.run_time is not None
        assert (s.queue_wait.samples, s.run_time.samples) == (1, 1)
        assert s.queue_wait.p50 >= 0
        assert s.run_time.p50 >= 0


async def test_stats_run_time_percentiles_are_nearest_rank(fast_clock: None) -> None:
    """100 runs of 1..100 ms of loop time: p50 = 50 ms, p95 = 95 ms, p99 = 99 ms exactly."""
    durations = [i / 1000 for i in range(1, 101)]
    random.Random(7).shuffle(durations)
    async with asyncpool.Dispatcher(workers=10) as d:
        for t in durations:
            await d.submit(asyncio.sleep, t)
        await d.join()
        s = check_stats(d)
    assert s.run_time is not None
    assert s.run_time.samples == 100
    assert s.run_time.p50 == pytest.approx(0.050, abs=1e-6)
    assert s.run_time.p95 == pytest.approx(0.095, abs=1e-6)
    assert s.run_time.p99 == pytest.approx(0.099, abs=1e-6)


async def test_stats_queue_wait_percentiles_are_nearest_rank(fast_clock: None) -> None:
    """One worker, 100 jobs of 1 s submitted together: waits 0..99 s, p50 49, p95 94, p99 98."""
    async with asyncpool.Dispatcher(workers=1, queue_size=0) as d:
        for _ in range(100):
            await d.submit(asyncio.sleep, 1)
        await d.join()
        s = check_stats(d)
    assert s.queue_wait is not None
    assert s.queue_wait.samples == 100
    assert s.queue_wait.p50 == pytest.approx(49, abs=1e-6)
    assert s.queue_wait.p95 == pytest.approx(94, abs=1e-6)
    assert s.queue_wait.p99 == pytest.approx(98, abs=1e-6)


async def test_stats_latency_window_keeps_only_the_last_1024_samples(fast_clock: None) -> None:
    """The percentiles cover the last 1024 samples only: older samples drop out of the window."""
    slow, fast = 1024, 4096  # every one of the first 1024 jobs is sampled, then one in four
    async with asyncpool.Dispatcher(workers=1, queue_size=0) as d:
        for _ in range(slow):
            await d.submit(asyncio.sleep, 1)
        for _ in range(fast):
            await d.submit(asyncio.sleep, 0.001)
        await d.join()
        s = check_stats(d)
    assert s.run_time is not None
    assert s.queue_wait is not None
    assert (s.run_time.samples, s.queue_wait.samples) == (1024, 1024)
    # Had the slow ones stayed in the window, every percentile would be 1 s.
    for value in (s.run_time.p50, s.run_time.p95, s.run_time.p99):
        assert value == pytest.approx(0.001, abs=1e-6)
    # The kept waits are those of fast jobs, which all queued behind 1024 s of slow ones.
    assert s.queue_wait.p50 > slow


async def test_stats_latency_samples_one_job_in_four_after_the_first_1024(
    fast_clock: None,
) -> None:
    """After the first 1024 jobs, one job in four (id a multiple of 4) is sampled."""
    async with asyncpool.Dispatcher(workers=1, queue_size=0) as d:
        for _ in range(1024):
            await d.submit(asyncio.sleep, 0.001)
        for _ in range(40):
            await d.submit(asyncio.sleep, 1)
        await d.join()
        s = check_stats(d)
        # Four more slow jobs (ids 1065-1068): one more sample, id 1068.
        for _ in range(4):
            await d.submit(asyncio.sleep, 1)
        await d.join()
        more = check_stats(d)
    assert s.run_time is not None
    assert s.run_time.samples == 1024
    # 10 of the 40 slow jobs are sampled: under 1% of the window, so p99 stays
    # fast (sampling all 40 would make it 3.9% of the window, and p99 1 s).
    assert s.run_time.p99 == pytest.approx(0.001, abs=1e-6)
    # Slow jobs were sampled (the window's largest sample is 1 s): with one more
    # slow sample they are 11 of 1024, over 1% of the window, and p99 is 1 s.
    assert more.run_time is not None
    assert more.run_time.p99 == pytest.approx(1, abs=1e-6)


async def test_stats_run_time_counts_failures_but_not_cancelled_runs(fast_clock: None) -> None:
    """run_time samples runs that succeed or fail; a run cut short by cancel() is left out."""
    errors: list[BaseException] = []

    async def fail_after(seconds: float) -> None:
        await asyncio.sleep(seconds)
        raise ValueError("boom")

    async with asyncpool.Dispatcher(workers=3, on_error=lambda h, e: errors.append(e)) as d:
        ok = await d.submit(asyncio.sleep, 1)
        bad = await d.submit(fail_after, 2)
        doomed = await d.submit(asyncio.sleep, 100)
        await asyncio.sleep(5)  # virtual
        assert doomed.cancel()
        await asyncio.wait([ok, bad, doomed])
        s = check_stats(d)
    assert ok.result() is None
    assert isinstance(bad.exception(), ValueError)
    assert doomed.cancelled()
    assert s.run_time is not None
    assert s.run_time.samples == 2
    assert (s.run_time.p50, s.run_time.p99) == pytest.approx((1, 2), abs=1e-6)
    assert (s.succeeded, s.failed, s.cancelled) == (1, 1, 1)
    assert len(errors) == 1
