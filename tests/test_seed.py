"""The Go seed's `main.go`, as a test: two job types through one dispatcher."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpool


@dataclass
class BatchJob:
    """Many small items in one job (the seed's BatchJob)."""

    items: list[int]
    done: list[int] = field(default_factory=list)

    async def process(self) -> int:
        for item in self.items:
            await asyncio.sleep(0)
            self.done.append(item)
        return sum(self.items)


@dataclass
class SingleJob:
    """One item in one job (the seed's SingleJob); a sync process runs in a thread."""

    item: int
    done: bool = False

    def process(self) -> int:
        self.done = True
        return self.item * 10


async def test_seed_two_job_types_through_one_dispatcher() -> None:
    """Four workers run both job types; leaving `async with` waits for all of them."""
    batches = [BatchJob(list(range(i, i + 5))) for i in range(0, 50, 5)]
    singles = [SingleJob(i) for i in range(10)]
    async with asyncpool.Dispatcher(workers=4) as dispatcher:
        handles: list[asyncpool.JobHandle[int]] = []
        for batch, single in zip(batches, singles, strict=True):
            handles.append(await dispatcher.submit(batch))
            handles.append(await dispatcher.submit(single))
    # No explicit wait: the context manager is the WaitGroup.
    assert all(h.state is asyncpool.JobState.SUCCEEDED for h in handles)
    assert [b.done for b in batches] == [b.items for b in batches]
    assert all(s.done for s in singles)
    assert sum(h.result() for h in handles) == sum(range(50)) + 10 * sum(range(10))
    stats = dispatcher.stats()
    assert (stats.submitted, stats.succeeded, stats.busy, stats.queued) == (20, 20, 0, 0)
