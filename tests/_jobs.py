"""Jobs the tests control: they start, block and finish when the test says so."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpool


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
        if dispatcher._idle_count == dispatcher.workers:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never all idle: {dispatcher._idle_count} of {dispatcher.workers}")


def state_of(handle: asyncpool.JobHandle[object]) -> asyncpool.JobState:
    """Read a handle's state afresh (mypy would keep an earlier narrowing of `handle.state`)."""
    return handle.state
