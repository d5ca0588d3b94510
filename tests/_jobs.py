"""Jobs the tests control (they start, block and finish when the test says so), and helpers.

Shared by several test files: the gates and counted jobs, the stats check, and
the bounded waits (`guarded`, `let_run`, `all_idle`) that stand in for sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpool
from asyncpool._testing import internals

T = TypeVar("T")

# Real seconds a guarded await may take. Only a failing test (a hang, such as
# the deadlock re-entrant submit prevents) ever gets there: without the guard
# pytest-timeout would end the whole session instead of failing one test.
GUARD = 10.0


@dataclass
class Gate:
    """An async job that records its start, then waits until released.

    `started` is set when a worker starts it; `release()` lets it return
    `value`, `fail(exc)` makes it raise. `saw_cancel` records whether the
    job's coroutine saw a `CancelledError`.
    """

    value: object = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    _go: asyncio.Event = field(default_factory=asyncio.Event)
    _error: BaseException | None = None
    runs: int = 0
    saw_cancel: bool = False

    async def process(self) -> object:
        self.runs += 1
        self.started.set()
        try:
            await self._go.wait()
        except asyncio.CancelledError:
            self.saw_cancel = True
            raise
        if self._error is not None:
            raise self._error
        return self.value

    def release(self) -> None:
        self._go.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._go.set()


def check_stats(dispatcher: asyncpool.Dispatcher) -> asyncpool.Stats:
    """Take a snapshot and check the contract's identity on it."""
    s = dispatcher.stats()
    assert s.submitted == s.queued + s.busy + s.succeeded + s.failed + s.cancelled, s
    # After resize() shrinks the pool, leaving workers may still be busy.
    assert s.idle == max(0, s.workers - s.busy), s
    return s


async def all_idle(dispatcher: asyncpool.Dispatcher) -> None:
    """Wait (a bounded number of loop turns) until every worker has registered as idle."""
    for _ in range(100):
        if internals(dispatcher).idle_workers == len(internals(dispatcher).worker_tasks):
            return
        await asyncio.sleep(0)
    idle = internals(dispatcher).idle_workers
    started = len(internals(dispatcher).worker_tasks)
    raise AssertionError(f"never all idle: {idle} of {started} started workers")


def state_of(handle: asyncpool.JobHandle[object]) -> asyncpool.JobState:
    """Read a handle's state afresh (mypy would keep an earlier narrowing of `handle.state`)."""
    return handle.state


def other_tasks() -> set[asyncio.Task[object]]:
    """The tasks of the running loop other than the current one."""
    return asyncio.all_tasks() - {asyncio.current_task()}


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


class Flaky:
    """Fails with `error` for its first `failures` runs, then returns its run count."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.starts: list[float] = []

    async def __call__(self) -> int:
        self.starts.append(asyncio.get_running_loop().time())
        if len(self.starts) <= self.failures:
            raise self.error(f"failure {len(self.starts)}")
        return len(self.starts)
