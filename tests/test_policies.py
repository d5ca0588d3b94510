"""Scheduling policies (asyncpool._policies): priority, keys and the rate limit.

Rate-limit tests run on the fast-forward clock (`fast_clock`), where loop
time is virtual and exact to looptime's resolution (1 microsecond).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Sequence
from typing import Any

import pytest

import asyncpool
from asyncpool import Dispatcher, JobHandle, JobState, Retry
from asyncpool._testing import internals
from tests._jobs import Flaky, Gate, Peak, check_stats, guarded, instant, let_run, state_of, tracked

# ----------------------------------------------------------------- priority


async def _run_in_order(d: Dispatcher, jobs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Block the only worker, queue `jobs`, release it, and return the order they ran in."""
    ran: list[str] = []

    async def record(name: str) -> None:
        ran.append(name)

    blocker = Gate()
    await d.submit(blocker)
    await blocker.started.wait()
    for name, options in jobs:
        await d.submit(record, name, **options)
    blocker.release()
    await d.join()
    return ran


async def test_priority_higher_runs_first_fifo_among_equals() -> None:
    """Higher priority runs first; equal priorities run in submission order."""
    jobs: list[tuple[str, dict[str, Any]]] = [
        ("a0", {}),
        ("b5", {"priority": 5}),
        ("c-1", {"priority": -1}),
        ("d5", {"priority": 5}),
        ("e0", {"priority": 0}),
        ("f10", {"priority": 10}),
        ("g-1", {"priority": -1}),
        ("h0", {}),
    ]
    async with Dispatcher(workers=1) as d:
        ran = await _run_in_order(d, jobs)
    assert ran == ["f10", "b5", "d5", "a0", "e0", "h0", "c-1", "g-1"]


async def test_priority_skips_cancelled_jobs_and_survives_compaction() -> None:
    """Cancelled queued jobs never run; the others keep their order, however many are cancelled."""
    ran: list[int] = []

    async def record(n: int) -> None:
        ran.append(n)

    blocker = Gate()
    async with Dispatcher(workers=1, queue_size=0) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        handles = [await d.submit(record, n, priority=n % 7) for n in range(300)]
        for handle in handles[::3] + handles[1::3]:  # 200 cancelled: the queue gets compacted
            handle.cancel()
        blocker.release()
    expected = sorted(range(2, 300, 3), key=lambda n: (-(n % 7), n))
    assert ran == expected
    assert check_stats(d).cancelled == 200


async def test_priority_jobs_count_against_the_queue_bound() -> None:
    """Jobs with a priority take a place in the bounded queue like any other."""
    blocker = Gate()
    async with Dispatcher(workers=1, queue_size=2) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        await d.submit(asyncio.sleep, 0, priority=3)
        d.submit_nowait(asyncio.sleep, 0, priority=-3)
        with pytest.raises(asyncpool.QueueFull):
            d.submit_nowait(asyncio.sleep, 0, priority=9)
        blocker.release()
    assert d.stats().rejected == 1


# Regression: the first priority job ever seen, parked behind its key, was stranded.
async def test_priority_job_released_by_its_key_is_not_stranded() -> None:
    """The first priority job ever seen, parked behind its key, runs once the key is free."""
    gate = Gate()
    async with Dispatcher(workers=1) as d:
        await d.submit(gate, key="k")
        await gate.started.wait()

        async def ran() -> str:
            return "ran"

        handle = await d.submit(ran, key="k", priority=5)
        gate.release()
        assert await asyncio.wait_for(asyncio.shield(handle), 10) == "ran"


# ---------------------------------------------------------------------- key


async def test_key_same_key_in_order_never_at_once_other_keys_in_parallel() -> None:
    """Jobs of one key run one at a time in submission order; different keys run side by side."""
    gates = {(k, i): Gate(value=(k, i)) for k in "ab" for i in range(3)}
    async with Dispatcher(workers=4) as d:
        handles = {name: await d.submit(g, key=name[0]) for name, g in gates.items()}
        await gates["a", 0].started.wait()
        await gates["b", 0].started.wait()  # a and b run side by side
        assert check_stats(d).busy == 2  # 4 workers, but one job per key
        for i in range(3):
            for k in "ab":
                assert gates[k, i].started.is_set()
                assert all(not gates[k, j].started.is_set() for j in range(i + 1, 3))
                gates[k, i].release()
                await handles[k, i]
                if i < 2:
                    await gates[k, i + 1].started.wait()
    assert all(g.runs == 1 for g in gates.values())


async def test_key_failed_or_cancelled_job_does_not_block_its_key() -> None:
    """A job of a key that fails, or is cancelled (running, queued or parked), lets the next go."""
    first, second, third, fourth = Gate(), Gate(), Gate(value="fourth"), Gate(value="fifth")
    parked_then_cancelled = Gate()
    async with Dispatcher(workers=2, on_error=lambda h, e: None) as d:
        h1 = await d.submit(first, key="k")
        h2 = await d.submit(second, key="k")
        h_parked = await d.submit(parked_then_cancelled, key="k")
        h3 = await d.submit(third, key="k")
        h4 = await d.submit(fourth, key="k")
        await first.started.wait()
        h_parked.cancel()  # parked behind `first`
        first.fail(RuntimeError("boom"))
        await second.started.wait()
        h2.cancel()  # cancelled while running
        await third.started.wait()
        third.release()
        await fourth.started.wait()
        fourth.release()
        assert await h4 == "fifth"
    assert (state_of(h1), state_of(h2), state_of(h_parked), state_of(h3)) == (
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.CANCELLED,
        JobState.SUCCEEDED,
    )
    assert parked_then_cancelled.runs == 0


async def test_key_bookkeeping_is_freed_when_a_key_goes_idle() -> None:
    """Per-key state lives only while a key has jobs: many distinct keys leave nothing behind."""
    async with Dispatcher(workers=8) as d:
        for wave in range(5):
            for n in range(2_000):
                await d.submit(asyncio.sleep, 0, key=(wave, n % 1_000))
            await d.join()
            assert internals(d).held_keys == 0  # nothing kept per key once its jobs are done
        assert check_stats(d).succeeded == 10_000


async def test_key_parked_jobs_keep_their_place_in_the_queue_bound() -> None:
    """Jobs parked behind their key still count against queue_size, so the bound bounds memory."""
    gate = Gate()
    async with Dispatcher(workers=2, queue_size=2) as d:
        running = await d.submit(gate, key="k")
        await gate.started.wait()
        parked = [d.submit_nowait(asyncio.sleep, 0, key="k") for _ in range(2)]
        for _ in range(3):
            await asyncio.sleep(0)  # the idle worker could take them, if they were not parked
        assert all(h.state is JobState.QUEUED for h in parked)
        with pytest.raises(asyncpool.QueueFull):
            d.submit_nowait(asyncio.sleep, 0, key="other")
        gate.release()
        await running
    assert all(h.done() for h in parked)


async def test_key_order_beats_priority_within_a_key() -> None:
    """A later job of a key never overtakes an earlier one, whatever their priorities."""
    async with Dispatcher(workers=1) as d:
        ran = await _run_in_order(
            d,
            [
                ("k-low-first", {"key": "k", "priority": 0}),
                ("k-high-second", {"key": "k", "priority": 9}),
                ("other", {"priority": 5}),
                ("k-low-third", {"key": "k", "priority": -5}),
            ],
        )
    # "other" (priority 5) may go before k-low-first (0); within key k the
    # submission order holds, although k-high-second has the top priority.
    assert ran == ["other", "k-low-first", "k-high-second", "k-low-third"]


async def test_key_retry_keeps_the_key(fast_clock: None) -> None:
    """A keyed job waiting to be retried still holds its key: later jobs of the key wait for it."""
    ran: list[str] = []
    flaky = Flaky(failures=1)

    async def retried() -> None:
        await flaky()
        ran.append("retried")

    async def later() -> None:
        ran.append("later")

    async with Dispatcher(workers=2) as d:
        await d.submit(retried, key="k", retry=Retry(backoff=5))
        await d.submit(later, key="k")
    assert ran == ["retried", "later"]


async def test_key_shutdown_cancels_parked_jobs_and_reports_them() -> None:
    """close(cancel=True) ends parked jobs too; they are reported as never started."""
    gate = Gate()
    d = Dispatcher(workers=2)
    await d.start()
    running = await d.submit(gate, key="k")
    await gate.started.wait()
    parked = [await d.submit(asyncio.sleep, 0, key="k") for _ in range(3)]
    for _ in range(3):
        await asyncio.sleep(0)
    report = await d.close(cancel=True)
    assert running.cancelled()
    assert all(h.cancelled() for h in parked)
    assert set(report.never_started) == set(parked)
    assert report.interrupted == (running,)
    assert internals(d).held_keys == 0
    check_stats(d)


# Regression: a job released by its key overtook an older job of the same priority.
@pytest.mark.parametrize("priority", [0, 5])
async def test_key_follower_keeps_fifo_among_equal_priorities(priority: int) -> None:
    """A job released by its key does not jump ahead of an older job of the same priority."""
    order: list[str] = []

    async def record(name: str) -> None:
        order.append(name)

    blocker = Gate()
    async with Dispatcher(workers=1) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        await d.submit(record, "K1", key="k", priority=priority)
        await d.submit(record, "X", priority=priority)
        await d.submit(record, "K2", key="k", priority=priority)
        blocker.release()
    assert order == ["K1", "X", "K2"]


# --------------------------------------------------------------- rate limit


def start_times(handles: Sequence[JobHandle[Any]]) -> list[float]:
    """The handles' start times on the loop clock, sorted."""
    times = [h.started_at for h in handles]
    known = [t for t in times if t is not None]
    assert len(known) == len(times), "a job never started"
    return sorted(known)


@pytest.mark.parametrize(
    ("rate", "burst", "jobs"), [(10.0, 1, 30), (5.0, 3, 20), (40.0, 8, 100), (2.5, 2, 12)]
)
async def test_rate_limit_caps_starts_in_every_window(
    fast_clock: None, rate: float, burst: int, jobs: int
) -> None:
    """However many workers are free, any span of L seconds holds at most burst + rate*L starts."""
    loop = asyncio.get_running_loop()
    async with asyncpool.Dispatcher(workers=8, rate_limit=rate, rate_burst=burst) as d:
        submitted_at = loop.time()
        handles = [await d.submit(instant) for _ in range(jobs)]
    starts = start_times(handles)
    for i in range(len(starts)):
        for j in range(i, len(starts)):
            assert j - i + 1 <= burst + rate * (starts[j] - starts[i]) + 1e-6, (i, j, starts)
    # The limit bit: the first `burst` start at once, then one every 1/rate s.
    assert starts[0] == pytest.approx(submitted_at, abs=1e-6)
    assert starts[-1] - starts[0] >= (jobs - burst) / rate - 1e-6
    assert starts[-1] - starts[0] == pytest.approx((jobs - burst) / rate, abs=1e-5)
    assert check_stats(d).succeeded == jobs


async def test_rate_limit_thirty_jobs_at_ten_per_second_take_2_9_seconds(
    fast_clock: None,
) -> None:
    """rate_limit=10, burst 1, 8 workers: 30 instant jobs start over 2.9 s of loop time."""
    loop = asyncio.get_running_loop()
    async with asyncpool.Dispatcher(workers=8, rate_limit=10) as d:
        began = loop.time()
        handles = [await d.submit(instant) for _ in range(30)]
        await d.join()
        assert loop.time() - began >= 2.9 - 1e-6
    starts = start_times(handles)
    assert starts[-1] - began >= 2.9 - 1e-6
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([0.1] * 29, abs=1e-5)


async def test_rate_limit_burst_starts_at_once_then_spaces_starts(fast_clock: None) -> None:
    """rate_limit=5, rate_burst=3: the first 3 start at the same moment, then one every 0.2 s."""
    loop = asyncio.get_running_loop()
    async with asyncpool.Dispatcher(workers=8, rate_limit=5, rate_burst=3) as d:
        began = loop.time()
        handles = [await d.submit(instant) for _ in range(9)]
    starts = [t - began for t in start_times(handles)]
    assert starts[:3] == [0.0, 0.0, 0.0]
    assert starts == pytest.approx([0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2], abs=1e-6)


async def test_rate_limit_refills_up_to_burst_not_beyond(fast_clock: None) -> None:
    """After a quiet spell the bucket holds at most `burst` starts; a short one refills in part."""
    loop = asyncio.get_running_loop()
    async with asyncpool.Dispatcher(workers=8, rate_limit=5, rate_burst=3) as d:

        async def wave(n: int) -> list[float]:
            began = loop.time()
            handles = [await d.submit(instant) for _ in range(n)]
            await guarded(asyncio.gather(*handles))
            return [t - began for t in start_times(handles)]

        assert await wave(3) == pytest.approx([0, 0, 0], abs=1e-6)
        await asyncio.sleep(10)  # virtual: 50 tokens' worth, but the bucket holds 3
        assert await wave(6) == pytest.approx([0, 0, 0, 0.2, 0.4, 0.6], abs=1e-6)
        await asyncio.sleep(0.4)  # the bucket was empty: 2 tokens now
        assert await wave(4) == pytest.approx([0, 0, 0.2, 0.4], abs=1e-6)
        check_stats(d)


async def test_rate_limit_composes_with_the_worker_limit() -> None:
    """workers=2, rate limit 1000/s: at most 2 run; a freed worker starts the next at once."""
    peak = Peak()
    gates = [Gate(value=i) for i in range(8)]
    async with asyncpool.Dispatcher(workers=2, rate_limit=1000, rate_burst=10) as d:
        handles = [await d.submit(tracked, peak, g) for g in gates]
        for i, gate in enumerate(gates):
            for running in gates[i : i + 2]:
                await guarded(running.started.wait())
            await let_run()
            assert peak.running == min(2, len(gates) - i)
            assert check_stats(d).busy == min(2, len(gates) - i)
            gate.release()
            assert await guarded(handles[i]) == i
            if i + 2 < len(gates):  # a token is there: the next job started with no wait
                assert state_of(handles[i + 2]) is JobState.RUNNING
    assert peak.peak == 2


@pytest.mark.parametrize(
    ("workers", "rate", "burst", "expected"),
    [
        (2, 10.0, 5, [0, 0, 1, 1, 2, 2]),  # workers are the limit
        (8, 2.0, 1, [0, 0.5, 1, 1.5, 2, 2.5]),  # the rate is the limit
        (2, 1.0, 2, [0, 0, 1, 2, 3, 4]),  # both, in turn
    ],
)
async def test_rate_limit_and_worker_limit_both_hold(
    fast_clock: None, workers: int, rate: float, burst: int, expected: list[float]
) -> None:
    """A job starts when both a worker and a token are free, not before."""
    loop = asyncio.get_running_loop()
    async with asyncpool.Dispatcher(workers=workers, rate_limit=rate, rate_burst=burst) as d:
        began = loop.time()
        handles = [await d.submit(asyncio.sleep, 1) for _ in range(6)]
    starts = [t - began for t in start_times(handles)]
    assert starts == pytest.approx(expected, abs=1e-6)


# Regression: a rate-limit timer firing after teardown left its waiting job never final.
async def test_rate_timer_after_the_workers_were_cancelled_loses_no_job() -> None:
    """A job waiting for a rate token ends final when the dispatcher's tasks are torn down."""
    entered, release = threading.Event(), threading.Event()

    def blocking() -> None:
        entered.set()
        release.wait(30)

    d = Dispatcher(workers=2, rate_limit=5, rate_burst=1)  # one start per 0.2 s
    await d.start()
    await d.submit(blocking)  # its thread keeps the task group alive once cancelled
    waiting = await d.submit(asyncio.sleep, 0)  # waits up to 0.2 s for a token
    await asyncio.to_thread(entered.wait, 30)
    assert internals(d).rate_timer_pending
    runner = internals(d).runner
    assert runner is not None
    runner.cancel()  # what asyncio.run's teardown, or a fatal job, does
    # The token timer is due within 0.2 s, before this sleep ends (timers run
    # in deadline order): it fires while the cancelled workers are gone.
    await asyncio.sleep(0.3)
    release.set()
    await asyncio.wait((runner,))
    assert waiting.cancelled()
    assert d.closed
    check_stats(d)


# The policies are synchronous bookkeeping: these run without an event loop.
class _Job:
    def __init__(self, id: int) -> None:
        self.id = id

    def __repr__(self) -> str:
        return f"J{self.id}"


def test_policies_priority_lanes_merge_with_the_fifo_by_priority_then_age() -> None:
    """Higher priority first; among equals the oldest, whether in the heap or the deque."""
    from collections import deque

    from asyncpool._policies import PriorityLanes

    lanes: PriorityLanes[_Job] = PriorityLanes()
    fifo = deque([_Job(2), _Job(5)])
    lanes.push(_Job(3), priority=1, order=3)
    lanes.push(_Job(1), priority=0, order=1)  # a retry of job 1: older than the deque's head
    lanes.push(_Job(4), priority=-1, order=4)
    taken = []
    while (job := lanes.take(fifo)) is not None:
        taken.append(job.id)
    assert taken == [3, 1, 2, 5, 4]
    assert lanes.used


def test_policies_key_table_parks_in_order_and_forgets_idle_keys() -> None:
    """A key's later jobs wait in submission order; an idle key leaves nothing behind."""
    from asyncpool._policies import KeyTable

    table: KeyTable[str] = KeyTable()
    assert table.claim("k", "a")
    assert not table.claim("k", "b")
    assert not table.claim("k", "c")
    table.unpark("k", "b")
    assert table.release("k") == "c"
    assert table.release("k") is None
    assert len(table) == 0
    assert table.release("gone") is None


def test_policies_token_bucket_allows_the_burst_then_the_rate() -> None:
    """`burst` starts at once, then one per 1/rate seconds; an unused token goes back."""
    from asyncpool._policies import TokenBucket

    bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0
    bucket.give_back()
    assert bucket.take(0.5) == 0.0
