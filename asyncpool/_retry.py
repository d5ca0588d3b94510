"""`Retry`: the policy that decides whether a failed job runs again, and when."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections.abc import Callable

__all__ = ("Retry",)

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]

# Never retried, whatever `on` says: a cancelled job was asked to stop, and
# these two must leave the event loop.
_NEVER_RETRIED = (asyncio.CancelledError, KeyboardInterrupt, SystemExit)


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """A retry policy: how often a failed job runs again, after how long.

    Pass one as `submit(..., retry=Retry(...))`, or as the dispatcher-wide
    default `Dispatcher(retry=Retry(...))`.

    The wait before try number `n + 1` (after `n` failed tries) is
    `min(backoff_max, backoff * multiplier ** (n - 1))`, shortened by a random
    part of up to `jitter` of it (so that jobs that failed together do not all
    come back together). While it waits, the job holds no worker: it counts
    as queued, and re-enters the job queue (at the back of its priority) when
    the wait is over.

    A cancelled job is never retried, and cancellation never counts as a try.

    Example:
        ```python
        from asyncpool import Retry

        policy = Retry(attempts=5, backoff=0.5, backoff_max=30, on=(ConnectionError, TimeoutError))
        ```

    Attributes:
        attempts: How many tries in all, the first one included (>= 1;
            1 means no retry).
        backoff: The wait after the first failure, in seconds (>= 0).
        backoff_max: The longest wait, in seconds (>= 0).
        multiplier: How much each wait grows over the last (>= 1).
        jitter: The largest part of a wait that is cut off at random, from
            0 (waits are exact) to 1 (a wait is anywhere between 0 and the
            full wait).
        on: Which failures are retried: an exception type, a tuple of types,
            or a predicate `on(exception) -> bool`. The default retries every
            `Exception`, `asyncpool.JobTimeout` included.
    """

    attempts: int = 3
    backoff: float = 0.1
    backoff_max: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.1
    on: RetryOn = Exception

    def __post_init__(self) -> None:
        _check_int("attempts", self.attempts, 1)
        _check_seconds("backoff", self.backoff)
        _check_seconds("backoff_max", self.backoff_max)
        _check_number("multiplier", self.multiplier)
        if self.multiplier < 1:
            raise ValueError(f"Retry multiplier must be >= 1, got {self.multiplier}")
        _check_number("jitter", self.jitter)
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Retry jitter must be between 0 and 1, got {self.jitter}")
        on = self.on
        if isinstance(on, tuple):
            bad = [t for t in on if not (isinstance(t, type) and issubclass(t, BaseException))]
            if bad or not on:
                raise TypeError(
                    "Retry on= must be an exception type, a non-empty tuple of exception "
                    f"types, or a predicate; got {on!r}"
                )
        elif not (isinstance(on, type) and issubclass(on, BaseException)) and not callable(on):
            raise TypeError(
                "Retry on= must be an exception type, a tuple of exception types, "
                f"or a predicate; got {on!r}"
            )

    def retries(self, exc: BaseException) -> bool:
        """Whether a failure with `exc` is one this policy retries.

        Cancellation (and KeyboardInterrupt, SystemExit) never is.
        """
        if isinstance(exc, _NEVER_RETRIED):
            return False
        on = self.on
        if isinstance(on, (type, tuple)):
            return isinstance(exc, on)
        return bool(on(exc))

    def delay(self, failures: int) -> float:
        """The wait, in seconds, after `failures` failed tries (>= 1), jitter included."""
        try:
            wait = self.backoff * self.multiplier ** (failures - 1)
        except OverflowError:
            wait = math.inf
        wait = min(self.backoff_max, wait)
        if self.jitter:
            wait -= wait * self.jitter * random.random()
        return wait


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Retry {name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"Retry {name} must be >= {minimum}, got {value}")


def _check_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Retry {name} must be a number, got {value!r}")
    if math.isnan(value):
        raise ValueError(f"Retry {name} must be a number, got nan")


def _check_seconds(name: str, value: object) -> None:
    _check_number(name, value)
    assert isinstance(value, (int, float))
    if value < 0 or math.isinf(value):
        raise ValueError(f"Retry {name} must be a finite number of seconds >= 0, got {value}")
