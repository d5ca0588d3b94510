"""`Retry`: the policy that decides whether a failed job runs again, and when.

It also owns the one rule for a number that may be an int too large for a
float (`as_float`, `shown`): `Retry`'s checks use it, and so do the checks of
time limits and rates (asyncpool._options, the dispatcher), which import it
from here because this layer imports nothing of asyncpool's.
"""

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
        # An int too large for a float is a multiplier of inf, which is allowed.
        if _check_number("multiplier", self.multiplier) < 1:
            raise ValueError(f"Retry multiplier must be >= 1, got {shown(self.multiplier)}")
        if not 0 <= _check_number("jitter", self.jitter) <= 1:
            raise ValueError(f"Retry jitter must be between 0 and 1, got {shown(self.jitter)}")
        on = self.on
        if isinstance(on, tuple):
            bad = [t for t in on if not (isinstance(t, type) and issubclass(t, BaseException))]
            if bad or not on:
                raise TypeError(
                    "Retry on= must be an exception type, a non-empty tuple of exception "
                    f"types, or a predicate; got {on!r}"
                )
        elif isinstance(on, type):
            # A class is callable, but as a predicate it would build an instance
            # (always true, or an error): `on=int` is a mistake, not a predicate.
            if not issubclass(on, BaseException):
                raise TypeError(
                    "Retry on= must be an exception type, a tuple of exception types, "
                    f"or a predicate; got the class {on.__name__}, which is not an "
                    "exception type"
                )
        elif not callable(on):
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
        """The wait, in seconds, after `failures` failed tries (>= 1), jitter included.

        It is never NaN: it lies between 0 and `backoff_max`, and is 0 for
        every try when `backoff` is 0.
        """
        # Checked finite, so float() works; the multiplier may be inf.
        backoff = float(self.backoff)
        if backoff == 0:
            # Not 0 * growth: with an infinite multiplier that is NaN, and
            # min() would then pick backoff_max.
            return 0.0
        try:
            # A float power: it overflows at once (an int one would grow for ever).
            wait = backoff * as_float(self.multiplier) ** (failures - 1)
        except OverflowError:
            wait = math.inf
        # backoff > 0 and growth >= 1 (inf ** 0 is 1): wait is >= backoff, never NaN.
        wait = min(float(self.backoff_max), wait)
        if self.jitter:
            # jitter * random() is in [0, 1): the cut never exceeds the wait.
            wait -= wait * self.jitter * random.random()
        return wait


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Retry {name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"Retry {name} must be >= {minimum}, got {value}")


def _check_number(name: str, value: object) -> float:
    """`value` as a float (see `as_float`), once it is a number and not NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Retry {name} must be a number, got {value!r}")
    number = as_float(value)
    if math.isnan(number):
        raise ValueError(f"Retry {name} must be a number, got nan")
    return number


def _check_seconds(name: str, value: object) -> None:
    seconds = _check_number(name, value)
    if seconds < 0 or math.isinf(seconds):
        raise ValueError(
            f"Retry {name} must be a finite number of seconds >= 0, got {shown(value)}"
        )


def as_float(value: float) -> float:
    """A number (an int or a float) as a float; an int too large for one is inf or -inf.

    `float()` (and `math.isnan`, `math.isfinite`) raise OverflowError for an
    int beyond about 1.8e308. Every check of a number of seconds, a rate or
    a multiplier converts through here first, so that such an int counts as
    infinite: where inf is accepted (a time limit, a multiplier) it means
    the same; where a finite number is needed (a backoff, a rate) it is
    refused with the check's own message. Never a bare OverflowError.
    """
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def shown(value: object) -> str:
    """`value` as an error message shows it: as `str()` does, but an int too large
    for a float is described, not printed (it may be thousands of digits long, too
    long even for `str()`, which refuses ints of more than 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            sign = "a negative" if value < 0 else "an"
            return f"{sign} int too large for a float"
    return str(value)
