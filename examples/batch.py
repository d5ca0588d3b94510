"""The Go seed's example in asyncpool: many job types through one pool.

The blog post this project started from cuts a large data set into batches
and processes them in parallel, without tying the pool to one job type. Here
a `BatchJob` sums many numbers at once and a `SingleJob` handles one number;
both go through the same `Dispatcher`, and leaving `async with` plays the
part of the seed's `WaitGroup.Wait()`.

Run it with `python examples/batch.py [--items 10000] [--batch-size 500] [--workers 4]`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass

from asyncpool import Dispatcher, JobHandle


@dataclass
class BatchJob:
    """Many items in one job: awaits once per item, as real I/O would."""

    items: list[int]

    async def process(self) -> int:
        total = 0
        for item in self.items:
            await asyncio.sleep(0)
            total += item * item
        return total


@dataclass
class SingleJob:
    """One item in one job; a sync process() runs in a worker thread."""

    item: int

    def process(self) -> int:
        return self.item * self.item


async def run(items: int, batch_size: int, workers: int) -> tuple[int, int, int]:
    """Square and sum `items` numbers: full batches as BatchJobs, the rest as SingleJobs.

    Returns:
        (total, batch jobs, single jobs).
    """
    numbers = list(range(items))
    cut = len(numbers) - len(numbers) % batch_size
    handles: list[JobHandle[int]] = []
    async with Dispatcher(workers=workers) as dispatcher:
        for start in range(0, cut, batch_size):
            handles.append(await dispatcher.submit(BatchJob(numbers[start : start + batch_size])))
        for item in numbers[cut:]:
            handles.append(await dispatcher.submit(SingleJob(item)))
    total = sum(handle.result() for handle in handles)
    return total, cut // batch_size, len(numbers) - cut


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    if args.items < 0 or args.batch_size < 1:
        parser.error("--items must be >= 0 and --batch-size >= 1")
    if args.workers < 1:
        print(f"batch.py: error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        total, batches, singles = asyncio.run(run(args.items, args.batch_size, args.workers))
    except (TypeError, ValueError) as exc:
        print(f"batch.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"{batches} batch jobs and {singles} single jobs: sum of squares = {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
