"""The Retry policy (asyncpool._retry): which failures it retries, how often, and its delays.

What happens between tries (the backoff timer) is in test_backoff.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import asyncpool
from asyncpool import Dispatcher, Retry
from tests._jobs import Flaky, Gate, check_stats


# Bad input: a bad Retry field must fail when the policy is made, not at the first retry.
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"attempts": 0}, ValueError, "Retry attempts must be >= 1, got 0"),
        ({"attempts": 2.0}, TypeError, "Retry attempts must be an int"),
        ({"backoff": -1}, ValueError, "Retry backoff must be a finite number of seconds >= 0"),
        ({"backoff_max": float("inf")}, ValueError, "Retry backoff_max must be a finite"),
        ({"multiplier": 0.5}, ValueError, "Retry multiplier must be >= 1"),
        ({"jitter": 1.5}, ValueError, "Retry jitter must be between 0 and 1"),
        ({"jitter": "some"}, TypeError, "Retry jitter must be a number"),
        ({"on": "ValueError"}, TypeError, "Retry on= must be an exception type"),
        ({"on": (ValueError, int)}, TypeError, "Retry on= must be an exception type"),
        ({"on": ()}, TypeError, "Retry on= must be an exception type"),
    ],
)
def test_bad_input_retry_policy(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each invalid Retry field raises when the policy is made, naming the field."""
    with pytest.raises(error) as caught:
        asyncpool.Retry(**kwargs)
    assert str(caught.value).startswith(message)


def test_retry_delay_grows_to_its_cap_with_bounded_jitter() -> None:
    """delay(n) = min(backoff_max, backoff * multiplier**(n-1)), minus at most `jitter` of it."""
    exact = Retry(backoff=1, multiplier=3, backoff_max=5, jitter=0)
    assert [exact.delay(n) for n in (1, 2, 3, 4)] == [1, 3, 5, 5]
    assert exact.delay(10_000) == 5  # no OverflowError on a long run of failures
    jittery = Retry(backoff=2, multiplier=1, backoff_max=2, jitter=0.5)
    random.seed(7)
    delays = [jittery.delay(1) for _ in range(200)]
    assert all(1 <= d <= 2 for d in delays)
    assert len(set(delays)) > 100  # it does vary


# Regression (issue 16): an int too large for a float made Retry raise a bare OverflowError.
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"backoff": 10**400},
            "Retry backoff must be a finite number of seconds >= 0, got an int too large",
            id="backoff-10**400",
        ),
        pytest.param(
            {"backoff_max": 10**400},
            "Retry backoff_max must be a finite number of seconds >= 0, got an int too large",
            id="backoff_max-10**400",
        ),
        pytest.param(
            {"backoff": -(10**400)},
            "Retry backoff must be a finite number of seconds >= 0, got a negative int",
            id="backoff--10**400",
        ),
        pytest.param(
            {"multiplier": -(10**400)},
            "Retry multiplier must be >= 1, got a negative int too large",
            id="multiplier--10**400",
        ),
        pytest.param(
            {"jitter": 10**400},
            "Retry jitter must be between 0 and 1, got an int too large",
            id="jitter-10**400",
        ),
        # Too long for str() (4300 digits at most): the message must not print it.
        pytest.param(
            {"backoff": 10**5000},
            "Retry backoff must be a finite number of seconds >= 0, got an int too large",
            id="backoff-10**5000",
        ),
    ],
)
def test_retry_int_too_large_for_a_float_is_refused_by_name(
    kwargs: dict[str, Any], message: str
) -> None:
    """A too-large int where Retry wants finite seconds or a fraction is a ValueError naming it."""
    with pytest.raises(ValueError, match=r"^Retry \w+ must be") as caught:
        Retry(**kwargs)
    assert str(caught.value).startswith(message)


# Regression (issue 16): Retry(multiplier=10**400) raised OverflowError though inf is accepted.
def test_retry_multiplier_too_large_for_a_float_counts_as_infinite() -> None:
    """multiplier=10**400 is accepted and waits like multiplier=inf: backoff, then backoff_max."""
    huge = Retry(backoff=1, backoff_max=7, multiplier=10**400, jitter=0)
    infinite = Retry(backoff=1, backoff_max=7, multiplier=math.inf, jitter=0)
    assert [huge.delay(n) for n in (1, 2, 3, 1000)] == [1, 7, 7, 7]
    assert [infinite.delay(n) for n in (1, 2, 3, 1000)] == [1, 7, 7, 7]


# Regression (issue 16): Retry(on=int) was taken for a predicate and never retried anything.
@pytest.mark.parametrize("on", [int, object, str])
def test_retry_on_a_class_that_is_not_an_exception_is_refused(on: type) -> None:
    """A class that is not an exception type is refused as `on`, not taken for a predicate."""
    with pytest.raises(TypeError) as caught:
        Retry(on=on)
    assert str(caught.value).startswith(
        "Retry on= must be an exception type, a tuple of exception types, or a predicate; "
        f"got the class {on.__name__}, which is not an exception type"
    )


# Regression (issue 16): backoff=0 with multiplier=inf waited backoff_max (0 * inf is NaN).
@pytest.mark.parametrize("multiplier", [math.inf, pytest.param(10**400, id="10**400"), 2, 1])
def test_retry_zero_backoff_means_every_wait_is_zero(multiplier: float) -> None:
    """With backoff=0 every wait is 0, whatever the multiplier and however many failures."""
    policy = Retry(attempts=10**6, backoff=0, backoff_max=10, multiplier=multiplier)
    assert [policy.delay(n) for n in (1, 2, 3, 2000, 10**6)] == [0, 0, 0, 0, 0]


_SECONDS = st.one_of(
    st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    st.integers(min_value=0, max_value=int(1.7e308)),
)
_MULTIPLIERS = st.one_of(
    st.floats(min_value=1, allow_nan=False),  # math.inf included
    st.integers(min_value=1, max_value=10**400),
)


# Regression (issue 16): Retry.delay could return NaN (backoff 0 times an infinite growth).
@given(
    backoff=_SECONDS,
    backoff_max=_SECONDS,
    multiplier=_MULTIPLIERS,
    jitter=st.floats(min_value=0, max_value=1),
    failures=st.integers(min_value=1, max_value=10**9),
)
@example(backoff=0, backoff_max=10, multiplier=math.inf, jitter=0, failures=2)
@example(backoff=0, backoff_max=10, multiplier=2, jitter=0.5, failures=5000)
@example(backoff=5e-324, backoff_max=1, multiplier=math.inf, jitter=1, failures=3)
def test_retry_delay_is_a_wait_between_zero_and_backoff_max(
    backoff: float, backoff_max: float, multiplier: float, jitter: float, failures: int
) -> None:
    """delay() is never NaN: 0 <= delay <= jitter-free wait <= backoff_max, 0 if backoff is 0."""
    policy = Retry(backoff=backoff, backoff_max=backoff_max, multiplier=multiplier, jitter=jitter)
    exact = dataclasses.replace(policy, jitter=0)
    wait = policy.delay(failures)
    assert not math.isnan(wait)
    # These hold exactly, in floats (an int field is compared as the float it rounds to).
    assert 0 <= wait <= exact.delay(failures) <= float(backoff_max)
    assert exact.delay(1) == min(float(backoff), float(backoff_max))
    if backoff == 0:
        assert wait == 0
    # This one only within a few ulps: the jitter's arithmetic rounds.
    full = exact.delay(failures)
    assert wait >= full * (1 - jitter) - 4 * math.ulp(full)


def test_retry_never_retries_cancellation() -> None:
    """Cancellation, KeyboardInterrupt and SystemExit are never retried, whatever `on` says."""
    policy = Retry(on=BaseException)
    assert policy.retries(ValueError())
    assert not policy.retries(asyncio.CancelledError())
    assert not policy.retries(KeyboardInterrupt())
    assert not policy.retries(SystemExit())


async def test_retry_runs_again_until_it_succeeds(fast_clock: None) -> None:
    """A failing job is retried with exponential backoff until it succeeds; attempts = tries."""
    flaky = Flaky(failures=2)
    async with Dispatcher(workers=1) as d:
        handle = await d.submit(flaky, retry=Retry(attempts=5, backoff=0.5, jitter=0))
        assert await handle == 3
    assert handle.attempts == 3
    gaps = [b - a for a, b in zip(flaky.starts, flaky.starts[1:], strict=False)]
    assert gaps == [pytest.approx(0.5), pytest.approx(1.0)]
    stats = check_stats(d)
    assert (stats.succeeded, stats.failed, stats.retried) == (1, 0, 2)


async def test_retry_gives_up_after_its_attempts() -> None:
    """After `attempts` tries the last failure is final, and is the one the handle raises."""
    flaky = Flaky(failures=100)
    async with Dispatcher(workers=1) as d:
        handle = await d.submit(flaky, retry=Retry(attempts=3, backoff=0))
        with pytest.raises(ConnectionError, match="failure 3"):
            await handle
    assert handle.attempts == 3
    stats = check_stats(d)
    assert (stats.failed, stats.retried) == (1, 2)


async def test_retry_only_the_failures_it_is_told_to() -> None:
    """`on` picks the retried failures: types, a tuple of types, or a predicate."""
    async with Dispatcher(workers=1) as d:
        by_type = Flaky(failures=1, error=ValueError)
        not_retried = await d.submit(by_type, retry=Retry(backoff=0, on=ConnectionError))
        with pytest.raises(ValueError, match="failure 1"):
            await not_retried
        by_tuple = Flaky(failures=1, error=ValueError)
        retried = await d.submit(by_tuple, retry=Retry(backoff=0, on=(OSError, ValueError)))
        assert await retried == 2
        by_predicate = Flaky(failures=1, error=ValueError)
        predicate = Retry(backoff=0, on=lambda exc: "failure" in str(exc))
        assert await (await d.submit(by_predicate, retry=predicate)) == 2
    assert (not_retried.attempts, retried.attempts) == (1, 2)


async def test_retry_cancellation_is_not_an_attempt() -> None:
    """A running job that is cancelled is not retried, even by a policy that retries everything."""
    gate = Gate()
    async with Dispatcher(workers=1) as d:
        handle = await d.submit(gate, retry=Retry(attempts=5, backoff=0, on=BaseException))
        await gate.started.wait()
        handle.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handle
    assert (gate.runs, handle.attempts, d.stats().retried) == (1, 1, 0)


async def test_retry_after_a_timeout(fast_clock: None) -> None:
    """A try stopped by its timeout is a failure like any other: the policy retries it."""
    tries: list[int] = []

    async def slow_then_fast() -> str:
        tries.append(1)
        await asyncio.sleep(10 if len(tries) == 1 else 0.1)
        return "second try"

    async with Dispatcher(workers=1) as d:
        handle = await d.submit(slow_then_fast, timeout=1, retry=Retry(backoff=0))
        assert await handle == "second try"
    stats = d.stats()
    assert (handle.attempts, stats.timed_out, stats.retried, stats.failed) == (2, 1, 1, 0)


async def test_retry_dispatcher_default_skips_coroutine_objects() -> None:
    """Dispatcher(retry=...) retries callables, not coroutine objects (which run once)."""
    flaky = Flaky(failures=1)
    async with Dispatcher(workers=1, retry=Retry(backoff=0)) as d:
        assert await (await d.submit(flaky)) == 2
        once = Flaky(failures=1)
        handle = await d.submit(once())
        with pytest.raises(ConnectionError):
            await handle
        off = Flaky(failures=1)
        with pytest.raises(ConnectionError):
            await (await d.submit(off, retry=None))
    assert (len(once.starts), len(off.starts)) == (1, 1)


async def test_retry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Every retry is logged (at INFO) on "asyncpool", so no failure vanishes silently."""
    caplog.set_level(logging.INFO, logger="asyncpool")
    async with Dispatcher(workers=1) as d:
        await (await d.submit(Flaky(failures=2), retry=Retry(backoff=0)))
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncpool"]
    assert len(messages) == 2
    assert "failed (try 1 of 3), retrying" in messages[0]
    assert "ConnectionError('failure 2')" in messages[1]


async def test_retry_predicate_that_raises_fails_the_job_not_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken `on=` predicate does not kill a worker: the job fails with its own error, logged."""
    caplog.set_level(logging.ERROR, logger="asyncpool")

    def broken(exc: BaseException) -> bool:
        raise ZeroDivisionError("predicate bug")

    async with Dispatcher(workers=1) as d:
        handle = await d.submit(Flaky(failures=1), retry=Retry(backoff=0, on=broken))
        with pytest.raises(ConnectionError):
            await handle
        assert await (await d.submit(asyncio.sleep, 0, "worker alive")) == "worker alive"
    assert any("retry predicate" in r.getMessage() for r in caplog.records)
