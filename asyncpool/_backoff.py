"""Retry backoffs: jobs waiting out the pause before their next try.

A job whose try failed and whose `Retry` policy sends it back holds no
worker while it waits: it sits here with a timer, counted as queued, and
the timer hands it back to the core when the pause is over. A shutdown
takes every waiting job out at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ("Backoffs",)

J = TypeVar("J")


class Backoffs(Generic[J]):
    """The jobs waiting out a retry backoff, each with its timer."""

    __slots__ = ("_timers",)

    def __init__(self) -> None:
        self._timers: dict[J, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._timers)

    def __contains__(self, job: object) -> bool:
        return job in self._timers

    def start(
        self, loop: asyncio.AbstractEventLoop, job: J, delay: float, due: Callable[[J], None]
    ) -> None:
        """Call `due(job)` after `delay` seconds, unless stopped first."""
        self._timers[job] = loop.call_later(delay, self._fire, job, due)

    def _fire(self, job: J, due: Callable[[J], None]) -> None:
        del self._timers[job]
        due(job)

    def stop(self, job: J) -> bool:
        """Stop `job`'s wait (its timer will not fire). Returns whether it was waiting."""
        timer = self._timers.pop(job, None)
        if timer is None:
            return False
        timer.cancel()
        return True

    def drain(self) -> list[J]:
        """Stop every wait; return the jobs that were waiting."""
        jobs = list(self._timers)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        return jobs
