"""`join()`'s bookkeeping: who waits for which jobs, counted down as jobs end.

A `join()` waits for the jobs submitted before it was called: the jobs
numbered up to its *horizon*. Each waiter counts down the jobs of its
horizon still unfinished; the job that ends last wakes it. The core asks
only one question per job (is its id within the largest horizon?), so a
dispatcher nobody joins pays one comparison.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._handle import JobHandle

__all__ = ("JoinWaiters",)


class _Waiter:
    """One `join()` call: waits for the jobs numbered up to `horizon`."""

    __slots__ = ("horizon", "remaining", "future")

    def __init__(self, horizon: int, remaining: int, future: asyncio.Future[None]) -> None:
        self.horizon = horizon
        self.remaining = remaining
        self.future = future


class JoinWaiters:
    """The `join()` calls waiting now."""

    __slots__ = ("horizon", "_waiters", "_publish")

    def __init__(self, publish: Callable[[int], None]) -> None:
        self.horizon = 0
        """The largest horizon of any waiter; 0 when nobody waits."""
        self._waiters: list[_Waiter] = []
        # Told the horizon whenever it changes: the core keeps a copy it can
        # read per job without a second attribute lookup.
        self._publish = publish

    async def wait(self, horizon: int, unfinished: int) -> None:
        """Wait until the `unfinished` jobs numbered up to `horizon` have ended."""
        waiter = _Waiter(horizon, unfinished, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self.horizon = max(self.horizon, horizon)
        self._publish(self.horizon)
        try:
            await waiter.future
        finally:
            self._waiters.remove(waiter)
            self.horizon = max((w.horizon for w in self._waiters), default=0)
            self._publish(self.horizon)

    def count(self, handle: JobHandle[Any]) -> None:
        """A job within the horizon has ended: count it down for each waiter it concerns."""
        for waiter in self._waiters:
            if handle.id <= waiter.horizon:
                waiter.remaining -= 1
                if waiter.remaining == 0 and not waiter.future.done():
                    waiter.future.set_result(None)
