"""`Throughput` (the chart's ring) and the dashboard's formatting of values.

The ring is tested with a clock the test sets, and its sampling loop on the
fast-forward clock (looptime): ten minutes of samples take no real time.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from asyncpool._dashboard_format import Clipped, clip, duration, rate, when
from asyncpool._dashboard_throughput import SECONDS, Throughput


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_observation_is_a_baseline() -> None:
    """What finished before the dashboard looked is not counted in its first second."""
    ring = Throughput(clock=Clock())
    ring.observe(500)
    assert ring.samples() == [0.0]


def test_observations_fill_the_second_they_are_made_in() -> None:
    """Within one second the growth adds up; the next second starts a new sample."""
    clock = Clock()
    ring = Throughput(clock=clock)
    ring.observe(0)
    clock.now += 0.3
    ring.observe(2)
    clock.now += 0.3
    ring.observe(5)
    clock.now += 0.6
    ring.observe(6)
    assert ring.samples() == [5.0, 1.0]


def test_skipped_seconds_share_the_growth_evenly() -> None:
    """Observed again 4 s later with 8 more: 2 in each of those seconds."""
    clock = Clock()
    ring = Throughput(clock=clock)
    ring.observe(0)
    clock.now += 4
    ring.observe(8)
    assert ring.samples() == [0.0, 2.0, 2.0, 2.0, 2.0]


def test_a_count_that_goes_down_adds_nothing() -> None:
    """A source that starts counting again from 0 adds no negative sample."""
    clock = Clock()
    ring = Throughput(clock=clock)
    ring.observe(100)
    clock.now += 1
    ring.observe(3)
    clock.now += 1
    ring.observe(7)
    assert ring.samples() == [0.0, 0.0, 4.0]


def test_the_ring_keeps_ten_minutes() -> None:
    """At most 600 samples, however long the gap; the newest are kept."""
    clock = Clock()
    ring = Throughput(clock=clock)
    ring.observe(0)
    clock.now += 5000
    ring.observe(5000)
    assert len(ring.samples()) == SECONDS == 600
    assert set(ring.samples()) == {1.0}


def test_rate_is_the_mean_of_the_last_complete_seconds() -> None:
    """The current (partial) second is left out of the rate."""
    clock = Clock()
    ring = Throughput(clock=clock)
    assert ring.rate() == 0.0
    ring.observe(0)
    for total in (10, 30, 60, 1000):
        clock.now += 1
        ring.observe(total)
    assert ring.samples() == [0.0, 10.0, 20.0, 30.0, 940.0]
    assert ring.rate(3) == 20.0
    assert ring.rate() == 15.0


async def test_run_samples_once_a_second_until_cancelled(fast_clock: None) -> None:
    """The lifespan's sampler observes the count every second, on a fixed schedule."""
    loop = asyncio.get_running_loop()
    ring = Throughput(clock=loop.time)
    total = 0

    async def count() -> int:
        nonlocal total
        total += 3
        return total

    sampler = asyncio.create_task(ring.run(count))
    await asyncio.sleep(10.5)
    sampler.cancel()
    await asyncio.wait([sampler])
    assert sampler.cancelled()
    assert ring.samples() == [0.0] + [3.0] * 10


async def test_run_logs_a_failing_count_once_and_fills_the_gap(
    fast_clock: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A count that raises for 3 s is logged once; the next good one spreads over the gap."""
    caplog.set_level(logging.WARNING, logger="asyncpool")
    loop = asyncio.get_running_loop()
    ring = Throughput(clock=loop.time)
    answers: list[int | Exception] = [0, ConnectionError("away"), ConnectionError("away")]
    answers += [ConnectionError("away"), 8, 9]

    async def count() -> int:
        answer = answers.pop(0) if answers else 9
        if isinstance(answer, Exception):
            raise answer
        return answer

    sampler = asyncio.create_task(ring.run(count))
    await asyncio.sleep(5.5)
    sampler.cancel()
    await asyncio.wait([sampler])
    warnings = [r.getMessage() for r in caplog.records if r.name == "asyncpool"]
    assert warnings == ["asyncpool dashboard: cannot count finished jobs: away"]
    assert ring.samples() == [0.0, 2.0, 2.0, 2.0, 2.0, 1.0]


def test_clip_cuts_and_says_how_much_is_left() -> None:
    """Text within the limit is whole; longer text is cut, with the count of what was left."""
    assert clip("abc", 3) == Clipped("abc", 0)
    assert str(clip("abc", 3)) == "abc"
    assert clip("abcdef", 4) == Clipped("abcd", 2)
    assert str(clip("abcdef", 4)) == "abcd… (2 more characters)"
    assert str(clip(12345, 2)) == "12… (3 more characters)"


def test_times_durations_and_rates_read_as_people_write_them() -> None:
    """UTC times, durations in the largest fitting unit, rates without needless decimals."""
    assert when(0.0) == "1970-01-01 00:00:00 UTC"
    assert when(None) == "—"
    assert [duration(s) for s in (0.0123, 4.25, 185, 7800, 90000)] == [
        "12 ms",
        "4.2 s",
        "3 min 05 s",
        "2 h 10 min",
        "1 d 01 h",
    ]
    assert duration(-1) == "0 ms"
    assert duration(None) == "—"
    assert [rate(r) for r in (0, 0.25, 2.0, 12.5, 340.2)] == [
        "0/s",
        "0.2/s",
        "2/s",
        "12.5/s",
        "340/s",
    ]
