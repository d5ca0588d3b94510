"""`Stats`, a consistent snapshot of a dispatcher's counters, and `ShutdownReport`."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._handle import JobHandle

__all__ = ("ShutdownReport", "Stats")


@dataclasses.dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of a dispatcher, taken in one synchronous step.

    Every snapshot satisfies
    `submitted == queued + busy + succeeded + failed + cancelled`.

    Attributes:
        workers: The size of the pool (the `workers` argument).
        idle: Workers not running a job (`workers - busy`).
        busy: Jobs running now; each occupies one worker.
        queued: Jobs accepted and not started yet.
        submitted: Jobs accepted since the dispatcher started.
        succeeded: Jobs that returned a result.
        failed: Jobs that raised an exception.
        cancelled: Jobs cancelled before or while running.
    """

    workers: int
    idle: int
    busy: int
    queued: int
    submitted: int
    succeeded: int
    failed: int
    cancelled: int

    @property
    def finished(self) -> int:
        """How many jobs are in a final state (succeeded + failed + cancelled)."""
        return self.succeeded + self.failed + self.cancelled


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class ShutdownReport:
    """What a shutdown had to cancel, so an application can persist or re-queue it.

    `Dispatcher.close()` returns one (and `Dispatcher.shutdown_report` keeps
    it). It lists only the jobs that the shutdown itself cancelled: jobs a
    caller cancelled earlier, and jobs that finished, are not in it.

    Attributes:
        never_started: Jobs that were still queued: they never ran. Their
            handles still hold what was submitted, so they can be submitted
            again elsewhere.
        interrupted: Jobs that were running and were cancelled part-way.
    """

    never_started: tuple[JobHandle[Any], ...] = ()
    interrupted: tuple[JobHandle[Any], ...] = ()

    @property
    def unfinished(self) -> tuple[JobHandle[Any], ...]:
        """Every job the shutdown cancelled: `never_started + interrupted`."""
        return self.never_started + self.interrupted

    def __len__(self) -> int:
        return len(self.never_started) + len(self.interrupted)

    def __repr__(self) -> str:
        return (
            f"<ShutdownReport never_started={len(self.never_started)} "
            f"interrupted={len(self.interrupted)}>"
        )
