"""Large pools: workers above CORE_WORKERS start as jobs need them and retire when idle.

Also the default job queue, which grows with the pool above 64 workers.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import tracemalloc

import pytest

import asyncpool
from asyncpool import Dispatcher
from asyncpool._core import CORE_WORKERS, IDLE_SWEEP
from asyncpool._options import default_queue_size
from asyncpool._testing import internals
from tests._jobs import GUARD, all_idle, check_stats


def started(dispatcher: Dispatcher) -> int:
    return len(internals(dispatcher).worker_tasks)


class Held:
    """Jobs that all wait at one barrier: they can end only if they all run at once."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.barrier = asyncio.Barrier(count)
        self.release = asyncio.Event()
        self.all_running = asyncio.Event()
        self.order: list[int] = []

    async def job(self, i: int) -> int:
        self.order.append(i)
        if len(self.order) == self.count:
            self.all_running.set()
        await self.barrier.wait()
        await self.release.wait()
        return i

    async def wait_all_running(self) -> None:
        await asyncio.wait_for(self.all_running.wait(), GUARD)


async def hold_all(dispatcher: Dispatcher, count: int) -> Held:
    """Submit `count` jobs of a new `Held`."""
    held = Held(count)
    for i in range(count):
        await dispatcher.submit(held.job, i)
    return held


# ------------------------------------------------------------ starting


async def test_a_large_pool_starts_only_its_first_workers() -> None:
    """Dispatcher(100_000) starts CORE_WORKERS workers; the others are places, not tasks."""
    async with Dispatcher(workers=100_000) as dispatcher:
        await all_idle(dispatcher)
        assert started(dispatcher) == CORE_WORKERS
        assert internals(dispatcher).unstarted_workers == 100_000 - CORE_WORKERS
        stats = check_stats(dispatcher)
        assert (stats.workers, stats.idle, stats.busy) == (100_000, 100_000, 0)
        assert not internals(dispatcher).sweep_timer_pending  # nothing to retire


async def test_a_small_pool_starts_every_worker_at_once() -> None:
    async with Dispatcher(workers=CORE_WORKERS) as dispatcher:
        assert started(dispatcher) == CORE_WORKERS
        assert internals(dispatcher).unstarted_workers == 0


async def test_workers_start_as_jobs_need_them_and_run_them_all_at_once() -> None:
    """300 jobs that meet at one barrier: they finish only if 300 workers run them together."""
    async with Dispatcher(workers=300) as dispatcher:
        held = await hold_all(dispatcher, 300)
        await held.wait_all_running()
        assert check_stats(dispatcher).busy == 300
        assert started(dispatcher) == 300
        assert internals(dispatcher).unstarted_workers == 0
        assert held.order == list(range(300))  # started in the order submitted
        held.release.set()
        await asyncio.wait_for(dispatcher.join(), GUARD)
        assert check_stats(dispatcher).succeeded == 300


async def test_no_more_workers_start_than_jobs_need() -> None:
    """Jobs that never wait together keep the pool at its first workers."""
    async with Dispatcher(workers=10_000) as dispatcher:
        for round_ in range(5):
            handles = [await dispatcher.submit(asyncio.sleep, 0, i) for i in range(CORE_WORKERS)]
            assert [await asyncio.wait_for(h, GUARD) for h in handles] == list(
                range(CORE_WORKERS)
            ), round_
        assert started(dispatcher) == CORE_WORKERS


# ------------------------------------------------------------ retiring


async def test_idle_workers_above_the_first_retire_after_a_sweep_period(fast_clock: None) -> None:
    loop = asyncio.get_running_loop()
    async with Dispatcher(workers=200) as dispatcher:
        held = await hold_all(dispatcher, 200)
        await held.wait_all_running()
        assert check_stats(dispatcher).busy == 200
        tasks = internals(dispatcher).worker_tasks
        held.release.set()
        await dispatcher.join()
        assert started(dispatcher) == 200
        assert internals(dispatcher).sweep_timer_pending
        began = loop.time()
        await asyncio.sleep(IDLE_SWEEP * 1.5)  # one look: idle, but not for a whole period
        assert started(dispatcher) == 200
        await asyncio.sleep(IDLE_SWEEP)  # the second look retires them
        assert loop.time() - began < IDLE_SWEEP * 3
        assert started(dispatcher) == CORE_WORKERS
        assert internals(dispatcher).unstarted_workers == 200 - CORE_WORKERS
        assert not internals(dispatcher).sweep_timer_pending  # only the first are left
        await asyncio.sleep(0)
        retired = [t for t in tasks if t not in internals(dispatcher).worker_tasks]
        assert len(retired) == 200 - CORE_WORKERS
        assert all(t is not None and t.done() for t in retired)
        stats = check_stats(dispatcher)
        assert (stats.workers, stats.idle) == (200, 200)
        # The places come back as workers when jobs need them again.
        held = await hold_all(dispatcher, 200)
        await held.wait_all_running()
        assert check_stats(dispatcher).busy == 200
        assert started(dispatcher) == 200
        held.release.set()


async def test_busy_workers_never_retire(fast_clock: None) -> None:
    async with Dispatcher(workers=150) as dispatcher:
        held = await hold_all(dispatcher, 150)
        await asyncio.sleep(IDLE_SWEEP * 5)
        assert check_stats(dispatcher).busy == 150
        assert started(dispatcher) == 150
        held.release.set()


async def test_a_worker_used_between_two_looks_stays(fast_clock: None) -> None:
    """Only workers idle through a whole period retire; one that ran a job since stays."""
    async with Dispatcher(workers=CORE_WORKERS + 2) as dispatcher:
        held = await hold_all(dispatcher, CORE_WORKERS + 2)
        await held.wait_all_running()
        assert check_stats(dispatcher).busy == CORE_WORKERS + 2
        held.release.set()
        await dispatcher.join()
        tasks = internals(dispatcher).worker_tasks
        for _ in range(6):  # every worker runs a job every half period
            await asyncio.sleep(IDLE_SWEEP / 2)
            held = await hold_all(dispatcher, CORE_WORKERS + 2)
            await held.wait_all_running()
            held.release.set()
            await dispatcher.join()
        assert internals(dispatcher).worker_tasks == tasks  # the same workers, none retired


async def test_closing_cancels_the_sweep_timer() -> None:
    async with Dispatcher(workers=100) as dispatcher:
        held = await hold_all(dispatcher, 100)
        await held.wait_all_running()
        assert check_stats(dispatcher).busy == 100
        assert internals(dispatcher).sweep_timer_pending
        held.release.set()
    assert not internals(dispatcher).sweep_timer_pending


# ------------------------------------------------------------ resize


async def test_growing_starts_workers_for_the_jobs_waiting() -> None:
    async with Dispatcher(workers=10) as dispatcher:
        barrier = asyncio.Barrier(250)

        async def job(i: int) -> int:
            await barrier.wait()
            return i

        handles = [await dispatcher.submit(job, i) for i in range(250)]
        await asyncio.sleep(0)
        assert check_stats(dispatcher).busy == 10
        dispatcher.resize(250)
        assert started(dispatcher) == 250  # one for each job waiting
        results = await asyncio.wait_for(asyncio.gather(*handles), GUARD)
        assert results == list(range(250))


async def test_growing_an_idle_pool_starts_only_the_first_workers() -> None:
    async with Dispatcher(workers=10) as dispatcher:
        dispatcher.resize(5000)
        assert started(dispatcher) == CORE_WORKERS
        assert internals(dispatcher).unstarted_workers == 5000 - CORE_WORKERS


async def test_shrinking_gives_up_unstarted_places_first() -> None:
    async with Dispatcher(workers=1000) as dispatcher:
        await all_idle(dispatcher)
        dispatcher.resize(100)
        assert started(dispatcher) == CORE_WORKERS  # no worker had to leave
        assert internals(dispatcher).unstarted_workers == 100 - CORE_WORKERS
        dispatcher.resize(10)
        await asyncio.sleep(0)
        assert started(dispatcher) == 10
        assert internals(dispatcher).unstarted_workers == 0
        assert check_stats(dispatcher).workers == 10


# ------------------------------------------------------------ memory


async def test_an_idle_pool_of_100_000_workers_takes_little_memory() -> None:
    """Memory in proportion to the jobs run, not to the size: well under 20 MB."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        async with Dispatcher(workers=100_000) as dispatcher:
            await all_idle(dispatcher)
            gc.collect()
            after = tracemalloc.take_snapshot()
            grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert 0 < grown < 2 * 1024 * 1024, f"{grown:,} bytes"


# ------------------------------------------------------------ the default queue


@pytest.mark.parametrize(
    ("workers", "expected"),
    [(1, 1024), (8, 1024), (64, 1024), (65, 1040), (1024, 16384), (100_000, 1_600_000)],
)
async def test_the_default_queue_holds_1024_or_16_per_worker(workers: int, expected: int) -> None:
    assert default_queue_size(workers) == expected
    assert Dispatcher(workers).queue_size == expected
    assert Dispatcher(workers, queue_size=None).queue_size == expected


@pytest.mark.parametrize("queue_size", [0, 1, 1024, 5000])
async def test_an_explicit_queue_size_keeps_its_meaning(queue_size: int) -> None:
    dispatcher = Dispatcher(2048, queue_size=queue_size)
    assert dispatcher.queue_size == queue_size
    async with dispatcher:
        gate = asyncio.Event()

        async def wait() -> None:
            await gate.wait()

        if queue_size:
            for _ in range(2048 + queue_size):
                dispatcher.submit_nowait(wait)
            with pytest.raises(asyncpool.QueueFull):
                dispatcher.submit_nowait(wait)
        gate.set()


_PER_WORKER = """
import asyncio, gc, tracemalloc
from asyncpool import Dispatcher

async def main() -> None:
    n = 2000
    gate = asyncio.Event()

    async def job() -> None:
        await gate.wait()

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    async with Dispatcher(n, queue_size=0) as dispatcher:
        for _ in range(n):
            dispatcher.submit_nowait(job)
        while dispatcher.stats().busy < n:
            await asyncio.sleep(0)
        gc.collect()
        print((tracemalloc.get_traced_memory()[0] - before) / n)
        gate.set()

asyncio.run(main())
"""


def test_a_running_worker_and_its_job_take_under_5_8_kb() -> None:
    """The inbox skips asyncio.Queue's putters deque and join() Event (6.5 KB before, 5.2 now).

    In a fresh interpreter: the tests' loops run in debug mode, which keeps a
    traceback for every task and future.
    """
    done = subprocess.run(
        [sys.executable, "-c", _PER_WORKER], capture_output=True, text=True, timeout=60, check=True
    )
    per_worker = float(done.stdout)
    assert 1000 < per_worker < 5800, f"{per_worker:,.0f} bytes per running worker"
