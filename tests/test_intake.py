"""asyncpool._intake (`Dispatcher.intake()`, `asyncpool.sources`): the seam for job sources.

An in-memory source stands in for a broker consumer: it asks for capacity,
feeds that many jobs, and records what its observer is told.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest

import asyncpool
from asyncpool import JobHandle, JobState
from asyncpool.sources import Intake, JobObserver
from tests._jobs import Gate, check_stats


class Log(list[tuple[str, int, int, JobState]]):
    """What observers were told, in order; `reach(n)` waits until it has n entries."""

    def __init__(self) -> None:
        super().__init__()
        self.grew = asyncio.Event()

    def add(self, entry: tuple[str, int, int, JobState]) -> None:
        self.append(entry)
        self.grew.set()

    async def reach(self, n: int, kind: str | None = None) -> None:
        async with asyncio.timeout(10):
            while len([e for e in self if kind is None or e[0] == kind]) < n:
                self.grew.clear()
                await self.grew.wait()


class Recorder:
    """A JobObserver that records what it is told."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def job_started(self, handle: JobHandle[Any]) -> None:
        self.log.add(("started", handle.id, handle.attempts, handle.state))

    def job_ended(self, handle: JobHandle[Any]) -> None:
        self.log.add(("ended", handle.id, handle.attempts, handle.state))


class MemorySource:
    """An in-memory job source: a deque of gates, fed only as workers are free."""

    def __init__(self, gates: list[Gate]) -> None:
        self.waiting = deque(gates)
        self.log = Log()
        self.grants: list[int] = []
        self.handles: list[JobHandle[Any]] = []
        self.fed = asyncio.Event()

    async def serve(self, intake: Intake) -> None:
        while self.waiting:
            free = await intake.capacity()
            self.grants.append(free)
            for _ in range(min(free, len(self.waiting))):
                gate = self.waiting.popleft()
                self.handles.append(intake.put(gate, observer=Recorder(self.log)))
            self.fed.set()

    async def fed_jobs(self, n: int) -> None:
        async with asyncio.timeout(10):
            while len(self.handles) < n:
                self.fed.clear()
                await self.fed.wait()


async def test_intake_feeds_at_most_the_free_workers() -> None:
    """A source is granted only the workers no running or queued job accounts for."""
    gates = [Gate(value=i) for i in range(5)]
    source = MemorySource(gates)
    async with asyncpool.Dispatcher(workers=2) as d, d.intake() as intake:
        busy = Gate()
        await d.submit(busy)  # a local job holds one of the two workers
        feeding = asyncio.create_task(source.serve(intake))
        await source.fed_jobs(1)
        assert source.grants == [1]
        assert check_stats(d).queued + check_stats(d).busy == 2  # never more than the pool
        busy.release()
        await source.fed_jobs(2)
        assert source.grants == [1, 1]
        for gate in gates:
            gate.release()
        async with asyncio.timeout(10):
            await feeding
        assert [await h for h in source.handles] == [0, 1, 2, 3, 4]


async def test_intake_tells_the_observer_each_start_and_the_end() -> None:
    """The observer hears `job_started` at each try and `job_ended` once, with the outcome."""
    log = Log()
    tries = 0

    async def flaky() -> str:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise ConnectionError("first try fails")
        return "ok"

    async with asyncpool.Dispatcher(workers=1) as d, d.intake() as intake:
        await intake.capacity()
        handle = intake.put(
            flaky, observer=Recorder(log), retry=asyncpool.Retry(attempts=2, backoff=0)
        )
        assert await handle == "ok"
        await log.reach(3)
    assert log == [
        ("started", handle.id, 1, JobState.RUNNING),
        ("started", handle.id, 2, JobState.RUNNING),
        ("ended", handle.id, 2, JobState.SUCCEEDED),
    ]


async def test_intake_exit_hands_back_unstarted_jobs() -> None:
    """Leaving the intake cancels its unstarted jobs (attempts 0) and lets running ones finish."""
    log = Log()
    running, queued = Gate(value="done"), Gate()
    async with asyncpool.Dispatcher(workers=1) as d:
        async with d.intake() as intake:
            assert await intake.capacity() == 1
            first = intake.put(running, observer=Recorder(log))
            await running.started.wait()
            d.resize(2)  # one more free worker, but it is held back below
            assert await intake.capacity() == 1
            d.resize(1)  # the newest unstarted job is taken back: it waits in the queue
            second = intake.put(queued, observer=Recorder(log))
            assert intake.unfinished == {first, second}
        # Exit: the job that never started is handed back at once.
        assert second.cancelled()
        assert second.attempts == 0
        assert not first.done()
        running.release()
        assert await first == "done"
        await log.reach(2, "ended")
    assert ("ended", second.id, 0, JobState.CANCELLED) in log
    assert ("ended", first.id, 1, JobState.SUCCEEDED) in log
    assert queued.runs == 0


async def test_intake_put_without_a_grant_is_refused() -> None:
    """`put` without a grant (or beyond it) raises a RuntimeError that says what to do."""
    async with asyncpool.Dispatcher(workers=1) as d, d.intake() as intake:
        with pytest.raises(RuntimeError, match=r"await intake\.capacity\(\)"):
            intake.put(Gate(), observer=Recorder(Log()))
        assert await intake.capacity() == 1
        gate = Gate()
        intake.put(gate, observer=Recorder(Log()))
        with pytest.raises(RuntimeError, match="granted"):
            intake.put(Gate(), observer=Recorder(Log()))
        gate.release()


async def test_intake_capacity_raises_when_the_dispatcher_closes() -> None:
    """A source waiting for free workers is told when the dispatcher stops accepting jobs."""
    d = asyncpool.Dispatcher(workers=1)
    await d.start()
    gate = Gate()
    await d.submit(gate)
    intake = d.intake()
    waiting = asyncio.create_task(intake.capacity())
    await asyncio.sleep(0)
    closing = asyncio.create_task(d.close())
    with pytest.raises(asyncpool.DispatcherClosed):
        async with asyncio.timeout(10):
            await waiting
    gate.release()
    await closing


async def test_intake_needs_a_running_dispatcher() -> None:
    """`intake()` on a dispatcher that is not running raises DispatcherClosed."""
    d = asyncpool.Dispatcher(workers=1)
    with pytest.raises(asyncpool.DispatcherClosed, match="not started"):
        d.intake()


def test_sources_module_exports_the_seam() -> None:
    """`asyncpool.sources` is where a source author finds the two names, and __init__ skips it."""
    import asyncpool.sources as sources

    assert sources.__all__ == ("Intake", "JobObserver")
    assert "Intake" not in asyncpool.__all__
    observer: JobObserver = Recorder(Log())
    assert observer is not None
