"""The implementations and workloads that `benchmarks/peers.py` compares.

Every implementation runs the same jobs with at most K of them at once and
returns `(count, sum)` of the results it collected, so the caller can check
that every job ran exactly once. Peers are imported inside their functions:
a child process imports only the library it measures.

A workload is a list of items and a `start(item)` that makes the job's
coroutine. For W1 to W3 the items are ints and `start` is the job function
itself (no wrapper); for W4 the items are Job objects and `start` is
`operator.methodcaller("process")`, i.e. `obj.process()`. asyncpool, which
takes Job objects directly, is given the object itself.
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from asyncpool import Dispatcher
from benchmarks.throughput import asyncpool_run as throughput_asyncpool_run
from benchmarks.throughput import queue_floor, trivial

Start = Callable[[Any], Coroutine[Any, Any, int]]
Result = tuple[int, int]  # (how many results, their sum)


# ------------------------------------------------------------------ workloads


async def yield_once(i: int) -> int:
    await asyncio.sleep(0)
    return i


async def sleep_1ms(i: int) -> int:
    await asyncio.sleep(0.001)
    return i


class Resize:
    """W4: one of two Job classes; `process()` returns the job's number."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    async def process(self) -> int:
        return self.i


class Encode:
    """W4: the other Job class."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    async def process(self) -> int:
        return self.i


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    start: Start
    objects: bool  # items are Job objects (W4), not ints

    def items(self, n: int) -> Sequence[Any]:
        if self.objects:
            return [Resize(i) if i % 2 == 0 else Encode(i) for i in range(n)]
        return range(n)


WORKLOADS: dict[str, Workload] = {
    "W1": Workload("W1", "trivial jobs (`return i`)", trivial, objects=False),
    "W2": Workload("W2", "jobs that yield once (`await asyncio.sleep(0)`)", yield_once, False),
    "W3": Workload("W3", "jobs sleeping 1 ms (I/O-like)", sleep_1ms, objects=False),
    "W4": Workload(
        "W4",
        "two alternating Job classes with `async process()`",
        operator.methodcaller("process"),
        objects=True,
    ),
}


# ---------------------------------------------------------- throughput runs

Impl = Callable[[Workload, Sequence[Any], int], Awaitable[Result]]


async def floor(work: Workload, items: Sequence[Any], k: int) -> Result:
    """The floor of benchmarks/throughput.py (`queue_floor`), for any workload."""
    return await queue_floor(work.start, items, k)


def new_dispatcher(k: int, queue_size: int | None) -> Dispatcher:
    """`Dispatcher(k)`, with `queue_size` passed only when it is not None."""
    if queue_size is None:
        return Dispatcher(k)
    return Dispatcher(k, queue_size=queue_size)


def asyncpool_impl(queue_size: int | None) -> Impl:
    """asyncpool with this `queue_size`; None: the default (the argument left out)."""

    async def run(work: Workload, items: Sequence[Any], k: int) -> Result:
        if work.name == "W1":
            n = len(items)
            return n, await throughput_asyncpool_run(queue_size)(n, k)
        async with new_dispatcher(k, queue_size) as dispatcher:
            if work.objects:
                handles = [await dispatcher.submit(item) for item in items]
            else:
                start = work.start
                handles = [await dispatcher.submit(start, item) for item in items]
            count = total = 0
            for handle in handles:
                total += await handle
                count += 1
        return count, total

    return run


async def taskgroup_semaphore(work: Workload, items: Sequence[Any], k: int) -> Result:
    """One task per job, all created at once; a semaphore lets K run."""
    start = work.start
    semaphore = asyncio.Semaphore(k)

    async def guarded(item: Any) -> int:
        async with semaphore:
            return await start(item)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(guarded(item)) for item in items]
    return len(tasks), sum(task.result() for task in tasks)


async def aiojobs_impl(work: Workload, items: Sequence[Any], k: int) -> Result:
    """Scheduler(limit=K, pending_limit=1024): spawn every job, then wait for all."""
    import aiojobs

    start = work.start
    scheduler = aiojobs.Scheduler(limit=k, pending_limit=1024, wait_timeout=None)
    jobs = [await scheduler.spawn(start(item)) for item in items]
    await scheduler.wait_and_close()
    count = total = 0
    for job in jobs:
        total += await job.wait()  # closed jobs: returns the finished task's result
        count += 1
    return count, total


async def asyncio_pool_impl(work: Workload, items: Sequence[Any], k: int) -> Result:
    """AioPool(size=K).spawn for every job (waits for room), futures awaited."""
    from asyncio_pool import AioPool

    start = work.start
    async with AioPool(size=k) as pool:
        futures = [await pool.spawn(start(item)) for item in items]
    count = total = 0
    for future in futures:
        total += await future
        count += 1
    return count, total


async def aiometer_impl(work: Workload, items: Sequence[Any], k: int) -> Result:
    """aiometer.amap(start, items, max_at_once=K); results in completion order."""
    import aiometer

    count = total = 0
    async with aiometer.amap(work.start, items, max_at_once=k) as results:
        async for result in results:
            total += result
            count += 1
    return count, total


async def anyio_impl(work: Workload, items: Sequence[Any], k: int) -> Result:
    """anyio task group, one task per job, CapacityLimiter(K)."""
    import anyio

    start = work.start
    limiter = anyio.CapacityLimiter(k)
    results: list[int] = []

    async def guarded(item: Any) -> None:
        async with limiter:
            results.append(await start(item))

    async with anyio.create_task_group() as group:
        for item in items:
            group.start_soon(guarded, item)
    return len(results), sum(results)


IMPLS: dict[str, Impl] = {
    "floor": floor,
    "asyncpool (default)": asyncpool_impl(None),
    "asyncpool (queue_size=0)": asyncpool_impl(0),
    "TaskGroup + Semaphore": taskgroup_semaphore,
    "aiojobs": aiojobs_impl,
    "asyncio-pool": asyncio_pool_impl,
    "aiometer": aiometer_impl,
    "anyio + CapacityLimiter": anyio_impl,
}
NOT_PEERS = ("floor", "asyncpool (default)", "asyncpool (queue_size=0)")


# -------------------------------------------------------------- W5: latency
#
# Submit one job at a time and wait for it to finish before the next, so the
# workers are idle at every submit. The job returns time.perf_counter() at
# its start; the latency is that minus the time taken just before submitting.
# (perf_counter, not loop.time(): uvloop's loop.time() has 1 ms resolution.)

Latency = Callable[[int, int], Awaitable[list[float]]]


async def stamp() -> float:
    return time.perf_counter()


async def floor_latency(k: int, samples: int) -> list[float]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[asyncio.Future[float]] = asyncio.Queue()

    async def worker() -> None:
        while True:
            future = await queue.get()
            future.set_result(await stamp())

    latencies = []
    async with asyncio.TaskGroup() as group:
        workers = [group.create_task(worker()) for _ in range(k)]
        await asyncio.sleep(0)  # let the workers reach queue.get()
        for _ in range(samples):
            t0 = time.perf_counter()
            future: asyncio.Future[float] = loop.create_future()
            queue.put_nowait(future)
            latencies.append(await future - t0)
        for task in workers:
            task.cancel()
    return latencies


async def asyncpool_latency(k: int, samples: int, queue_size: int | None) -> list[float]:
    latencies = []
    async with new_dispatcher(k, queue_size) as dispatcher:
        await asyncio.sleep(0)
        for _ in range(samples):
            t0 = time.perf_counter()
            handle = await dispatcher.submit(stamp)
            latencies.append(await handle - t0)
    return latencies


async def taskgroup_latency(k: int, samples: int) -> list[float]:
    semaphore = asyncio.Semaphore(k)

    async def guarded() -> float:
        async with semaphore:
            return await stamp()

    latencies = []
    async with asyncio.TaskGroup() as group:
        for _ in range(samples):
            t0 = time.perf_counter()
            task = group.create_task(guarded())
            latencies.append(await task - t0)
    return latencies


async def aiojobs_latency(k: int, samples: int) -> list[float]:
    import aiojobs

    latencies = []
    async with aiojobs.Scheduler(limit=k, pending_limit=1024) as scheduler:
        for _ in range(samples):
            t0 = time.perf_counter()
            job = await scheduler.spawn(stamp())
            latencies.append(await job.wait() - t0)
    return latencies


async def asyncio_pool_latency(k: int, samples: int) -> list[float]:
    from asyncio_pool import AioPool

    latencies = []
    async with AioPool(size=k) as pool:
        for _ in range(samples):
            t0 = time.perf_counter()
            future = await pool.spawn(stamp())
            latencies.append(await future - t0)
    return latencies


async def anyio_latency(k: int, samples: int) -> list[float]:
    import anyio

    loop = asyncio.get_running_loop()
    limiter = anyio.CapacityLimiter(k)

    async def guarded(future: asyncio.Future[float]) -> None:
        async with limiter:
            future.set_result(await stamp())

    latencies = []
    async with anyio.create_task_group() as group:
        for _ in range(samples):
            t0 = time.perf_counter()
            future: asyncio.Future[float] = loop.create_future()
            group.start_soon(guarded, future)
            latencies.append(await future - t0)
    return latencies


def _with_queue_size(queue_size: int | None) -> Latency:
    async def run(k: int, samples: int) -> list[float]:
        return await asyncpool_latency(k, samples, queue_size)

    return run


# aiometer has no submit: it maps a function over a sequence it is given up
# front, so "one job at a time to idle workers" has no meaning for it.
LATENCY: dict[str, Latency] = {
    "floor": floor_latency,
    "asyncpool (default)": _with_queue_size(None),
    "asyncpool (queue_size=0)": _with_queue_size(0),
    "TaskGroup + Semaphore": taskgroup_latency,
    "aiojobs": aiojobs_latency,
    "asyncio-pool": asyncio_pool_latency,
    "anyio + CapacityLimiter": anyio_latency,
}
