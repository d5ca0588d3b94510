"""Retries: whether a failed try runs again, and the backoff it waits out first.

`retry_delay` applies a job's `Retry` policy to a failure (and says so in
the log). A job sent back holds no worker while it waits: it sits in
`Backoffs` with a timer, counted as queued, and the timer hands it back to
the core when the pause is over. A shutdown takes every waiting job out at
once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._job import name_of
from ._reporting import logger
from ._retry import Retry

if TYPE_CHECKING:
    from ._handle import JobHandle

__all__ = ("Backoffs", "retry_delay")

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


def retry_delay(
    policy: Retry | None,
    tries: int,
    exc: BaseException,
    handle: JobHandle[Any],
    label: str,
    cancelling: bool,
) -> float | None:
    """How long a job waits before its next try after failing with `exc`; None for no retry.

    No retry without a policy, after the last attempt, for a job asked to
    stop, or while the dispatcher cancels everything. A broken `on=`
    predicate must not kill the worker or hide the job's failure: the job
    fails with its own error, and the predicate's is logged.
    """
    if policy is None or tries >= policy.attempts or handle._cancel_requested or cancelling:
        return None
    try:
        retried = policy.retries(exc)
    except Exception as predicate_error:
        logger.error(
            "%s: the retry predicate %r raised on the failure of job %d; not retrying",
            label,
            policy.on,
            handle.id,
            exc_info=predicate_error,
        )
        return None
    if not retried:
        return None
    delay = policy.delay(tries)
    # INFO, not WARNING: a retry is the policy doing its job, and a flaky
    # batch would otherwise flood the log. A job that fails for good is
    # still reported at ERROR (or to its awaiter, or on_error) as usual.
    logger.info(
        "%s: job %d (%s) failed (try %d of %d), retrying in %.3g s: %r",
        label,
        handle.id,
        name_of(handle.fn),
        tries,
        policy.attempts,
        delay,
        exc,
    )
    return delay
