"""CPU-bound jobs: worker threads against worker processes (`sync_in`), in one process.

Threads share the GIL, so CPU-bound Python code gains nothing from more of
them; `sync_in="process"` runs the same jobs in a pool of worker processes.
This prints the speed-up on this machine (2 cores here).

    python benchmarks/cpu.py [--jobs 32] [--size 300000] [--workers N] [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncpool import Dispatcher
from benchmarks._cpu_work import burn


async def run(jobs: int, size: int, workers: int, where: Literal["thread", "process"]) -> float:
    async with Dispatcher(workers, sync_in=where) as dispatcher:
        # Warm the pool up: spawning processes is not what is measured.
        await asyncio.gather(*[await dispatcher.submit(burn, 1) for _ in range(workers)])
        start = time.perf_counter()
        handles = [await dispatcher.submit(burn, size) for _ in range(jobs)]
        results = [await h for h in handles]
        elapsed = time.perf_counter() - start
    expected = sum(i * i for i in range(size))
    if results != [expected] * jobs:
        raise SystemExit("wrong results: a job was lost or miscomputed")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--size", type=int, default=300_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    factory = asyncio.new_event_loop
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    timings: dict[str, float] = {}
    places: tuple[Literal["thread", "process"], ...] = ("thread", "process")
    for where in places:
        with asyncio.Runner(loop_factory=factory) as runner:
            timings[where] = runner.run(run(args.jobs, args.size, args.workers, where))
    print(
        f"{args.jobs} CPU-bound jobs (sum of {args.size:,} squares), {args.workers} workers, "
        f"{os.cpu_count()} cores, {args.loop}"
    )
    for place, seconds in timings.items():
        print(f"  sync_in={place!r:10} {seconds:6.2f} s  {args.jobs / seconds:6.1f} jobs/s")
    print(f"  speed-up of processes over threads: {timings['thread'] / timings['process']:.2f}x")


if __name__ == "__main__":
    main()
