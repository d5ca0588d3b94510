"""Per-job options: `timeout`, `retry`, `priority` and `key`, and the dispatcher's defaults."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from typing import Any

import pytest

import asyncpool
from asyncpool import Dispatcher, JobState, JobTimeout, Retry

from ._jobs import Gate, check_stats, state_of


class Flaky:
    """Fails with `error` for its first `failures` runs, then returns its run count."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.starts: list[float] = []

    async def __call__(self) -> int:
        self.starts.append(asyncio.get_running_loop().time())
        if len(self.starts) <= self.failures:
            raise self.error(f"failure {len(self.starts)}")
        return len(self.starts)


# ------------------------------------------------------------------ timeout


async def test_timeout_fails_the_job_with_job_timeout(fast_clock: None) -> None:
    """A job that runs past its timeout is cancelled, and its handle fails with JobTimeout."""
    saw_cancel = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            saw_cancel.set()
            raise

    async with Dispatcher(workers=1) as d:
        handle = await d.submit(slow, timeout=1.5)
        with pytest.raises(JobTimeout, match=r"timeout of 1.5 s") as caught:
            await handle
    assert isinstance(caught.value, TimeoutError)
    assert saw_cancel.is_set()
    assert handle.state is JobState.FAILED
    assert handle.started_at is not None
    assert handle.finished_at is not None
    assert handle.finished_at - handle.started_at == pytest.approx(1.5)
    stats = check_stats(d)
    assert (stats.failed, stats.timed_out) == (1, 1)


async def test_timeout_bounds_run_time_not_queue_wait(fast_clock: None) -> None:
    """Time spent waiting for a worker does not count against a job's timeout."""
    async with Dispatcher(workers=1) as d:
        first = await d.submit(asyncio.sleep, 5)
        second = await d.submit(asyncio.sleep, 0.5, "done", timeout=1)
    assert first.done()
    assert second.result() == "done"
    assert second.started_at is not None
    assert second.started_at - second.queued_at == pytest.approx(5)


async def test_timeout_dispatcher_default_and_per_job_override(fast_clock: None) -> None:
    """Dispatcher(timeout=...) applies to every job; submit(timeout=...) overrides it."""
    async with Dispatcher(workers=3, timeout=1) as d:
        by_default = await d.submit(asyncio.sleep, 2)
        unlimited = await d.submit(asyncio.sleep, 2, "unlimited", timeout=None)
        longer = await d.submit(asyncio.sleep, 2, "longer", timeout=3)
        with pytest.raises(JobTimeout):
            await by_default
    assert unlimited.result() == "unlimited"
    assert longer.result() == "longer"
    assert d.stats().timed_out == 1


async def test_timeout_own_timeout_error_is_not_a_job_timeout() -> None:
    """A TimeoutError the job raises itself reaches the handle unchanged, not as JobTimeout."""

    async def times_out_itself() -> None:
        raise TimeoutError("the job's own")

    async with Dispatcher(workers=1) as d:
        handle = await d.submit(times_out_itself, timeout=100)
        with pytest.raises(TimeoutError, match="the job's own") as caught:
            await handle
    assert not isinstance(caught.value, JobTimeout)
    assert d.stats().timed_out == 0


async def test_timeout_thread_job_is_waited_for_then_fails() -> None:
    """A blocking job past its timeout: its thread is waited for, then it fails (JobTimeout)."""
    entered = threading.Event()
    release = threading.Event()
    returned = threading.Event()

    def blocking() -> str:
        entered.set()
        release.wait(30)
        returned.set()
        return "discarded"

    async with Dispatcher(workers=1) as d:
        handle = await d.submit(blocking, timeout=0.05)
        await asyncio.to_thread(entered.wait, 30)
        # The timeout's deadline comes before this sleep's, and the loop runs
        # timers in deadline order: when the sleep ends, the timeout has fired.
        # (Real time: the fast clock would jump ahead of the thread.)
        await asyncio.sleep(0.1)
        assert not handle.done()  # the thread still runs: the worker waits for it
        release.set()
        with pytest.raises(JobTimeout):
            await handle
    assert returned.is_set()
    assert d.stats().timed_out == 1


# -------------------------------------------------------------------- retry


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


async def test_retry_frees_the_worker_during_backoff(fast_clock: None) -> None:
    """While a job waits out its backoff it holds no worker (and counts as queued)."""
    loop = asyncio.get_running_loop()
    flaky = Flaky(failures=1)
    async with Dispatcher(workers=1) as d:
        retried = await d.submit(flaky, retry=Retry(backoff=10, jitter=0))
        await asyncio.sleep(1)  # the first try failed at 0 s; the retry is due at 10 s
        stats = check_stats(d)
        assert (stats.queued, stats.busy, stats.retried) == (1, 0, 1)
        assert retried.state is JobState.QUEUED
        other = await d.submit(asyncio.sleep, 2, "other")
        assert await other == "other"
        assert loop.time() == pytest.approx(3)  # it ran during the backoff
        assert not retried.done()
        assert await retried == 2
    assert flaky.starts[1] == pytest.approx(10)


async def test_retry_cancelled_during_backoff_never_runs_again(fast_clock: None) -> None:
    """Cancelling a job that waits to be retried ends it at once; it is not tried again."""
    flaky = Flaky(failures=1)
    async with Dispatcher(workers=1) as d:
        handle = await d.submit(flaky, retry=Retry(backoff=10))
        await asyncio.sleep(1)
        assert handle.cancel()
        assert handle.cancelled()
        await asyncio.sleep(20)
    assert len(flaky.starts) == 1
    assert handle.attempts == 1
    stats = check_stats(d)
    assert (stats.cancelled, stats.queued, stats.retried) == (1, 0, 1)


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


async def test_retry_close_waits_for_backoff_and_cancel_reports_it(fast_clock: None) -> None:
    """close() lets a job waiting for a retry finish; close(cancel=True) reports it interrupted."""
    loop = asyncio.get_running_loop()
    d = Dispatcher(workers=1)
    await d.start()
    drained = await d.submit(Flaky(failures=1), retry=Retry(backoff=5, jitter=0))
    await asyncio.sleep(1)
    await d.close()
    assert drained.result() == 2
    assert loop.time() == pytest.approx(5)

    d = Dispatcher(workers=1)
    await d.start()
    stopped = await d.submit(Flaky(failures=1), retry=Retry(backoff=5))
    await asyncio.sleep(1)
    report = await d.close(cancel=True)
    assert stopped.cancelled()
    assert report.interrupted == (stopped,)
    assert report.never_started == ()


async def test_retry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Every retry is logged at WARNING on "asyncpool", so no failure vanishes silently."""
    caplog.set_level(logging.WARNING, logger="asyncpool")
    async with Dispatcher(workers=1) as d:
        await (await d.submit(Flaky(failures=2), retry=Retry(backoff=0)))
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncpool"]
    assert len(messages) == 2
    assert "failed (try 1 of 3), retrying" in messages[0]
    assert "ConnectionError('failure 2')" in messages[1]


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
            assert d._keys == {}  # nothing kept per key once its jobs are done
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
    assert d._keys == {}
    check_stats(d)


# ------------------------------------------------------------ more of retry


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


async def test_retry_reenters_at_the_back_of_its_priority(fast_clock: None) -> None:
    """A retried job with a priority queues behind the jobs of that priority already waiting."""
    ran: list[str] = []
    flaky = Flaky(failures=1)

    async def retried() -> None:
        await flaky()
        ran.append("retried")

    async def record(name: str) -> None:
        await asyncio.sleep(1)
        ran.append(name)

    async with Dispatcher(workers=1) as d:
        await d.submit(retried, priority=5, retry=Retry(backoff=0.5, jitter=0))
        for name in "abc":
            await d.submit(record, name, priority=5)
    assert ran == ["a", "b", "c", "retried"]


async def test_handle_options_resubmit_the_same_job() -> None:
    """handle.options gives back the options a job runs with, ready to submit it again."""
    policy = Retry(attempts=2)
    async with Dispatcher(workers=1, timeout=30) as d:
        handle = await d.submit(asyncio.sleep, 0, "x", key="k", priority=3, retry=policy)
        plain = await d.submit(Gate(value=1))
        assert handle.options == {"timeout": 30.0, "retry": policy, "priority": 3, "key": "k"}
        assert plain.options == {"timeout": 30.0}
        again = await d.submit(handle.fn, *handle.args, **handle.kwargs, **handle.options)
        assert again.options == handle.options
        plain.cancel()
    async with Dispatcher(workers=1) as d:
        bare = await d.submit(asyncio.sleep, 0)
    assert bare.options == {}


async def test_shutdown_report_lists_jobs_in_submission_order() -> None:
    """The report's tuples are in submission (id) order, whatever order the shutdown met them in."""
    gates = [Gate() for _ in range(3)]
    d = Dispatcher(workers=3)
    await d.start()
    handles = [await d.submit(g) for g in gates]
    for g in gates:
        await g.started.wait()
    queued = [await d.submit(asyncio.sleep, 0, priority=p) for p in (1, 5, 3)]
    report = await d.close(cancel=True)
    assert report.interrupted == tuple(handles)
    assert report.never_started == tuple(queued)
