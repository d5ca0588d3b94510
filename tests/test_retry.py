"""The Retry policy (asyncpool._retry): which failures it retries, how often, and its delays.

What happens between tries (the backoff timer) is in test_backoff.py.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pytest

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
    """Every retry is logged at WARNING on "asyncpool", so no failure vanishes silently."""
    caplog.set_level(logging.WARNING, logger="asyncpool")
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
