"""`Stats`: a consistent snapshot of a dispatcher's counters."""

from __future__ import annotations

import dataclasses

__all__ = ("Stats",)


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
