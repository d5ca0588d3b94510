"""`Throughput`: jobs finished per second over the last ten minutes, one sample per second.

The ring is fed by observations of a count that only grows (the jobs a
source has seen finish): each observation puts what the count grew by
since the last one into the second it was made in, spreading it evenly
over the seconds in between when observations were skipped. So the ring
is right however often it is fed: `run` feeds it once a second from the
app's lifespan (that keeps the history while nobody looks), and each poll
of the overview feeds it too, which keeps the chart moving when the
lifespan does not run (Starlette does not run the lifespan of a mounted
app).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Final

__all__ = ("SECONDS", "Throughput")

logger = logging.getLogger("asyncpool")

SECONDS: Final = 600
"""How many one-second samples the ring keeps (ten minutes)."""


class Throughput:
    """A ring of per-second counts of finished jobs."""

    __slots__ = ("_ring", "_second", "_total", "_clock", "_failing")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._ring: collections.deque[float] = collections.deque(maxlen=SECONDS)
        self._second: int | None = None  # the second the ring's last sample belongs to
        self._total = 0
        self._clock = clock
        self._failing = False

    def __repr__(self) -> str:
        return f"<Throughput samples={len(self._ring)} last10s={self.rate():g}/s>"

    def observe(self, total: int) -> None:
        """Record that the count of finished jobs is `total` now."""
        second = math.floor(self._clock())
        if self._second is None:
            # The first observation only sets the baseline: what finished
            # before the dashboard looked is not this second's.
            self._second, self._total = second, total
            self._ring.append(0.0)
            return
        grown = max(0, total - self._total)  # a restarted count starts over
        self._total = total
        gap = second - self._second
        if gap <= 0:
            self._ring[-1] += grown
            return
        self._second = second
        # The seconds in between get an even share; the ring holds at most
        # SECONDS of them, so a long gap costs no more than that.
        share = grown / gap
        for _ in range(min(gap, SECONDS)):
            self._ring.append(share)

    def samples(self) -> list[float]:
        """The per-second counts, oldest first, the last one the (partial) current second."""
        return list(self._ring)

    def rate(self, seconds: int = 10) -> float:
        """Jobs finished per second over the last `seconds` complete seconds."""
        complete = list(self._ring)[:-1][-seconds:]
        if not complete:
            return 0.0
        return sum(complete) / len(complete)

    async def run(self, count: Callable[[], Awaitable[int]], interval: float = 1.0) -> None:
        """Observe `count()` every `interval` seconds until cancelled.

        A failing `count` (a broker whose server is away) is logged once
        until it works again; the missing seconds are then filled by the
        next observation that works.
        """
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                total = await count()
            except Exception as exc:
                if not self._failing:
                    logger.warning("asyncpool dashboard: cannot count finished jobs: %s", exc)
                self._failing = True
            else:
                self._failing = False
                self.observe(total)
            # Ticks keep to a fixed schedule rather than drifting by each
            # count's own duration; a count slower than a tick skips ticks.
            now = loop.time()
            next_at += interval
            if next_at <= now:
                next_at = now + interval
            await asyncio.sleep(next_at - now)
