"""The one documented window onto a dispatcher's internals, for asyncpool's own tests.

Tests observe behaviour through the public API; where a test must see a fact
the public API does not show (how many inboxes are registered as idle, how
many dead entries the job queue keeps, which worker tasks exist), it reads
it here, from a snapshot taken in one synchronous step. Nothing in this
module changes a dispatcher, and nothing outside `tests/` should import it:
the fields follow the internals and may change with them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher
    from ._handle import JobHandle

__all__ = ("Internals", "handed_over", "internals")


@dataclasses.dataclass(frozen=True, slots=True)
class Internals:
    """A snapshot of a dispatcher's internal bookkeeping.

    Attributes:
        runner: The task that hosts the dispatcher's TaskGroup (None before
            `start()`).
        worker_tasks: The tasks of the workers in the pool, oldest first
            (workers that a shrink has retired are gone from it).
        idle_workers: Inboxes registered in the idle-worker queue.
        unstarted_workers: Places of the pool with no worker started for
            them (above `CORE_WORKERS`, workers start as jobs need them).
        retiring: Busy workers that leave when their job ends (a shrink).
        queue_entries: Entries in the job queue and the priority heap,
            cancelled ("dead") ones included.
        dead_entries: Cancelled entries left in the queue for routing to skip.
        backlog: Jobs that count against `queue_size`.
        waiting_submitters: `submit` calls waiting for room.
        reserved_places: Places promised to woken submitters not back yet.
        held_keys: Keys with a job that holds them (the key table's size).
        remembered_job_classes: Job classes whose `process` submit remembers.
        rate_timer_pending: A rate-limit timer is set to route again.
        sweep_timer_pending: A timer is set to retire idle workers above
            `CORE_WORKERS`.
        thread_limit: The worker-thread limiter's size (None before start).
    """

    runner: asyncio.Task[None] | None
    worker_tasks: tuple[asyncio.Task[None] | None, ...]
    idle_workers: int
    unstarted_workers: int
    retiring: int
    queue_entries: int
    dead_entries: int
    backlog: int
    waiting_submitters: int
    reserved_places: int
    held_keys: int
    remembered_job_classes: int
    rate_timer_pending: bool
    sweep_timer_pending: bool
    thread_limit: float | None


def internals(dispatcher: Dispatcher) -> Internals:
    """Take a snapshot of `dispatcher`'s internals."""
    return dispatcher._internals()


def handed_over(handle: JobHandle[Any]) -> bool:
    """True if the queued job sits in a worker's inbox (routed, not started yet)."""
    return handle._was_handed_over()
