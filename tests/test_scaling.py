"""Scaling: `resize()`, the rate limit, re-entrant `submit` and the latency/rejection stats.

Jobs block on gates the test controls, so "how many run at once" is exact:
a job that starts stays running until the test releases it, so any job that
starts when it should not is still counted by `Peak` at the end. Rate-limit
and latency tests run on the fast-forward clock (`fast_clock`), where loop
time is virtual and exact to looptime's resolution (1 microsecond).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread
import pytest

import asyncpool
from asyncpool import JobHandle, JobState
from tests._jobs import Gate, check_stats, state_of

T = TypeVar("T")

# Real seconds a guarded await may take. Only a failing test (a hang, such as
# the deadlock re-entrant submit prevents) ever gets there: without the guard
# pytest-timeout would end the whole session instead of failing one test.
GUARD = 10.0


async def guarded(awaitable: Awaitable[T]) -> T:
    """Await `awaitable`, failing instead of hanging if it never completes."""
    async with asyncio.timeout(GUARD):
        return await awaitable


async def let_run(steps: int = 5) -> None:
    """Let ready tasks take a few steps, to check that something does *not* happen.

    A bounded number of loop iterations, never a measure of time.
    """
    for _ in range(steps):
        await asyncio.sleep(0)


@dataclass
class Peak:
    """Counts the tracked jobs running now and the most that ever ran at once."""

    running: int = 0
    peak: int = 0


async def tracked(peak: Peak, gate: Gate) -> object:
    """A job counted by `peak` while it runs; it runs until its gate is released."""
    peak.running += 1
    peak.peak = max(peak.peak, peak.running)
    try:
        return await gate.process()
    finally:
        peak.running -= 1


async def instant() -> None:
    """A job that returns at once."""


def check_counts(dispatcher: asyncpool.Dispatcher) -> asyncpool.Stats:
    """`check_stats` for a shrink in progress.

    While busy workers are on their way out, more jobs run than `workers`
    (resize's documented contract), so `idle + busy == workers` is suspended;
    the job identity still holds and `idle` is `workers - busy`, never negative.
    """
    s = dispatcher.stats()
    assert s.submitted == s.queued + s.busy + s.succeeded + s.failed + s.cancelled, s
    assert s.idle == max(0, s.workers - s.busy), s
    return s


def start_times(handles: Sequence[JobHandle[Any]]) -> list[float]:
    """The handles' start times on the loop clock, sorted."""
    times = [h.started_at for h in handles]
    known = [t for t in times if t is not None]
    assert len(known) == len(times), "a job never started"
    return sorted(known)


def states(handles: Sequence[JobHandle[Any]]) -> list[JobState]:
    """The handles' states, read afresh."""
    return [h.state for h in handles]


def worker_tasks() -> list[asyncio.Task[Any]]:
    """The worker tasks alive now (of any dispatcher)."""
    return [t for t in asyncio.all_tasks() if " worker " in t.get_name() and not t.done()]


# ---------------------------------------------------------------- resize: growing


async def test_resize_grow_starts_workers_at_once() -> None:
    """1 busy worker and a backlog, resize(4): exactly 4 jobs run at once, the rest wait."""
    peak = Peak()
    gates = [Gate(value=i) for i in range(8)]
    async with asyncpool.Dispatcher(workers=1) as d:
        handles = [await d.submit(tracked, peak, g) for g in gates]
        await guarded(gates[0].started.wait())
        assert peak.running == 1
        d.resize(4)
        for gate in gates[1:4]:
            await guarded(gate.started.wait())
        await let_run()
        assert peak.running == 4
        assert not any(g.started.is_set() for g in gates[4:])
        s = check_stats(d)
        assert (s.workers, s.busy, s.idle, s.queued) == (4, 4, 0, 4)
        assert len(d._workers) == 4
        assert len(worker_tasks()) == 4
        for gate in gates:
            gate.release()
    assert [h.result() for h in handles] == list(range(8))
    assert peak.peak == 4


async def test_resize_grow_never_runs_more_than_the_new_size() -> None:
    """After growing 1 -> 4 with a backlog, never more than 4 jobs run at once, to the end."""
    peak = Peak()
    gates = [Gate(value=i) for i in range(16)]
    async with asyncpool.Dispatcher(workers=1) as d:
        handles = [await d.submit(tracked, peak, g) for g in gates]
        await guarded(gates[0].started.wait())
        d.resize(4)
        for i, gate in enumerate(gates):
            # Jobs start in FIFO order, one as each ends: jobs i..i+3 run now.
            for running in gates[i : i + 4]:
                await guarded(running.started.wait())
            await let_run()  # a fifth job would start here, and stay counted
            assert peak.running == min(4, len(gates) - i)
            check_stats(d)
            gate.release()
            assert await guarded(handles[i]) == i
        assert len(d._workers) == 4
    assert peak.peak == 4
    assert all(g.runs == 1 for g in gates)


async def test_resize_grow_wakes_blocked_submitters() -> None:
    """A submitter waiting on a full queue gets in once the new workers take queued jobs."""
    gates = [Gate(value=i) for i in range(4)]
    async with asyncpool.Dispatcher(workers=1, queue_size=2) as d:
        first = await d.submit(gates[0])
        await guarded(gates[0].started.wait())
        queued = [await d.submit(gates[1]), await d.submit(gates[2])]
        blocked = asyncio.create_task(d.submit(gates[3]))
        await let_run()
        assert not blocked.done()
        assert check_stats(d).queued == 2

        d.resize(2)  # the new worker takes gate 1, which frees a place
        last = await guarded(blocked)
        await guarded(gates[1].started.wait())
        s = check_stats(d)
        assert (s.busy, s.queued, s.submitted) == (2, 2, 4)
        for gate in gates:
            gate.release()
        results = [await h for h in (first, *queued, last)]
    assert results == [0, 1, 2, 3]


# -------------------------------------------------------------- resize: shrinking


async def test_resize_shrink_retires_idle_workers_at_once() -> None:
    """resize(1) on 4 idle workers stops 3 of them now; afterwards one job runs at a time."""
    peak = Peak()
    gates = [Gate(value=i) for i in range(5)]
    async with asyncpool.Dispatcher(workers=4) as d:
        before = [w.task for w in d._workers]
        d.resize(1)
        s = check_stats(d)
        assert (s.workers, s.idle, s.busy) == (1, 1, 0)
        assert len(d._workers) == 1
        assert d._retiring == 0  # nobody was busy: nobody leaves later
        retired = [t for t in before if t is not d._workers[0].task]
        assert len(retired) == 3
        await guarded(asyncio.gather(*(t for t in retired if t is not None)))

        handles = [await d.submit(tracked, peak, g) for g in gates]
        for i, gate in enumerate(gates):
            await guarded(gate.started.wait())
            await let_run()
            assert peak.running == 1
            assert not any(g.started.is_set() for g in gates[i + 1 :])
            check_stats(d)
            gate.release()
            assert await guarded(handles[i]) == i
    assert peak.peak == 1


async def test_resize_shrink_prefers_idle_workers_over_busy_ones() -> None:
    """2 busy + 2 idle, resize(2): the idle ones go, the busy ones keep running, nothing waits."""
    busy = [Gate(value=i) for i in range(2)]
    peak = Peak()
    later = [Gate(value=10 + i) for i in range(4)]
    async with asyncpool.Dispatcher(workers=4) as d:
        busy_handles = [await d.submit(tracked, peak, g) for g in busy]
        for gate in busy:
            await guarded(gate.started.wait())
        d.resize(2)
        assert len(d._workers) == 2  # the idle two left at once
        assert d._retiring == 0  # so no busy worker has to leave
        s = check_stats(d)
        assert (s.workers, s.busy, s.idle) == (2, 2, 0)

        later_handles = [await d.submit(tracked, peak, g) for g in later]
        await let_run()
        assert not any(g.started.is_set() for g in later)  # the pool is full
        assert peak.running == 2
        busy[0].release()
        assert await guarded(busy_handles[0]) == 0
        # The busy worker that finished stays and takes the next job at once.
        assert state_of(later_handles[0]) is JobState.RUNNING
        assert len(d._workers) == 2
        for gate in (busy[1], *later):
            gate.release()
    assert [h.result() for h in later_handles] == [10, 11, 12, 13]
    assert peak.peak == 2
    assert not any(g.saw_cancel for g in busy)


async def test_resize_shrink_lets_busy_workers_finish_their_job() -> None:
    """4 busy, resize(1): no running job is cancelled; queued jobs then start one at a time."""
    old = [Gate(value=i) for i in range(4)]
    peak = Peak()
    new = [Gate(value=10 + i) for i in range(3)]
    async with asyncpool.Dispatcher(workers=4) as d:
        old_handles = [await d.submit(g) for g in old]
        for gate in old:
            await guarded(gate.started.wait())
        new_handles = [await d.submit(tracked, peak, g) for g in new]
        d.resize(1)
        s = check_counts(d)
        assert (s.workers, s.busy, s.idle, s.queued) == (1, 4, 0, 3)
        assert len(d._workers) == 4  # busy workers leave only after their job
        assert all(state_of(h) is JobState.RUNNING for h in old_handles)

        for n in range(3):
            old[n].release()
            assert await guarded(old_handles[n]) == n
            # Its worker left instead of taking a queued job: still too many run.
            assert len(d._workers) == 3 - n
            assert states(new_handles) == [JobState.QUEUED] * 3
            s = check_counts(d)
            assert (s.busy, s.queued, s.idle) == (3 - n, 3, 0)

        old[3].release()
        assert await guarded(old_handles[3]) == 3
        for i, gate in enumerate(new):
            await guarded(gate.started.wait())
            await let_run()
            assert peak.running == 1
            assert check_stats(d).busy == 1
            gate.release()
            assert await guarded(new_handles[i]) == 10 + i
        assert len(d._workers) == 1
    assert not any(g.saw_cancel for g in old)
    assert peak.peak == 1


@pytest.mark.parametrize("finished_before_grow", [0, 1, 2, 3])
async def test_resize_shrink_then_grow_back_reuses_the_leaving_workers(
    finished_before_grow: int,
) -> None:
    """4 busy -> resize(1) -> resize(4) before they all end: never more than 4 run or exist."""
    peak = Peak()
    gates = [Gate(value=i) for i in range(12)]
    async with asyncpool.Dispatcher(workers=4) as d:
        handles = [await d.submit(tracked, peak, g) for g in gates]
        for gate in gates[:4]:
            await guarded(gate.started.wait())
        d.resize(1)
        for i in range(finished_before_grow):
            gates[i].release()
            await guarded(handles[i])
        assert len(d._workers) == 4 - finished_before_grow
        d.resize(4)
        assert len(d._workers) == 4
        assert d._retiring == 0
        # Each worker that left was replaced: jobs start at once, up to 4.
        for gate in gates[finished_before_grow : finished_before_grow + 4]:
            await guarded(gate.started.wait())
        await let_run()
        assert peak.running == 4
        assert len(worker_tasks()) == 4
        check_stats(d)

        for i in range(finished_before_grow, len(gates)):
            for running in gates[i : i + 4]:
                await guarded(running.started.wait())
            await let_run()
            assert peak.running == min(4, len(gates) - i)
            gates[i].release()
            assert await guarded(handles[i]) == i
        assert len(d._workers) == 4
        assert len(worker_tasks()) == 4
    assert peak.peak == 4


async def test_resize_stats_follow_every_size() -> None:
    """stats().workers is the new size right after each resize; idle is workers - busy, >= 0."""
    gates = [Gate() for _ in range(2)]
    async with asyncpool.Dispatcher(workers=2) as d:
        for gate in gates:
            await d.submit(gate)
            await guarded(gate.started.wait())
        for size in (3, 1, 5, 2, 2, 6, 1):
            d.resize(size)
            s = check_counts(d)
            assert (s.workers, d.workers, s.busy) == (size, size, 2)
            assert s.idle == max(0, size - 2)
            assert s.idle >= 0
        for gate in gates:
            gate.release()
        await d.join()
        s = check_stats(d)
        assert (s.workers, s.idle, s.busy, s.succeeded) == (1, 1, 0, 2)
        assert len(d._workers) == 1


@pytest.mark.parametrize(
    ("size", "error"),
    [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)],
)
async def test_resize_rejects_bad_sizes(size: Any, error: type[Exception]) -> None:
    """resize() refuses a size that is not an int >= 1, naming `workers`, and changes nothing."""
    async with asyncpool.Dispatcher(workers=2) as d:
        with pytest.raises(error, match="workers"):
            d.resize(size)
        assert check_stats(d).workers == 2
        assert len(d._workers) == 2


async def test_resize_refuses_a_dispatcher_that_is_not_running() -> None:
    """resize() before start, while closing and after close raises DispatcherClosed."""
    d = asyncpool.Dispatcher(workers=2)
    with pytest.raises(asyncpool.DispatcherClosed, match="not started"):
        d.resize(3)
    await d.start()
    gate = Gate()
    handle = await d.submit(gate)
    await guarded(gate.started.wait())
    closing = asyncio.create_task(d.close())
    await let_run()
    assert not closing.done()
    with pytest.raises(asyncpool.DispatcherClosed, match="closing"):
        d.resize(3)
    gate.release()
    await guarded(closing)
    assert handle.result() is None
    with pytest.raises(asyncpool.DispatcherClosed, match="closed"):
        d.resize(3)
    assert check_stats(d).workers == 2


async def test_resize_grow_lets_more_threads_run_at_once() -> None:
    """workers=1 runs one blocking job; after resize(3), three run at once in three threads."""
    barrier = threading.Barrier(3)  # passes only when three threads wait on it together
    started = threading.Semaphore(0)

    def meet() -> int:
        started.release()
        barrier.wait(timeout=GUARD)
        return threading.get_ident()

    async with asyncpool.Dispatcher(workers=1) as d:
        handles = [await d.submit(meet) for _ in range(3)]
        assert await anyio.to_thread.run_sync(started.acquire, True, GUARD)
        s = check_stats(d)
        assert (s.busy, s.queued) == (1, 2)
        d.resize(3)
        threads = [await guarded(h) for h in handles]
    assert len(set(threads)) == 3
    assert threading.get_ident() not in threads


class Hold:
    """A sync job that blocks its thread until released."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.started = threading.Event()
        self.go = threading.Event()

    def process(self) -> int:
        self.started.set()
        assert self.go.wait(GUARD), "never released"
        return self.value


async def test_resize_shrink_limits_threads_once_busy_ones_end() -> None:
    """3 blocking jobs running, resize(1): they finish; then one thread job runs at a time."""
    old = [Hold(i) for i in range(3)]
    new = [Hold(10 + i) for i in range(3)]
    async with asyncpool.Dispatcher(workers=3) as d:
        old_handles = [await d.submit(job) for job in old]
        for job in old:
            assert await anyio.to_thread.run_sync(job.started.wait, GUARD)
        new_handles = [await d.submit(job) for job in new]
        d.resize(1)
        assert d._thread_limiter is not None
        assert d._thread_limiter.total_tokens == 1
        for i, job in enumerate(old):
            assert states(new_handles) == [JobState.QUEUED] * 3
            job.go.set()
            assert await guarded(old_handles[i]) == i
        for i, job in enumerate(new):
            expected = [JobState.SUCCEEDED] * i + [JobState.RUNNING] + [JobState.QUEUED] * (2 - i)
            assert states(new_handles) == expected
            assert check_stats(d).busy == 1
            job.go.set()
            assert await guarded(new_handles[i]) == 10 + i


@pytest.mark.parametrize("cancel", [False, True])
async def test_close_after_resizes_leaves_every_job_final(cancel: bool) -> None:
    """Closing while busy workers are on their way out ends every job and every worker task."""
    gates = [Gate(value=i) for i in range(10)]
    d = asyncpool.Dispatcher(workers=2)
    await d.start()
    handles = [await d.submit(g) for g in gates]
    d.resize(5)
    for gate in gates[:5]:
        await guarded(gate.started.wait())
    d.resize(1)  # 5 busy: 4 of them leave when their job ends...
    d.resize(3)  # ...now only 2 of them
    assert len(d._workers) == 5
    tasks = [w.task for w in d._workers]
    if cancel:
        report = await guarded(d.close(cancel=True))
        assert all(h.cancelled() for h in handles)
        assert set(report.interrupted) == set(handles[:5])
        assert set(report.never_started) == set(handles[5:])
        assert all(g.saw_cancel for g in gates[:5])
    else:
        closing = asyncio.create_task(d.close())
        for gate in gates:
            gate.release()
        report = await guarded(closing)
        assert [h.result() for h in handles] == list(range(10))
        assert len(report) == 0
    assert all(t is not None and t.done() for t in tasks)
    assert worker_tasks() == []
    s = d.stats()
    assert s.submitted == s.succeeded + s.failed + s.cancelled == 10
    assert (s.queued, s.busy) == (0, 0)


# A job handed to an idle worker's inbox by submit has not started yet:
# a shrink must take it back rather than let it start in a full pool.
async def test_resize_shrink_does_not_start_a_job_already_handed_to_a_worker() -> None:
    """A job routed to a worker but not yet started when the pool shrinks to 1 waits its turn."""
    running, handed = Gate(value=1), Gate(value=2)
    async with asyncpool.Dispatcher(workers=2) as d:
        first = await d.submit(running)
        await guarded(running.started.wait())
        second = await d.submit(handed)
        # A worker is idle, so submit handed the job to its inbox at once.
        # Caught between routing and starting (the worker has not run yet).
        assert second._was_handed_over()
        assert state_of(second) is JobState.QUEUED
        d.resize(1)
        await let_run()
        try:
            # One job runs and the pool has one worker: the second must wait.
            assert state_of(second) is JobState.QUEUED
            assert check_counts(d).busy == 1
        finally:
            running.release()
            handed.release()
    assert (first.result(), second.result()) == (1, 2)


async def test_resize_shrink_gives_back_the_rate_token_of_a_job_it_takes_back(
    fast_clock: None,
) -> None:
    """A job taken back from a leaving worker did not start: its rate token is returned."""
    loop = asyncio.get_running_loop()
    running, handed = Gate(value=1), Gate(value=2)
    # Two tokens, then one every 1000 s: a lost token would delay the second job for ever.
    async with asyncpool.Dispatcher(workers=2, rate_limit=0.001, rate_burst=2) as d:
        first = await d.submit(running)
        await guarded(running.started.wait())
        second = await d.submit(handed)
        # A worker is idle, so submit handed the job to its inbox at once.
        assert second._was_handed_over()
        d.resize(1)
        await let_run()
        released_at = loop.time()
        running.release()
        await guarded(handed.started.wait())
        assert loop.time() == pytest.approx(released_at)  # at once: the token came back
        handed.release()
    assert (first.result(), second.result()) == (1, 2)


# -------------------------------------------------------------------- rate limit


@pytest.mark.parametrize(
    ("rate", "burst", "jobs"), [(10.0, 1, 30), (5.0, 3, 20), (40.0, 8, 100), (2.5, 2, 12)]
)
async def test_rate_limit_caps_starts_in_every_window(
    fast_clock: None, rate: float, burst: int, jobs: int
) -> None:
    """However many workers are free, any span of L seconds holds at most burst + rate*L starts."""
    loop = asyncio.get_running_loop()
    async with asyncpool.Dispatcher(workers=8, rate_limit=rate, rate_burst=burst) as d:
        submitted_at = loop.time()
        handles = [await d.submit(instant) for _ in range(jobs)]
    starts = start_times(handles)
    for i in range(len(starts)):
        for j in range(i, len(starts)):
            assert j - i + 1 <= burst + rate * (starts[j] - starts[i]) + 1e-6, (i, j, starts)
    # The limit bit: the first `burst` start at once, then one every 1/rate s.
    assert starts[0] == pytest.approx(submitted_at, abs=1e-6)
    assert starts[-1] - starts[0] >= (jobs - burst) / rate - 1e-6
    assert starts[-1] - starts[0] == pytest.approx((jobs - burst) / rate, abs=1e-5)
    assert check_stats(d).succeeded == jobs


async def test_rate_limit_thirty_jobs_at_ten_per_second_take_2_9_seconds(
    fast_clock: None,
) -> None:
    """rate_limit=10, burst 1, 8 workers: 30 instant jobs start over 2.9 s of loop time."""
    loop = asyncio.get_running_loop()
    async with asyncpool.Dispatcher(workers=8, rate_limit=10) as d:
        began = loop.time()
        handles = [await d.submit(instant) for _ in range(30)]
        await d.join()
        assert loop.time() - began >= 2.9 - 1e-6
    starts = start_times(handles)
    assert starts[-1] - began >= 2.9 - 1e-6
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([0.1] * 29, abs=1e-5)


async def test_rate_limit_burst_starts_at_once_then_spaces_starts(fast_clock: None) -> None:
    """rate_limit=5, rate_burst=3: the first 3 start at the same moment, then one every 0.2 s."""
    loop = asyncio.get_running_loop()
    async with asyncpool.Dispatcher(workers=8, rate_limit=5, rate_burst=3) as d:
        began = loop.time()
        handles = [await d.submit(instant) for _ in range(9)]
    starts = [t - began for t in start_times(handles)]
    assert starts[:3] == [0.0, 0.0, 0.0]
    assert starts == pytest.approx([0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2], abs=1e-6)


async def test_rate_limit_refills_up_to_burst_not_beyond(fast_clock: None) -> None:
    """After a quiet spell the bucket holds at most `burst` starts; a short one refills in part."""
    loop = asyncio.get_running_loop()
    async with asyncpool.Dispatcher(workers=8, rate_limit=5, rate_burst=3) as d:

        async def wave(n: int) -> list[float]:
            began = loop.time()
            handles = [await d.submit(instant) for _ in range(n)]
            await guarded(asyncio.gather(*handles))
            return [t - began for t in start_times(handles)]

        assert await wave(3) == pytest.approx([0, 0, 0], abs=1e-6)
        await asyncio.sleep(10)  # virtual: 50 tokens' worth, but the bucket holds 3
        assert await wave(6) == pytest.approx([0, 0, 0, 0.2, 0.4, 0.6], abs=1e-6)
        await asyncio.sleep(0.4)  # the bucket was empty: 2 tokens now
        assert await wave(4) == pytest.approx([0, 0, 0.2, 0.4], abs=1e-6)
        check_stats(d)


async def test_rate_limit_composes_with_the_worker_limit() -> None:
    """workers=2, rate limit 1000/s: at most 2 run; a freed worker starts the next at once."""
    peak = Peak()
    gates = [Gate(value=i) for i in range(8)]
    async with asyncpool.Dispatcher(workers=2, rate_limit=1000, rate_burst=10) as d:
        handles = [await d.submit(tracked, peak, g) for g in gates]
        for i, gate in enumerate(gates):
            for running in gates[i : i + 2]:
                await guarded(running.started.wait())
            await let_run()
            assert peak.running == min(2, len(gates) - i)
            assert check_stats(d).busy == min(2, len(gates) - i)
            gate.release()
            assert await guarded(handles[i]) == i
            if i + 2 < len(gates):  # a token is there: the next job started with no wait
                assert state_of(handles[i + 2]) is JobState.RUNNING
    assert peak.peak == 2


@pytest.mark.parametrize(
    ("workers", "rate", "burst", "expected"),
    [
        (2, 10.0, 5, [0, 0, 1, 1, 2, 2]),  # workers are the limit
        (8, 2.0, 1, [0, 0.5, 1, 1.5, 2, 2.5]),  # the rate is the limit
        (2, 1.0, 2, [0, 0, 1, 2, 3, 4]),  # both, in turn
    ],
)
async def test_rate_limit_and_worker_limit_both_hold(
    fast_clock: None, workers: int, rate: float, burst: int, expected: list[float]
) -> None:
    """A job starts when both a worker and a token are free, not before."""
    loop = asyncio.get_running_loop()
    async with asyncpool.Dispatcher(workers=workers, rate_limit=rate, rate_burst=burst) as d:
        began = loop.time()
        handles = [await d.submit(asyncio.sleep, 1) for _ in range(6)]
    starts = [t - began for t in start_times(handles)]
    assert starts == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------ re-entrancy


async def test_reentrant_submit_from_jobs_never_deadlocks_on_a_full_queue() -> None:
    """Jobs on every worker that await submit() on a full queue go on, queueing beyond its size."""
    go = asyncio.Event()
    finish = asyncio.Event()
    parent_started = [asyncio.Event() for _ in range(2)]
    submitted_all = [asyncio.Event() for _ in range(2)]
    children: list[JobHandle[int]] = []

    async def child(n: int) -> int:
        return n

    async with asyncpool.Dispatcher(workers=2, queue_size=2) as d:

        async def parent(p: int) -> int:
            parent_started[p].set()
            await go.wait()
            for i in range(3):
                # The queue is full and every worker runs a parent: without the
                # re-entrancy rule nobody would ever make room.
                children.append(await d.submit(child, 10 * p + i))
            submitted_all[p].set()
            await finish.wait()
            return p

        parents = [await d.submit(parent, p) for p in range(2)]
        for event in parent_started:
            await guarded(event.wait())
        fillers = [Gate(value=100 + i) for i in range(2)]
        filler_handles = [d.submit_nowait(g) for g in fillers]
        with pytest.raises(asyncpool.QueueFull):
            d.submit_nowait(instant)
        go.set()
        for event in submitted_all:
            await guarded(event.wait())
        s = check_stats(d)
        assert (s.busy, s.queued) == (2, 8)
        assert s.queued > d.queue_size  # the children were queued beyond the bound

        finish.set()
        for gate in fillers:
            gate.release()
        assert await guarded(asyncio.gather(*parents)) == [0, 1]
        assert await guarded(asyncio.gather(*filler_handles)) == [100, 101]
        assert sorted(await guarded(asyncio.gather(*children))) == [0, 1, 2, 10, 11, 12]
    s = check_stats(d)
    assert (s.submitted, s.succeeded, s.queued, s.busy) == (10, 10, 0, 0)


async def test_reentrant_submit_from_a_task_the_job_started() -> None:
    """A task created by a job (and awaited by it) does not wait for room on a full queue either."""
    started, go = asyncio.Event(), asyncio.Event()
    filler = Gate(value="filler")

    async with asyncpool.Dispatcher(workers=1, queue_size=1) as d:

        async def parent() -> tuple[JobHandle[int], int]:
            started.set()
            await go.wait()

            async def submit_child() -> JobHandle[int]:
                return await d.submit(asyncio.sleep, 0, 7)

            child = await asyncio.create_task(submit_child())
            return child, d.stats().queued

        handle = await d.submit(parent)
        await guarded(started.wait())
        filler_handle = d.submit_nowait(filler)  # the queue (size 1) is full
        with pytest.raises(asyncpool.QueueFull):
            d.submit_nowait(instant)
        go.set()
        child, queued_then = await guarded(handle)
        assert queued_then == 2  # the filler and the child: beyond queue_size
        filler.release()
        assert await guarded(filler_handle) == "filler"
        assert await guarded(child) == 7
    s = check_stats(d)
    assert (s.submitted, s.succeeded) == (3, 3)


async def test_reentrant_submit_nowait_from_a_job_still_raises_queue_full() -> None:
    """submit_nowait has no room to wait for, so from a job on a full queue it raises QueueFull."""
    filler = Gate()

    async with asyncpool.Dispatcher(workers=1, queue_size=1) as d:

        async def parent() -> str:
            await d.submit(filler)  # fills the queue, from inside: no waiting
            try:
                d.submit_nowait(instant)
            except asyncpool.QueueFull:
                return "refused"
            return "accepted"

        handle = await d.submit(parent)
        assert await guarded(handle) == "refused"
        s = check_stats(d)
        # The parent's worker went on to the filler.
        assert (s.rejected, s.submitted, s.busy, s.queued) == (1, 2, 1, 0)
        filler.release()


async def test_reentrant_rule_leaves_outside_submitters_waiting() -> None:
    """The test body and jobs of another dispatcher still wait for room; only own jobs bypass."""
    own_started, go, foreign_started = asyncio.Event(), asyncio.Event(), asyncio.Event()
    filler = Gate(value="filler")

    async with (
        asyncpool.Dispatcher(workers=1, queue_size=1) as d,
        asyncpool.Dispatcher(workers=1) as other,
    ):

        async def own_job() -> tuple[JobHandle[None], int]:
            own_started.set()
            await go.wait()
            return await d.submit(instant), d.stats().queued

        async def foreign_job() -> JobHandle[None]:
            foreign_started.set()
            return await d.submit(instant)

        first = await d.submit(own_job)
        await guarded(own_started.wait())
        filler_handle = d.submit_nowait(filler)  # the queue (size 1) is full
        outside = asyncio.create_task(d.submit(instant))
        foreign = await other.submit(foreign_job)
        await guarded(foreign_started.wait())
        await let_run()
        assert not outside.done()
        assert not foreign.done()
        assert check_stats(d).submitted == 2

        go.set()  # the job of `d` gets in at once, past the waiting submitters
        inner, queued_then = await guarded(first)
        assert queued_then == 2  # the filler and its own job: beyond queue_size
        await let_run()
        assert not outside.done()
        assert not foreign.done()
        s = check_stats(d)  # the job's worker went on to the filler; the queue is full
        assert (s.submitted, s.busy, s.queued) == (3, 1, 1)

        filler.release()  # room comes as jobs end; the waiting submitters get it
        outer = await guarded(outside)
        from_other = await guarded(foreign)
        results = await guarded(asyncio.gather(filler_handle, inner, outer, from_other))
        assert list(results) == ["filler", None, None, None]
    s = check_stats(d)
    assert (s.submitted, s.succeeded) == (5, 5)


# ------------------------------------------------------------------------- stats


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
    assert s.run_time is not None
    assert s.run_time.samples == 1024
    # 10 of the 40 slow jobs are sampled: under 1% of the window, so p99 stays
    # fast (sampling all 40 would make it 3.9% of the window, and p99 1 s).
    assert s.run_time.p99 == pytest.approx(0.001, abs=1e-6)
    assert max(d._run_samples) == pytest.approx(1)


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
