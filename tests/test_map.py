"""`Dispatcher.map` and `as_completed`: order, the window, failures, early exit, cleanup."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any, TypeVar, assert_type

import pytest

import asyncpool
from asyncpool import DispatcherClosed, JobHandle, as_completed
from asyncpool._testing import internals
from tests._jobs import Gate, check_stats

T = TypeVar("T")


class Boom(Exception):
    pass


async def async_double(x: int) -> int:
    return 2 * x


def double(x: int) -> int:
    return 2 * x


class Gates:
    """One `Gate` per input item, made on first use: the job for item i waits for `gates[i]`."""

    def __init__(self) -> None:
        self._gates: dict[int, Gate] = {}

    def __getitem__(self, index: int) -> Gate:
        return self._gates.setdefault(index, Gate(value=index))

    def made(self) -> int:
        """How many gates exist: the test's and the jobs' together."""
        return len(self._gates)

    async def job(self, index: int) -> object:
        return await self[index].process()


class Counted:
    """An endless input, 0, 1, 2, ..., that counts how many items were taken from it."""

    def __init__(self) -> None:
        self.pulled = 0

    def __iter__(self) -> Iterator[int]:
        for item in itertools.count():
            self.pulled += 1
            yield item


async def collect(results: AsyncIterator[T]) -> list[T]:
    return [value async for value in results]


async def next_of(results: AsyncIterator[T]) -> T:
    return await anext(results)


def live_handles() -> int:
    """How many job handles are reachable (earlier tests' garbage collected first)."""
    gc.collect()
    return sum(isinstance(obj, JobHandle) for obj in gc.get_objects())


# ------------------------------------------------------------------ results


async def test_map_yields_results_of_a_list_in_input_order() -> None:
    """Over a list, map yields fn(item) for each item, in input order."""
    async with asyncpool.Dispatcher(workers=3) as d:
        results = d.map(async_double, [3, 1, 2, 5])
        assert_type(results, AsyncGenerator[int, None])
        assert await collect(results) == [6, 2, 4, 10]
    assert check_stats(d).succeeded == 4


async def test_map_reads_a_sync_generator() -> None:
    """A sync generator is read to its end; results come in its order."""

    def numbers() -> Iterator[int]:
        yield from range(20)

    async with asyncpool.Dispatcher(workers=4) as d:
        assert await collect(d.map(async_double, numbers(), window=3)) == [2 * i for i in range(20)]


async def test_map_reads_an_async_generator() -> None:
    """An async generator is read to its end; results come in its order."""

    async def numbers() -> AsyncIterator[int]:
        for i in range(20):
            yield i

    async with asyncpool.Dispatcher(workers=4) as d:
        assert await collect(d.map(async_double, numbers(), window=3)) == [2 * i for i in range(20)]


async def test_map_runs_a_sync_fn_in_worker_threads() -> None:
    """A sync fn runs in worker threads, like any sync job; results come in input order."""
    threads: set[int] = set()

    def double_in_thread(x: int) -> int:
        threads.add(threading.get_ident())
        return 2 * x

    async with asyncpool.Dispatcher(workers=3) as d:
        assert_type(d.map(double, [1]), AsyncGenerator[int, None])
        assert await collect(d.map(double_in_thread, range(10))) == [2 * i for i in range(10)]
    assert threads
    assert threading.get_ident() not in threads


async def test_map_empty_iterable_yields_nothing() -> None:
    """An empty input yields nothing and submits nothing."""
    async with asyncpool.Dispatcher(workers=2) as d:
        assert await collect(d.map(async_double, [])) == []
        assert check_stats(d).submitted == 0


async def test_map_ordered_holds_later_results_until_the_oldest_is_done() -> None:
    """ordered=True yields in input order even when later jobs finish first."""
    gates = Gates()
    ended: list[int] = []
    finished = [asyncio.Event() for _ in range(3)]

    async def job(index: int) -> object:
        value = await gates.job(index)
        ended.append(index)
        finished[index].set()
        return value

    async with asyncpool.Dispatcher(workers=3) as d:
        consumer = asyncio.create_task(collect(d.map(job, range(3))))
        gates[2].release()
        await finished[2].wait()
        gates[1].release()
        await finished[1].wait()
        assert not consumer.done()  # items 1 and 2 are done, but item 0 comes first
        gates[0].release()
        assert await consumer == [0, 1, 2]
    assert ended == [2, 1, 0]


async def test_map_unordered_yields_in_completion_order() -> None:
    """ordered=False yields each result as soon as its job finishes."""
    gates = Gates()
    async with (
        asyncpool.Dispatcher(workers=3) as d,
        aclosing(d.map(gates.job, range(3), ordered=False)) as results,
    ):
        # Only the released job can finish, so the order is the test's.
        gates[2].release()
        assert await anext(results) == 2
        gates[0].release()
        assert await anext(results) == 0
        gates[1].release()
        assert await anext(results) == 1
        with pytest.raises(StopAsyncIteration):
            await anext(results)


# ------------------------------------------------------------------- window


async def test_map_window_bounds_jobs_in_flight_and_input_reads() -> None:
    """At most `window` jobs are in flight, and an item is read only when its job can start."""
    gates = Gates()
    counted = Counted()
    async with asyncpool.Dispatcher(workers=8) as d:
        async with aclosing(d.map(gates.job, counted, window=3)) as results:
            for k in range(6):
                taking = asyncio.create_task(next_of(results))
                await gates[k + 2].started.wait()  # the newest job of the window
                assert counted.pulled == k + 3
                stats = check_stats(d)
                assert (stats.busy, stats.queued, stats.succeeded) == (3, 0, k)
                assert gates.made() == k + 3  # no job beyond the window was started
                gates[k].release()
                assert await taking == k
                # Nothing more is read until the next result is asked for.
                assert counted.pulled == k + 3
        assert check_stats(d).cancelled == 2  # the rest of the window, at aclose


async def test_map_default_window_is_twice_the_workers() -> None:
    """window=None keeps 2 * workers jobs in flight: `workers` running, as many queued."""
    gates = Gates()
    counted = Counted()
    async with (
        asyncpool.Dispatcher(workers=2) as d,
        aclosing(d.map(gates.job, counted)) as results,
    ):
        taking = asyncio.create_task(next_of(results))
        await gates[0].started.wait()
        await gates[1].started.wait()
        assert counted.pulled == 4
        stats = check_stats(d)
        assert (stats.submitted, stats.busy, stats.queued) == (4, 2, 2)
        gates[0].release()
        assert await taking == 0


@pytest.mark.parametrize("ordered", [True, False])
async def test_map_memory_stays_bounded_over_a_long_run(ordered: bool) -> None:
    """Over 10,000 results of an endless input, jobs in flight and items read stay in the window."""
    window = 8
    counted = Counted()
    running = most_running = 0

    async def job(item: int) -> int:
        nonlocal running, most_running
        running += 1
        most_running = max(most_running, running)
        try:
            await asyncio.sleep(0)  # let other jobs start meanwhile: they overlap
        finally:
            running -= 1
        return item

    taken = 0
    handles_before = live_handles()
    handles_seen: list[int] = []
    # Debug mode records a traceback for every callback: over 10,000 jobs it
    # would make this test about fifteen times slower and check nothing more.
    loop = asyncio.get_running_loop()
    debug = loop.get_debug()
    loop.set_debug(False)
    try:
        async with (
            asyncpool.Dispatcher(workers=4) as d,
            aclosing(d.map(job, counted, window=window, ordered=ordered)) as results,
        ):
            async for value in results:
                if ordered:
                    assert value == taken
                stats = d.stats()
                assert stats.submitted - stats.succeeded <= window
                assert counted.pulled - taken <= window  # the one just yielded included
                taken += 1
                if taken % 2_500 == 0:
                    handles_seen.append(live_handles() - handles_before)
                if taken == 10_000:
                    break
    finally:
        loop.set_debug(debug)
    assert most_running <= window
    # The window's handles, plus finished ones whose done callbacks are
    # still scheduled: a bound that does not grow with the run.
    assert max(handles_seen) <= 2 * window, handles_seen


async def test_map_backpressure_with_a_small_queue_still_completes() -> None:
    """A window larger than the job queue makes the map wait for room, not fail."""
    async with asyncpool.Dispatcher(workers=1, queue_size=1) as d:
        assert await collect(d.map(async_double, range(50), window=8)) == [2 * i for i in range(50)]
        assert check_stats(d).succeeded == 50


# ----------------------------------------------------------------- failures


async def test_map_failure_raises_at_its_position_and_cancels_the_rest() -> None:
    """A failure is raised where its result belongs; the jobs still in flight are cancelled."""
    reported: list[BaseException] = []
    gates = Gates()
    error = Boom("item 1")
    gates[0].release()
    gates[1].fail(error)
    async with asyncpool.Dispatcher(workers=3, on_error=lambda h, e: reported.append(e)) as d:
        results = d.map(gates.job, range(3))
        assert await anext(results) == 0
        with pytest.raises(Boom) as caught:
            await anext(results)
        assert caught.value is error
        assert gates[2].saw_cancel
        stats = check_stats(d)
        assert (stats.busy, stats.failed, stats.cancelled) == (0, 1, 1)
        with pytest.raises(StopAsyncIteration):
            await anext(results)  # the map is over
    assert reported == []  # the consumer got the failure: nothing else reports it


async def test_map_return_exceptions_yields_exceptions_in_place() -> None:
    """return_exceptions=True yields each failure's exception in its place and goes on."""
    reported: list[BaseException] = []
    gates = Gates()
    first, second = Boom("1"), Boom("3")
    for index in (0, 2, 4):
        gates[index].release()
    gates[1].fail(first)
    gates[3].fail(second)
    async with asyncpool.Dispatcher(workers=2, on_error=lambda h, e: reported.append(e)) as d:
        results = d.map(gates.job, range(5), return_exceptions=True)
        assert_type(results, AsyncGenerator[object | BaseException, None])
        assert await collect(results) == [0, first, 2, second, 4]
    assert reported == []


async def test_map_cancelled_job_raises_cancelled_error() -> None:
    """A job cancelled under the map (close(cancel=True)) raises CancelledError at its position."""
    gates = Gates()
    async with asyncpool.Dispatcher(workers=2) as d:

        async def close_when_running() -> None:
            await gates[0].started.wait()
            await gates[1].started.wait()
            await d.close(cancel=True)

        results = d.map(gates.job, range(2))
        closer = asyncio.create_task(close_when_running())
        with pytest.raises(asyncio.CancelledError):
            await anext(results)
        await closer
    assert gates[0].saw_cancel
    assert gates[1].saw_cancel


async def test_map_cancelled_job_is_yielded_with_return_exceptions() -> None:
    """With return_exceptions=True, a cancelled job yields a CancelledError instance."""
    gates = Gates()
    async with asyncpool.Dispatcher(workers=2) as d:

        async def close_when_running() -> None:
            await gates[0].started.wait()
            await gates[1].started.wait()
            await d.close(cancel=True)

        closer = asyncio.create_task(close_when_running())
        values = await collect(d.map(gates.job, range(2), window=2, return_exceptions=True))
        await closer
    assert [type(value) for value in values] == [asyncio.CancelledError] * 2


async def test_map_input_error_propagates_and_cancels_jobs_in_flight() -> None:
    """An exception from the input is raised from the map; its jobs in flight are cancelled."""
    error = Boom("input")

    def failing() -> Iterator[int]:
        yield 0
        yield 1
        raise error

    gates = Gates()
    async with asyncpool.Dispatcher(workers=2) as d:
        with pytest.raises(Boom) as caught:
            await anext(d.map(gates.job, failing(), window=3))
        assert caught.value is error
        stats = check_stats(d)
        assert (stats.submitted, stats.cancelled) == (2, 2)


async def test_map_on_a_closed_dispatcher_raises_at_first_anext() -> None:
    """On a dispatcher not running, the first __anext__ raises DispatcherClosed, reading nothing."""
    counted = Counted()
    d = asyncpool.Dispatcher(workers=1)
    not_started = d.map(async_double, counted)  # the call itself does not check
    with pytest.raises(DispatcherClosed, match="not started"):
        await anext(not_started)
    async with d:
        pass
    closed = d.map(async_double, counted)
    with pytest.raises(DispatcherClosed, match="closed"):
        await anext(closed)
    assert counted.pulled == 0


async def test_map_raises_dispatcher_closed_when_the_dispatcher_closes_midway() -> None:
    """A map that needs to submit after its dispatcher closed raises DispatcherClosed."""
    async with asyncpool.Dispatcher(workers=1) as d:
        results = d.map(async_double, range(3), window=1)
        assert await anext(results) == 0
        await d.close()
        with pytest.raises(DispatcherClosed):
            await anext(results)


async def test_map_fail_fast_failure_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    """With fail_fast, an abandoned failure goes to the ExceptionGroup only, not also to the log."""
    caplog.set_level(logging.ERROR, logger="asyncpool")
    gates = Gates()
    error = Boom("fast")
    gates[0].release()
    with pytest.raises(ExceptionGroup) as group:
        async with (
            asyncpool.Dispatcher(workers=2, fail_fast=True) as d,
            aclosing(d.map(gates.job, range(2))) as results,
        ):
            assert await anext(results) == 0
            gates[1].fail(error)
            await asyncio.Event().wait()  # the failure cancels the body here
    assert group.value.exceptions == (error,)
    assert [r for r in caplog.records if r.name == "asyncpool"] == []


# --------------------------------------------------------------- early exit


async def test_map_aclose_cancels_jobs_in_flight() -> None:
    """aclose() cancels the jobs in flight, and returns only once none is left running."""
    gates = Gates()
    gates[0].release()
    async with asyncpool.Dispatcher(workers=2) as d:
        results = d.map(gates.job, range(10), window=4)
        assert await anext(results) == 0
        await results.aclose()
        stats = check_stats(d)
        assert (stats.submitted, stats.busy, stats.queued) == (4, 0, 0)
        assert (stats.succeeded, stats.cancelled) == (1, 3)
        assert gates[1].saw_cancel
        assert gates[2].saw_cancel
        assert gates[3].runs == 0  # still queued: removed without running


async def test_map_break_cancels_jobs_in_flight() -> None:
    """After a `break`, the loop finalizes the map, which cancels its jobs: join() returns."""
    gates = Gates()
    gates[0].release()
    async with asyncpool.Dispatcher(workers=3) as d:
        async for value in d.map(gates.job, range(3)):
            assert value == 0
            break
        # Jobs 1 and 2 wait for gates that are never opened: join() returns
        # only because the map's cleanup cancelled them.
        async with asyncio.timeout(30):
            await d.join()
        assert gates[1].saw_cancel
        assert gates[2].saw_cancel
        assert check_stats(d).cancelled == 2


async def test_map_never_iterated_submits_nothing() -> None:
    """A map that is closed before its first __anext__ reads nothing and submits nothing."""
    counted = Counted()
    async with asyncpool.Dispatcher(workers=2) as d:
        results = d.map(async_double, counted)
        await results.aclose()
        assert check_stats(d).submitted == 0
    assert counted.pulled == 0


async def test_map_consumer_cancelled_cancels_jobs_in_flight() -> None:
    """Cancelling the consumer cancels the map's jobs before the cancellation reaches it."""
    gates = Gates()
    async with asyncpool.Dispatcher(workers=3) as d:
        consumer = asyncio.create_task(collect(d.map(gates.job, range(3))))
        for index in range(3):
            await gates[index].started.wait()
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        stats = check_stats(d)
        assert (stats.busy, stats.cancelled) == (0, 3)
    assert all(gates[index].saw_cancel for index in range(3))


async def test_map_aclose_waits_for_jobs_to_stop() -> None:
    """aclose() waits for a cancelled job that takes its time to stop."""
    running = asyncio.Event()
    cancel_seen = asyncio.Event()
    finish = asyncio.Event()
    stopped: list[int] = []

    async def stubborn(item: int) -> int:
        if item == 0:
            return 0
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancel_seen.set()
            await finish.wait()
            stopped.append(item)
            raise
        return item

    async def close(results: AsyncGenerator[int, None]) -> None:
        await results.aclose()

    async with asyncpool.Dispatcher(workers=2) as d:
        results = d.map(stubborn, range(2))
        assert await anext(results) == 0
        await running.wait()
        closer = asyncio.create_task(close(results))
        await cancel_seen.wait()
        assert not closer.done()
        finish.set()
        await closer
        assert stopped == [1]
        assert check_stats(d).busy == 0


async def test_map_aclose_waits_through_a_second_cancellation() -> None:
    """Cancelled while it waits for its jobs, aclose() waits on, then raises CancelledError."""
    running = asyncio.Event()
    cancel_seen = asyncio.Event()
    finish = asyncio.Event()
    stopped: list[int] = []

    async def stubborn(item: int) -> int:
        if item == 0:
            return 0
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancel_seen.set()
            await finish.wait()
            stopped.append(item)
            raise
        return item

    async def close(results: AsyncGenerator[int, None]) -> None:
        await results.aclose()

    async with asyncpool.Dispatcher(workers=2) as d:
        results = d.map(stubborn, range(2))
        assert await anext(results) == 0
        await running.wait()
        closer = asyncio.create_task(close(results))
        await cancel_seen.wait()
        closer.cancel()
        # Scheduled after the closer's wake-up by the cancellation: a closer
        # that gave up on its first cancellation would be done before the job.
        asyncio.get_running_loop().call_soon(finish.set)
        with pytest.raises(asyncio.CancelledError):
            await closer
        assert stopped == [1]
        assert check_stats(d).busy == 0


async def test_map_abandoned_failure_goes_to_on_error() -> None:
    """A failure among abandoned jobs reaches on_error once, when the map is closed."""
    reported: list[tuple[JobHandle[Any], BaseException]] = []
    gates = Gates()
    gates[0].release()
    error = Boom("abandoned")
    async with asyncpool.Dispatcher(workers=2, on_error=lambda h, e: reported.append((h, e))) as d:
        results = d.map(gates.job, range(2))
        assert await anext(results) == 0
        gates[1].fail(error)
        await d.join()  # job 1 has failed
        assert reported == []  # the map may still yield it: not reported yet
        await results.aclose()
    assert len(reported) == 1
    handle, exc = reported[0]
    assert exc is error
    assert handle.args == (1,)


async def test_map_failure_while_cancelled_goes_to_on_error() -> None:
    """A job that fails while the map cancels it is reported, not dropped."""
    reported: list[BaseException] = []
    running = asyncio.Event()

    async def converts(item: int) -> int:
        if item == 0:
            return 0
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise Boom("while cancelled") from None
        return item

    async with asyncpool.Dispatcher(workers=2, on_error=lambda h, e: reported.append(e)) as d:
        results = d.map(converts, range(2))
        assert await anext(results) == 0
        await running.wait()
        await results.aclose()
        assert check_stats(d).failed == 1
    assert [str(e) for e in reported] == ["while cancelled"]


# ------------------------------------------------------------- job options


async def test_map_applies_job_options_to_every_job() -> None:
    """map(..., key=..., priority=..., retry=...) gives each job those options."""
    running = 0
    most = 0
    tries: dict[int, int] = {}

    async def serial_and_flaky(n: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)
        running -= 1
        tries[n] = tries.get(n, 0) + 1
        if tries[n] == 1 and n % 2:
            raise ConnectionError(n)
        return n

    async with asyncpool.Dispatcher(workers=4) as d:
        results = [
            r
            async for r in d.map(
                serial_and_flaky,
                range(10),
                window=10,
                key="one at a time",
                priority=3,
                retry=asyncpool.Retry(backoff=0),
            )
        ]
    assert results == list(range(10))
    assert most == 1  # one key: never two at once, although 4 workers and a window of 10
    assert d.stats().retried == 5


# ------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((1, [1]), {}, TypeError, "fn must be callable, got int 1"),
        ((async_double, 1), {}, TypeError, "iterable must be an iterable or an async iterable"),
        ((async_double, [1]), {"ordered": "yes"}, TypeError, "ordered must be a bool"),
        ((async_double, [1]), {"return_exceptions": 1}, TypeError, "return_exceptions must be"),
        ((async_double, [1]), {"window": 0}, ValueError, "window must be >= 1, got 0"),
        ((async_double, [1]), {"window": -3}, ValueError, "window must be >= 1, got -3"),
        ((async_double, [1]), {"window": True}, TypeError, "window must be an int or None"),
        ((async_double, [1]), {"window": 2.0}, TypeError, "window must be an int or None"),
        ((async_double, [1]), {"timout": 1}, TypeError, "unexpected keyword argument.*timout"),
        ((async_double, [1]), {"timeout": -1}, ValueError, "timeout must be > 0"),
        ((async_double, [1]), {"key": []}, TypeError, "key must be hashable"),
    ],
)
def test_map_bad_arguments_raise_at_the_call(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A bad argument raises at the call of map(), not at iteration, naming the argument."""
    d = asyncpool.Dispatcher()
    untyped_map: Any = d.map  # as called from code that is not type-checked
    with pytest.raises(error, match=message):
        untyped_map(*args, **kwargs)


# ------------------------------------------------------------- as_completed


async def test_as_completed_yields_handles_in_finishing_order() -> None:
    """as_completed yields each handle, done, in the order the jobs finish."""
    gates = [Gate(value=i) for i in range(3)]
    async with asyncpool.Dispatcher(workers=3) as d:
        handles = [await d.submit(gate) for gate in gates]
        finished = as_completed(handles)
        assert_type(finished, AsyncGenerator[JobHandle[object], None])
        gates[2].release()
        assert await anext(finished) is handles[2]
        gates[0].release()
        assert await anext(finished) is handles[0]
        gates[1].release()
        assert await anext(finished) is handles[1]
        with pytest.raises(StopAsyncIteration):
            await anext(finished)
    assert [h.result() for h in handles] == [0, 1, 2]


async def test_as_completed_yields_already_done_handles_first() -> None:
    """Handles already done when iteration starts come first, in the order given."""
    gates = [Gate(value=i) for i in range(3)]
    gates[1].release()
    gates[2].release()
    async with asyncpool.Dispatcher(workers=3) as d:
        handles = [await d.submit(gate) for gate in gates]
        await handles[2]
        await handles[1]
        finished = as_completed(handles)
        assert await anext(finished) is handles[1]
        assert await anext(finished) is handles[2]
        gates[0].release()
        assert await anext(finished) is handles[0]
        with pytest.raises(StopAsyncIteration):
            await anext(finished)


async def test_as_completed_takes_any_future_and_yields_each_once() -> None:
    """Plain futures work too, and a handle given twice is yielded once."""
    loop = asyncio.get_running_loop()
    first: asyncio.Future[str] = loop.create_future()
    second: asyncio.Future[str] = loop.create_future()
    given: list[Any] = [first, second, first]
    finished = as_completed(given)
    second.set_result("second")
    assert await anext(finished) is second
    first.set_result("first")
    assert await anext(finished) is first
    with pytest.raises(StopAsyncIteration):
        await anext(finished)


async def test_as_completed_rejects_what_is_not_a_future() -> None:
    """A non-future item (or a non-iterable) raises TypeError at the call, naming the item."""
    future = asyncio.get_running_loop().create_future()
    untyped: Any = as_completed
    with pytest.raises(TypeError, match="item 1 is int 1"):
        untyped([future, 1])
    with pytest.raises(TypeError, match="iterable of job handles, got int"):
        untyped(1)
    future.cancel()


async def test_as_completed_early_exit_leaves_handles_alone() -> None:
    """Leaving early cancels nothing and removes its callbacks: a later failure goes to on_error."""
    reported: list[tuple[JobHandle[Any], BaseException]] = []
    gates = [Gate(value=0), Gate()]
    gates[0].release()
    error = Boom("later")
    async with asyncpool.Dispatcher(workers=2, on_error=lambda h, e: reported.append((h, e))) as d:
        handles = [await d.submit(gate) for gate in gates]
        await gates[1].started.wait()
        async with aclosing(as_completed(handles)) as finished:
            async for handle in finished:
                assert handle is handles[0]
                break
        assert not handles[1].done()
        assert not gates[1].saw_cancel
        gates[1].fail(error)
        await d.join()
    # Nobody watches handle 1 any more, so its failure is reported as usual.
    assert reported == [(handles[1], error)]


# Regression: a failed handle yielded by as_completed that the consumer never
# looked at was reported nowhere (the iterator's callback hid it from on_error).
async def test_as_completed_reports_a_failure_the_consumer_skips() -> None:
    """A yielded failure nobody looks at goes to on_error when the consumer moves on."""
    seen: list[tuple[int, BaseException]] = []

    def on_error(handle: asyncpool.JobHandle[Any], exc: BaseException) -> None:
        seen.append((handle.id, exc))

    async def boom() -> None:
        raise ValueError("skipped")

    async def fine() -> int:
        return 1

    async with asyncpool.Dispatcher(workers=2, on_error=on_error) as d:
        handles: list[JobHandle[Any]] = [await d.submit(boom), await d.submit(fine)]
        async with aclosing(asyncpool.as_completed(handles)) as done:
            async for _ in done:
                pass  # looks at nothing
    assert [(job_id, str(exc)) for job_id, exc in seen] == [(handles[0].id, "skipped")]


async def test_as_completed_does_not_report_a_failure_the_consumer_read() -> None:
    """A yielded failure the consumer retrieves is its own: on_error is not called."""
    seen: list[BaseException] = []

    async def boom() -> None:
        raise ValueError("read")

    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: seen.append(e)) as d:
        handles = [await d.submit(boom)]
        async for handle in asyncpool.as_completed(handles):
            assert isinstance(handle.exception(), ValueError)
    assert seen == []


# Regression (issue 16): with ordered=False and return_exceptions=True a
# failure could not be tied to the item it came from.
@pytest.mark.parametrize("ordered", [True, False])
async def test_map_with_items_pairs_each_outcome_with_its_item(ordered: bool) -> None:
    """`with_items=True` yields `(item, outcome)`, failures included, in either order."""

    async def parse(text: str) -> int:
        return int(text)

    async with asyncpool.Dispatcher(workers=2) as d:
        pairs = [
            pair
            async for pair in d.map(
                parse, ["1", "two", "3"], ordered=ordered, return_exceptions=True, with_items=True
            )
        ]
    by_item = dict(pairs)
    assert sorted(by_item) == ["1", "3", "two"]
    assert (by_item["1"], by_item["3"]) == (1, 3)
    assert isinstance(by_item["two"], ValueError)
    if ordered:
        assert [item for item, _ in pairs] == ["1", "two", "3"]


async def test_map_with_items_types_and_refusal() -> None:
    """Without return_exceptions the pairs hold results; a non-bool with_items is refused."""

    async def double(n: int) -> int:
        return 2 * n

    async with asyncpool.Dispatcher(workers=2) as d:
        pairs = [pair async for pair in d.map(double, [1, 2], with_items=True)]
        assert_type(pairs, list[tuple[int, int]])
        assert pairs == [(1, 2), (2, 4)]
        with pytest.raises(TypeError, match="with_items must be a bool"):
            d.map(double, [1], with_items=1)  # type: ignore[call-overload]


# Regression (issue 16): a map cut short by a deadline cancelled its jobs in
# flight as if the consumer had dropped them, so close() reported nothing.
async def test_map_cut_short_by_a_deadline_lists_its_jobs_in_the_report() -> None:
    """Jobs a cancelled map had in flight are in the ShutdownReport, with their items."""
    gates = [Gate(value=i) for i in range(4)]

    async def wait_on(index: int) -> object:
        return await gates[index].process()

    d = asyncpool.Dispatcher(workers=1)
    await d.start()

    async def consume() -> None:
        async for _ in d.map(wait_on, range(4), window=3):
            pass

    consumer = asyncio.create_task(consume())
    await gates[0].started.wait()  # item 0 runs; items 1 and 2 are queued
    consumer.cancel()  # what a deadline or Ctrl+C does
    with pytest.raises(asyncio.CancelledError):
        await consumer
    report = await d.close()
    assert [h.args[0] for h in report.interrupted] == [0]
    assert [h.args[0] for h in report.never_started] == [1, 2]
    assert gates[3].runs == 0  # item 3 was never read: it is still in the input


async def test_map_cut_short_lists_finished_but_unyielded_jobs_as_undelivered() -> None:
    """An ordered map holds back results behind a slow job; cut short, they are `undelivered`."""
    slow = Gate(value="slow")
    fast_done: list[int] = []
    both_fast_done = asyncio.Event()

    async def job(index: int) -> object:
        if index == 0:
            return await slow.process()
        fast_done.append(index)
        if len(fast_done) == 2:
            both_fast_done.set()  # its handle is done before anyone wakes up
        return index

    d = asyncpool.Dispatcher(workers=2)
    await d.start()
    seen: list[object] = []

    async def consume() -> None:
        async for outcome in d.map(job, range(3), window=3):
            seen.append(outcome)

    consumer = asyncio.create_task(consume())
    async with asyncio.timeout(10):
        await both_fast_done.wait()  # items 1 and 2 finished; item 0 holds them back
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    report = await d.close()
    assert seen == []
    assert [h.args[0] for h in report.interrupted] == [0]
    assert [(h.args[0], h.result()) for h in report.undelivered] == [(1, 1), (2, 2)]
    assert "undelivered=2" in repr(report)


async def test_map_cut_short_while_waiting_for_room_keeps_the_item_it_read() -> None:
    """An item read and waiting for room when the map is cut short is listed as never started."""
    blocker = Gate()

    async def job(item: int) -> int:
        return item

    d = asyncpool.Dispatcher(workers=1, queue_size=1)
    await d.start()
    await d.submit(blocker)  # holds the only worker
    await blocker.started.wait()
    await d.submit(job, -1)  # fills the only place in the queue
    read: list[int] = []

    def items() -> Iterator[int]:
        for n in range(5):
            read.append(n)
            yield n

    async def consume() -> None:
        async for _ in d.map(job, items()):
            pass

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)  # the consumer's first step: it reads item 0, then waits for room
    assert internals(d).waiting_submitters == 1
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    blocker.release()
    report = await d.close()
    assert read == [0]
    assert [h.args[0] for h in report.never_started] == [0]
