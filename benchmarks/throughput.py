"""Throughput of asyncpool against a hand-written floor, in the same process.

The floor is the least a pool can do: one `asyncio.Queue`, K worker tasks,
one `asyncio.Future` per job, every future awaited. asyncpool does more per
job (a handle with state and timestamps, the routing through per-worker
inboxes, failure routing, join accounting); the ratio says what that costs.

Every run checks that every job ran (count and sum of results) and fails
loudly otherwise. Best of `--repeat` runs, with the spread shown.

    python benchmarks/throughput.py [--jobs 200000] [--workers 8,64,1024]
                                    [--loop asyncio,uvloop] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncpool import Dispatcher


async def trivial(i: int) -> int:
    return i


async def queue_floor(
    start: Callable[[Any], Awaitable[int]], items: Iterable[Any], k: int
) -> tuple[int, int]:
    """One asyncio.Queue, k workers, one future per job, every future awaited.

    Each job is `start(item)`. Returns how many results came back and their
    sum, so the caller can check that every job ran exactly once.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[asyncio.Future[int], Any]] = asyncio.Queue()

    async def worker() -> None:
        while True:
            future, item = await queue.get()
            try:
                future.set_result(await start(item))
            except Exception as exc:
                future.set_exception(exc)

    async with asyncio.TaskGroup() as group:
        workers = [group.create_task(worker()) for _ in range(k)]
        futures = []
        for item in items:
            future: asyncio.Future[int] = loop.create_future()
            queue.put_nowait((future, item))
            futures.append(future)
        count = total = 0
        for future in futures:
            total += await future
            count += 1
        for task in workers:
            task.cancel()
    return count, total


async def floor(n: int, k: int) -> int:
    """The floor for n trivial jobs: the sum of their results."""
    return (await queue_floor(trivial, range(n), k))[1]


def asyncpool_run(queue_size: int | None) -> Callable[[int, int], Coroutine[Any, Any, int]]:
    """asyncpool with this `queue_size`; None leaves the argument out (the default)."""

    async def run(n: int, k: int) -> int:
        dispatcher = Dispatcher(k) if queue_size is None else Dispatcher(k, queue_size=queue_size)
        async with dispatcher:
            handles = [await dispatcher.submit(trivial, i) for i in range(n)]
            total = 0
            for handle in handles:
                total += await handle
        return total

    return run


IMPLEMENTATIONS: dict[str, Callable[[int, int], Awaitable[int]]] = {
    "floor": floor,
    "asyncpool (queue_size=0)": asyncpool_run(0),
    "asyncpool (default)": asyncpool_run(None),
}


async def _as_coroutine(awaitable: Awaitable[int]) -> int:
    return await awaitable


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def measure(kind: str, impl: Callable[[int, int], Awaitable[int]], n: int, k: int) -> float:
    expected = n * (n - 1) // 2
    with asyncio.Runner(loop_factory=lambda: new_loop(kind)) as runner:
        gc.collect()
        start = time.perf_counter()
        total = runner.run(_as_coroutine(impl(n, k)))
        elapsed = time.perf_counter() - start
    if total != expected:
        raise SystemExit(f"wrong result: sum {total} != {expected}: jobs were lost or repeated")
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--workers", default="8,64,1024")
    parser.add_argument("--loop", default="asyncio,uvloop")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {args.jobs:,} trivial jobs, best of {args.repeat}")
    print(f"{'loop':8} {'K':>5}  {'implementation':26} {'jobs/s':>10} {'spread':>7} {'x floor':>8}")
    for kind in args.loop.split(","):
        for k in (int(x) for x in args.workers.split(",")):
            # Repeats are interleaved (floor, asyncpool, ..., floor, ...) so
            # that a noisy neighbour slows every implementation alike.
            runs: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
            for _ in range(args.repeat):
                for name, impl in IMPLEMENTATIONS.items():
                    runs[name].append(measure(kind, impl, args.jobs, k))
            best = {name: max(values) for name, values in runs.items()}
            for name, values in runs.items():
                spread = (max(values) - min(values)) / statistics.mean(values)
                ratio = best[name] / best["floor"]
                print(
                    f"{kind:8} {k:>5}  {name:26} {best[name]:>10,.0f} {spread:>6.0%} {ratio:>8.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
