"""Per-job options (`timeout`, `retry`, `priority`, `key`): checking them, and where they live.

A job submitted without options carries none (its handle's `_opts` is
None), so the hot path pays a single test for the whole feature. A job with
options carries a `JobOptions`: the options themselves, and the scheduling
state they need.

Two checks the dispatcher shares with them live here too: `check_timeout`
(a job's limit, the default one, `close`'s) and `check_workers` (the size of
the pool, in the constructor and `resize`), with its `MAX_WORKERS`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Final

from ._retry import Retry, as_float, shown
from ._telemetry import capture_all

if TYPE_CHECKING:
    from ._ports import JobObserver
    from ._telemetry import Instrument, Origin

__all__ = (
    "MAX_WORKERS",
    "MIN_DEFAULT_QUEUE",
    "QUEUE_PER_WORKER",
    "RESERVED_OPTIONS",
    "JobOptions",
    "check_retry",
    "check_timeout",
    "check_workers",
    "default_queue_size",
    "pop_options",
)

RESERVED_OPTIONS: Final = frozenset({"timeout", "retry", "priority", "key"})
"""Keyword names `submit` keeps for per-job options; never passed to a job."""


class JobOptions:
    """The options of one job, and the scheduling state they need."""

    __slots__ = (
        "timeout",
        "retry",
        "priority",
        "key",
        "order",
        "parked",
        "holds_key",
        "tries",
        "observer",
        "timeout_off",
        "retry_off",
        "instruments",
        "carrier",
        "origin",
    )

    def __init__(
        self,
        timeout: float | None,
        retry: Retry | None,
        priority: int,
        key: Hashable | None,
        *,
        timeout_off: bool = False,
        retry_off: bool = False,
    ) -> None:
        self.timeout = timeout
        self.retry = retry
        self.priority = priority
        self.key = key
        self.order = 0
        """Its place among jobs of the same priority: its id, or after a retry
        the last id given out when it re-entered the queue."""
        self.parked = False
        """Waiting behind a running job of the same key, outside the job queue."""
        self.holds_key = False
        """This job is the one of its key that may run (or is running)."""
        self.tries = 0
        """How many times the job has started (`JobHandle.attempts`)."""
        self.observer: JobObserver | None = None
        """Told when each try starts (a job source's jobs; see `asyncpool.sources`)."""
        self.timeout_off = timeout_off
        """`timeout=None` was given to turn the dispatcher's default time limit off."""
        self.retry_off = retry_off
        """`retry=None` was given to turn the dispatcher's default retry policy off."""
        self.instruments: tuple[Instrument, ...] = ()
        """Told when the job is queued, and around each try (`asyncpool._telemetry`)."""
        self.carrier: dict[str, str] | None = None
        """What the submitter's instruments captured (a trace context), or None."""
        self.origin: Origin | None = None
        """Where a remote job came from, as its instruments should name it."""


def check_timeout(timeout: object, *, zero_ok: bool = False) -> float | None:
    """A time limit in seconds, or None for none.

    A job's limit must be > 0; `close(timeout=0)` (`zero_ok`) means "no time
    at all" and is allowed. `math.inf` is accepted (no limit in practice),
    and so is an int too large for a float: it counts as `math.inf`.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    seconds = as_float(timeout)
    if zero_ok:
        if math.isnan(seconds) or seconds < 0:
            raise ValueError(f"timeout must be >= 0 seconds, got {shown(timeout)}")
    elif math.isnan(seconds) or seconds <= 0:
        raise ValueError(
            f"timeout must be > 0 seconds (or None for no limit), got {shown(timeout)}"
        )
    return seconds


QUEUE_PER_WORKER: Final = 16
"""How many jobs per worker the default job queue holds, above `MIN_DEFAULT_QUEUE`."""
MIN_DEFAULT_QUEUE: Final = 1024
"""The default job queue's least size: the seed's 1024, for pools of up to 64 workers."""


def default_queue_size(workers: int) -> int:
    """The `queue_size` a `Dispatcher(workers)` gets when none is given.

    1024 (the Go seed's queue) for up to 64 workers, and 16 places per
    worker above that. A burst of jobs finds every worker idle and wakes one
    worker per job; then the queue fills, `submit` waits, and the workers
    run what it holds without a wake-up. With a queue 16 times the pool, at
    most one job in 17 pays a wake-up, whatever the size of the pool (with
    1024 places and 1024 workers, one job in two did, which halved the
    throughput of short jobs).
    """
    return max(MIN_DEFAULT_QUEUE, QUEUE_PER_WORKER * workers)


MAX_WORKERS: Final = 1_000_000
"""The most workers a dispatcher takes (`Dispatcher(workers)`, `resize`).

A started worker costs about 5.2 KB (measured with Python 3.11 on Linux, the
default loop and uvloop alike: tracemalloc and RSS both give 5.0-5.3 KB per
worker; about 3 KB of it is the worker's inbox, an asyncio queue, the rest its
task and coroutine frame). Only the first 64 workers start with the pool; the
others start when jobs need them and retire when they stay idle, so an idle
`Dispatcher(1_000_000)` takes well under 1 MB, but one that runs a million
jobs at once takes about 5 GB for its workers. Anything larger is taken for a
mistake (a count of jobs or bytes passed as `workers`): refused at the call,
before anything is allocated,
rather than found when `start()` or `resize()` runs out of memory.
"""


def check_workers(workers: object) -> int:
    """A pool size: an int from 1 to `MAX_WORKERS`.

    Raises:
        TypeError: `workers` is not an int (a bool is not one).
        ValueError: `workers` < 1 or > `MAX_WORKERS`.
    """
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(f"workers must be an int, got {type(workers).__name__} {workers!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {shown(workers)}")
    if workers > MAX_WORKERS:
        raise ValueError(
            f"workers must be <= {MAX_WORKERS} (a started worker takes about 5 KB of memory, "
            f"so {MAX_WORKERS} jobs at once already take about 5 GB), got {shown(workers)}"
        )
    return workers


def check_retry(retry: object, name: str = "retry") -> Retry | None:
    """A retry policy: None or a `Retry`."""
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"{name} must be an asyncpool.Retry or None, got {retry!r}")
    return retry


def pop_options(
    kwargs: dict[str, Any],
    default_timeout: float | None,
    default_retry: Retry | None,
    instruments: tuple[Instrument, ...] = (),
) -> JobOptions | None:
    """Take the per-job options out of `submit`'s keyword arguments.

    Missing options take the dispatcher's defaults (an explicit `timeout=None`
    or `retry=None` turns a default off for this job). Returns None when the
    job ends up with no option at all, so that it takes the fast path (never
    with `instruments`: they ride in the options, and each submitter's
    `capture` fills the job's carrier here, in the submitter's context).

    Raises:
        TypeError, ValueError: an option has a wrong type or value; the
            message names it.
    """
    timeout = check_timeout(kwargs.pop("timeout")) if "timeout" in kwargs else default_timeout
    retry = check_retry(kwargs.pop("retry")) if "retry" in kwargs else default_retry
    priority = kwargs.pop("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, got {priority!r}")
    key = kwargs.pop("key", None)
    if key is not None:
        try:
            hash(key)
        except TypeError as exc:
            raise TypeError(
                f"key must be hashable (jobs of one key are found by it), got {key!r}"
            ) from exc
    # A default turned off for this job is a fact `JobHandle.options` must
    # keep, so that submitting the job again with them turns it off again.
    timeout_off = timeout is None and default_timeout is not None
    retry_off = retry is None and default_retry is not None
    if (
        timeout is None
        and retry is None
        and priority == 0
        and key is None
        and not (timeout_off or retry_off)
        and not instruments
    ):
        return None
    opts = JobOptions(timeout, retry, priority, key, timeout_off=timeout_off, retry_off=retry_off)
    if instruments:
        opts.instruments = instruments
        opts.carrier = capture_all(instruments)
    return opts
