"""`Stats`, a snapshot of a dispatcher's counters; `ShutdownReport`, what a shutdown cancelled."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from ._handle import JobHandle

__all__ = ("WINDOW", "Casualties", "Latency", "ShutdownReport", "Stats", "latency")

J = TypeVar("J")

WINDOW: int = 1024
"""How many recent samples the latency percentiles are taken over (a power of two)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of a duration over the most recent jobs, in seconds.

    Attributes:
        p50: The median.
        p95: 95% of the samples are at most this.
        p99: 99% of the samples are at most this.
        samples: How many samples the percentiles are taken over (at most
            the last 1024).
    """

    p50: float
    p95: float
    p99: float
    samples: int


def latency(samples: list[float], count: int) -> Latency | None:
    """Nearest-rank percentiles of the last `min(count, WINDOW)` samples of a ring."""
    n = min(count, WINDOW)
    if not n:
        return None
    ordered = sorted(samples[:n])

    def rank(q: float) -> float:
        # The smallest sample with at least a fraction q of them at or below it.
        return ordered[max(0, math.ceil(q * n) - 1)]

    return Latency(p50=rank(0.50), p95=rank(0.95), p99=rank(0.99), samples=n)


@dataclasses.dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of a dispatcher, taken in one synchronous step.

    Every snapshot satisfies
    `submitted == queued + busy + succeeded + failed + cancelled`.

    Attributes:
        workers: The size of the pool now (the `workers` argument, or the
            last `resize`).
        idle: Workers not running a job (`workers - busy`; 0 while a shrink
            leaves more jobs running than `workers`).
        busy: Jobs running now; each occupies one worker.
        queued: Jobs accepted and not started yet.
        submitted: Jobs accepted since the dispatcher started.
        succeeded: Jobs that returned a result.
        failed: Jobs that raised an exception.
        cancelled: Jobs cancelled before or while running.
        retried: Retries scheduled: failed tries that a `Retry` policy sent
            back to the queue (a job that ran three times counts 2).
        rejected: `submit_nowait` calls refused with `QueueFull`.
        timed_out: Tries stopped by their `timeout` (a retried timeout
            counts once per try).
        queue_wait: Time from being submitted to starting, over recent
            tries that ran to an end (for a retried job, measured to the
            start of the try, so it includes the earlier tries and
            backoffs); None before the first.
        run_time: Time from starting to succeeding or failing, over the same
            tries (cancelled runs are left out); None before the first.

    The latencies are taken over the last 1024 samples. The first 1024 jobs
    are all sampled; after that, one job in four (those whose `id` is a
    multiple of 4), which keeps the cost per job O(1) and small.
    """

    workers: int
    idle: int
    busy: int
    queued: int
    submitted: int
    succeeded: int
    failed: int
    cancelled: int
    retried: int = 0
    rejected: int = 0
    timed_out: int = 0
    queue_wait: Latency | None = None
    run_time: Latency | None = None

    @property
    def finished(self) -> int:
        """How many jobs are in a final state (succeeded + failed + cancelled)."""
        return self.succeeded + self.failed + self.cancelled


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class ShutdownReport:
    """What a shutdown had to cancel, so an application can persist or re-queue it.

    `Dispatcher.close()` returns one (and `Dispatcher.shutdown_report` keeps
    it). It lists only the jobs that the shutdown itself cancelled: jobs a
    caller cancelled earlier, and jobs that finished, are not in it. A `map`
    cut short by a cancellation (a deadline, Ctrl+C) counts as a shutdown of
    its own jobs: the ones it cancelled are listed here too, and the ones
    that had finished but whose results it never yielded are in
    `undelivered`.

    Attributes:
        never_started: Jobs that were still queued: they never ran. Their
            handles still hold what was submitted, so they can be submitted
            again elsewhere.
        interrupted: Jobs that had started and were cancelled part-way:
            running, or waiting out a retry backoff, or queued again for
            a retry.
        abandoned: Jobs among `interrupted` that had not stopped when
            `close(timeout=...)` gave up waiting for them: they ignore
            cancellation and were still running when `close()` returned.
        undelivered: Jobs that finished (succeeded or failed) for a `map`
            that was cut short before it yielded their outcome: their
            handles hold it, and their `args[0]` is the map's item.
    """

    never_started: tuple[JobHandle[Any], ...] = ()
    interrupted: tuple[JobHandle[Any], ...] = ()
    abandoned: tuple[JobHandle[Any], ...] = ()
    undelivered: tuple[JobHandle[Any], ...] = ()

    @property
    def unfinished(self) -> tuple[JobHandle[Any], ...]:
        """Every job the shutdown cancelled: `never_started + interrupted`."""
        return self.never_started + self.interrupted

    def __len__(self) -> int:
        return len(self.never_started) + len(self.interrupted)

    def __repr__(self) -> str:
        abandoned = f" abandoned={len(self.abandoned)}" if self.abandoned else ""
        if self.undelivered:
            abandoned += f" undelivered={len(self.undelivered)}"
        return (
            f"<ShutdownReport never_started={len(self.never_started)} "
            f"interrupted={len(self.interrupted)}{abandoned}>"
        )


class Casualties(Generic[J]):
    """The jobs a shutdown cancelled, gathered as it goes, for its `ShutdownReport`."""

    __slots__ = ("never_started", "interrupted", "abandoned", "undelivered")

    def __init__(self) -> None:
        self.never_started: list[J] = []
        self.interrupted: list[J] = []
        self.abandoned: list[J] = []
        self.undelivered: list[J] = []
