"""The hot path (asyncpool._core): queueing, routing, backpressure and the worker loop.

Submit's fast paths are in test_core_fast_paths.py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import inspect
import json
import logging
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest

import asyncpool
from asyncpool import Dispatcher, JobHandle, JobState
from asyncpool._testing import internals
from tests._jobs import Gate, all_idle, check_stats, guarded, instant, let_run

# ----------------------------------------------------- queueing and routing


async def test_fifo_with_one_worker() -> None:
    """One worker runs jobs in submission order."""
    order: list[int] = []

    async def record(i: int) -> int:
        order.append(i)
        await asyncio.sleep(0)
        return i

    async with asyncpool.Dispatcher(workers=1, queue_size=0) as dispatcher:
        handles = [await dispatcher.submit(record, i) for i in range(200)]
    assert order == list(range(200))
    assert [h.result() for h in handles] == list(range(200))
    assert [h.id for h in handles] == list(range(1, 201))


async def test_queue_size_zero_is_unbounded() -> None:
    """queue_size=0 never refuses a job, however many wait."""
    blocker = Gate()
    async with asyncpool.Dispatcher(workers=1, queue_size=0) as dispatcher:
        await dispatcher.submit(blocker)
        await blocker.started.wait()
        handles = [dispatcher.submit_nowait(asyncio.sleep, 0, i) for i in range(5000)]
        assert check_stats(dispatcher).queued == 5000
        blocker.release()
    assert [h.result() for h in handles] == list(range(5000))


@pytest.mark.parametrize("method", ["submit", "submit_nowait"])
async def test_a_job_submitted_while_a_worker_is_idle_starts_at_the_next_loop_turn(
    method: str,
) -> None:
    """With a worker idle, submit hands the job to its inbox itself: one turn, no loop hop."""
    started = asyncio.Event()

    async def job() -> None:
        started.set()

    async with asyncpool.Dispatcher(workers=2) as dispatcher:
        await all_idle(dispatcher)
        if method == "submit":
            handle = await dispatcher.submit(job)
        else:
            handle = dispatcher.submit_nowait(job)
        assert handle.state is asyncpool.JobState.QUEUED  # in the inbox, not started
        assert internals(dispatcher).idle_workers == 1
        assert not started.is_set()
        await asyncio.sleep(0)  # one turn of the event loop: the worker runs
        assert started.is_set()
        await asyncio.wait_for(handle, 10)
        check_stats(dispatcher)


async def test_submit_hands_each_job_to_the_longest_idle_worker() -> None:
    """The direct handoff at submit keeps the routing rule: the longest-idle worker goes first."""
    ran_on: list[int] = []

    async def job() -> None:
        # A job runs in its worker's task: its place among the workers is its index.
        ran_on.append(internals(dispatcher).worker_tasks.index(asyncio.current_task()))

    async with asyncpool.Dispatcher(workers=3) as dispatcher:
        await all_idle(dispatcher)
        for _ in range(6):
            # One job at a time: the worker that ran the last one is now the
            # most recently idle, so the next job goes to another one.
            await asyncio.wait_for(await dispatcher.submit(job), 10)
            await all_idle(dispatcher)
    assert ran_on[:3] == ran_on[3:]
    assert sorted(ran_on[:3]) == [0, 1, 2]


async def test_a_job_submitted_to_an_idle_worker_is_not_overtaken_by_a_higher_priority() -> None:
    """Priority orders waiting jobs; a job submitted while a worker is idle does not wait."""
    order: list[str] = []

    async def record(name: str) -> None:
        order.append(name)

    async with asyncpool.Dispatcher(workers=1) as dispatcher:
        await all_idle(dispatcher)
        dispatcher.submit_nowait(record, "first", priority=0)  # straight to the idle worker
        dispatcher.submit_nowait(record, "low", priority=-1)
        dispatcher.submit_nowait(record, "urgent", priority=5)
    assert order == ["first", "urgent", "low"]


# Regression: mass cancellation with queue compaction left the dead-entry count wrong.
async def test_cancelling_many_queued_jobs_keeps_dead_count_exact() -> None:
    """Mass cancellation with compaction leaves the queue's books exact."""
    blocker = Gate()
    async with asyncpool.Dispatcher(workers=1, queue_size=0) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        handles = [d.submit_nowait(asyncio.sleep, 0) for _ in range(300)]
        for handle in handles:
            handle.cancel()
        # Every entry left is a dead one.
        assert internals(d).dead_entries == internals(d).queue_entries
        assert check_stats(d).queued == 0
        blocker.release()
    assert internals(d).dead_entries == 0


# ------------------------------------------------------------- backpressure


async def test_backpressure_fourth_submit_waits_for_room() -> None:
    """queue_size=2, one busy worker: the 4th submit waits; nothing is lost or run twice."""
    gates = [Gate(value=i) for i in range(4)]
    async with asyncpool.Dispatcher(workers=1, queue_size=2) as dispatcher:
        first = await dispatcher.submit(gates[0])
        await gates[0].started.wait()
        queued = [await dispatcher.submit(gates[1]), await dispatcher.submit(gates[2])]
        assert check_stats(dispatcher).queued == 2

        fourth = asyncio.create_task(dispatcher.submit(gates[3]))
        await asyncio.sleep(0)  # one step: the submitter reaches its wait for room
        assert not fourth.done()
        with pytest.raises(asyncpool.QueueFull, match="full"):
            dispatcher.submit_nowait(Gate())

        gates[0].release()  # the worker takes gate 1, which frees one place
        await gates[1].started.wait()
        last = await fourth
        assert check_stats(dispatcher).queued == 2
        for gate in gates[1:]:
            gate.release()
        results = [await h for h in (first, *queued, last)]
    assert results == [0, 1, 2, 3]
    assert [g.runs for g in gates] == [1, 1, 1, 1]
    assert check_stats(dispatcher).succeeded == 4


async def test_backpressure_waiting_submitters_are_served_in_order() -> None:
    """Submitters blocked on a full queue get their places first come, first served."""
    order: list[int] = []

    async def record(i: int) -> None:
        order.append(i)

    blocker = Gate()
    async with asyncpool.Dispatcher(workers=1, queue_size=1) as dispatcher:
        await dispatcher.submit(blocker)
        await blocker.started.wait()
        await dispatcher.submit(record, 0)
        waiting = []
        for i in range(1, 6):
            waiting.append(asyncio.create_task(dispatcher.submit(record, i)))
            await asyncio.sleep(0)  # let this submitter queue up before the next
        blocker.release()
        await asyncio.gather(*waiting)
    assert order == [0, 1, 2, 3, 4, 5]


async def test_submitter_cancelled_while_waiting_leaks_no_place() -> None:
    """A submitter cancelled while waiting for room queues nothing and takes no place."""
    blocker = Gate()
    ran: list[int] = []

    async def record(i: int) -> None:
        ran.append(i)

    async with asyncpool.Dispatcher(workers=1, queue_size=2) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        await d.submit(record, 1)
        await d.submit(record, 2)
        coro = record(99)
        waiting = asyncio.create_task(d.submit(coro))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # closed, never run
        stats = check_stats(d)
        assert (stats.submitted, stats.queued) == (3, 2)
        blocker.release()
        await d.join()
        # Both places are free again: exactly queue_size jobs fit.
        blocker2 = Gate()
        await d.submit(blocker2)
        await blocker2.started.wait()
        d.submit_nowait(record, 3)
        d.submit_nowait(record, 4)
        with pytest.raises(asyncpool.QueueFull):
            d.submit_nowait(record, 5)
        blocker2.release()
    assert ran == [1, 2, 3, 4]


async def test_woken_submitter_cancelled_passes_the_place_on() -> None:
    """A submitter woken for a place and cancelled before using it passes the place on."""
    blocker = Gate()
    async with asyncpool.Dispatcher(workers=1, queue_size=1) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        await d.submit(asyncio.sleep, 0)
        first = asyncio.create_task(d.submit(asyncio.sleep, 0, "first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(d.submit(asyncio.sleep, 0, "second"))
        await asyncio.sleep(0)
        blocker.release()
        # One step: the worker finishes, takes the queued job and so frees
        # one place, waking the first submitter, which has not run yet.
        await asyncio.sleep(0)
        assert internals(d).waiting_submitters == 1  # only `second` still waits
        assert internals(d).reserved_places == 1  # the freed place is promised to `first`
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        handle = await second
        assert await handle == "second"
        assert check_stats(d).submitted == 3


async def test_woken_submitter_is_not_overtaken() -> None:
    """A place freed for a waiting submitter is promised to it: submit_nowait cannot take it."""
    blocker = Gate()
    async with asyncpool.Dispatcher(workers=1, queue_size=1) as d:
        await d.submit(blocker)
        await blocker.started.wait()
        await d.submit(asyncio.sleep, 0)
        waiting = asyncio.create_task(d.submit(asyncio.sleep, 0, "waited"))
        await asyncio.sleep(0)
        blocker.release()
        await asyncio.sleep(0)  # the place is freed and promised; the submitter has not run yet
        assert not waiting.done()
        with pytest.raises(asyncpool.QueueFull, match="promised"):
            d.submit_nowait(asyncio.sleep, 0)
        assert await (await waiting) == "waited"


# -------------------------------------------------------------- re-entrancy


async def test_reentrant_submit_from_jobs_never_deadlocks_on_a_full_queue() -> None:
    """Jobs on every worker that await submit() on a full queue go on, queueing beyond its size."""
    go = asyncio.Event()
    finish = asyncio.Event()
    parent_started = [asyncio.Event() for _ in range(2)]
    submitted_all = [asyncio.Event() for _ in range(2)]
    children: list[JobHandle[int]] = []

    async def child(n: int) -> int:
        return n

    async with asyncpool.Dispatcher(workers=2, queue_size=2) as d:

        async def parent(p: int) -> int:
            parent_started[p].set()
            await go.wait()
            for i in range(3):
                # The queue is full and every worker runs a parent: without the
                # re-entrancy rule nobody would ever make room.
                children.append(await d.submit(child, 10 * p + i))
            submitted_all[p].set()
            await finish.wait()
            return p

        parents = [await d.submit(parent, p) for p in range(2)]
        for event in parent_started:
            await guarded(event.wait())
        fillers = [Gate(value=100 + i) for i in range(2)]
        filler_handles = [d.submit_nowait(g) for g in fillers]
        with pytest.raises(asyncpool.QueueFull):
            d.submit_nowait(instant)
        go.set()
        for event in submitted_all:
            await guarded(event.wait())
        s = check_stats(d)
        assert (s.busy, s.queued) == (2, 8)
        assert s.queued > d.queue_size  # the children were queued beyond the bound

        finish.set()
        for gate in fillers:
            gate.release()
        assert await guarded(asyncio.gather(*parents)) == [0, 1]
        assert await guarded(asyncio.gather(*filler_handles)) == [100, 101]
        assert sorted(await guarded(asyncio.gather(*children))) == [0, 1, 2, 10, 11, 12]
    s = check_stats(d)
    assert (s.submitted, s.succeeded, s.queued, s.busy) == (10, 10, 0, 0)


async def test_reentrant_submit_from_a_task_the_job_started() -> None:
    """A task created by a job (and awaited by it) does not wait for room on a full queue either."""
    started, go = asyncio.Event(), asyncio.Event()
    filler = Gate(value="filler")

    async with asyncpool.Dispatcher(workers=1, queue_size=1) as d:

        async def parent() -> tuple[JobHandle[int], int]:
            started.set()
            await go.wait()

            async def submit_child() -> JobHandle[int]:
                return await d.submit(asyncio.sleep, 0, 7)

            child = await asyncio.create_task(submit_child())
            return child, d.stats().queued

        handle = await d.submit(parent)
        await guarded(started.wait())
        filler_handle = d.submit_nowait(filler)  # the queue (size 1) is full
        with pytest.raises(asyncpool.QueueFull):
            d.submit_nowait(instant)
        go.set()
        child, queued_then = await guarded(handle)
        assert queued_then == 2  # the filler and the child: beyond queue_size
        filler.release()
        assert await guarded(filler_handle) == "filler"
        assert await guarded(child) == 7
    s = check_stats(d)
    assert (s.submitted, s.succeeded) == (3, 3)


async def test_reentrant_submit_nowait_from_a_job_still_raises_queue_full() -> None:
    """submit_nowait has no room to wait for, so from a job on a full queue it raises QueueFull."""
    filler = Gate()

    async with asyncpool.Dispatcher(workers=1, queue_size=1) as d:

        async def parent() -> str:
            await d.submit(filler)  # fills the queue, from inside: no waiting
            try:
                d.submit_nowait(instant)
            except asyncpool.QueueFull:
                return "refused"
            return "accepted"

        handle = await d.submit(parent)
        assert await guarded(handle) == "refused"
        s = check_stats(d)
        # The parent's worker went on to the filler.
        assert (s.rejected, s.submitted, s.busy, s.queued) == (1, 2, 1, 0)
        filler.release()


async def test_reentrant_rule_leaves_outside_submitters_waiting() -> None:
    """The test body and jobs of another dispatcher still wait for room; only own jobs bypass."""
    own_started, go, foreign_started = asyncio.Event(), asyncio.Event(), asyncio.Event()
    filler = Gate(value="filler")

    async with (
        asyncpool.Dispatcher(workers=1, queue_size=1) as d,
        asyncpool.Dispatcher(workers=1) as other,
    ):

        async def own_job() -> tuple[JobHandle[None], int]:
            own_started.set()
            await go.wait()
            return await d.submit(instant), d.stats().queued

        async def foreign_job() -> JobHandle[None]:
            foreign_started.set()
            return await d.submit(instant)

        first = await d.submit(own_job)
        await guarded(own_started.wait())
        filler_handle = d.submit_nowait(filler)  # the queue (size 1) is full
        outside = asyncio.create_task(d.submit(instant))
        foreign = await other.submit(foreign_job)
        await guarded(foreign_started.wait())
        await let_run()
        assert not outside.done()
        assert not foreign.done()
        assert check_stats(d).submitted == 2

        go.set()  # the job of `d` gets in at once, past the waiting submitters
        inner, queued_then = await guarded(first)
        assert queued_then == 2  # the filler and its own job: beyond queue_size
        await let_run()
        assert not outside.done()
        assert not foreign.done()
        s = check_stats(d)  # the job's worker went on to the filler; the queue is full
        assert (s.submitted, s.busy, s.queued) == (3, 1, 1)

        filler.release()  # room comes as jobs end; the waiting submitters get it
        outer = await guarded(outside)
        from_other = await guarded(foreign)
        results = await guarded(asyncio.gather(filler_handle, inner, outer, from_other))
        assert list(results) == ["filler", None, None, None]
    s = check_stats(d)
    assert (s.submitted, s.succeeded) == (5, 5)


# Regression: a task a finished job had started still skipped the wait for room.
async def test_task_a_job_left_behind_waits_for_room_again() -> None:
    """A task started by a finished job gets no exemption from the queue bound."""
    gate = asyncio.Event()
    producers: list[asyncio.Task[None]] = []
    submitted = 0

    async def producer(d: Dispatcher) -> None:
        nonlocal submitted
        for _ in range(10):
            await d.submit(gate.wait)
            submitted += 1

    async def starter(d: Dispatcher) -> str:
        producers.append(asyncio.create_task(producer(d)))
        return "done"

    async with Dispatcher(workers=1, queue_size=2) as d:
        assert await (await d.submit(starter, d)) == "done"
        for _ in range(20):
            await asyncio.sleep(0)
        # One job runs (gate.wait), two wait in the queue: the producer waits for room.
        assert submitted == 3
        assert check_stats(d).queued == 2
        gate.set()
        await producers[0]
    assert submitted == 10


# ----------------------------------------------------------------- failures


class Boom(Exception):
    pass


async def explode(message: str) -> None:
    raise Boom(message)


# Failures: an awaited failure must not also go to on_error.
async def test_failure_goes_to_the_awaiter_not_the_hook() -> None:
    """An awaited handle gets the job's exception; on_error is not called."""
    reported: list[tuple[asyncpool.JobHandle[object], BaseException]] = []
    gate = Gate()
    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: reported.append((h, e))) as d:
        handle = await d.submit(gate)
        waiter = asyncio.create_task(asyncio.wait_for(handle, None))
        await gate.started.wait()
        await asyncio.sleep(0)  # the waiter is now awaiting the handle
        error = Boom("seen")
        gate.fail(error)
        with pytest.raises(Boom) as caught:
            await waiter
    assert caught.value is error
    assert handle.state is JobState.FAILED
    assert reported == []


# Failures: a failure nobody awaits must reach on_error exactly once.
async def test_failure_nobody_awaits_goes_to_on_error_once() -> None:
    """A failure with no awaiter at that moment reaches on_error exactly once, with its handle."""
    reported: list[tuple[asyncpool.JobHandle[object], BaseException]] = []
    async with asyncpool.Dispatcher(workers=2, on_error=lambda h, e: reported.append((h, e))) as d:
        handle = await d.submit(explode, "unseen")
        other = await d.submit(asyncio.sleep, 0, "fine")
    assert len(reported) == 1
    assert reported[0][0] is handle
    assert isinstance(reported[0][1], Boom)
    assert other.result() == "fine"
    # Awaiting it later still gives the exception: the handle is the record.
    with pytest.raises(Boom):
        await handle
    assert check_stats(d).failed == 1


# Failures: with no hook, a failure nobody awaits must be logged with its traceback.
async def test_failure_default_hook_logs_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """By default an unawaited failure is logged at ERROR on 'asyncpool', traceback included."""
    caplog.set_level(logging.ERROR, logger="asyncpool")
    async with asyncpool.Dispatcher(workers=1, name="logs") as d:
        handle = await d.submit(explode, "logged")
    records = [r for r in caplog.records if r.name == "asyncpool"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Boom)
    assert "logs" in record.getMessage()
    assert repr(handle) in record.getMessage()


# Failures: a reported failure must not come back as 'exception was never retrieved'.
async def test_failure_is_not_reported_again_by_asyncio(caplog: pytest.LogCaptureFixture) -> None:
    """A reported failure does not come back as asyncio's 'exception was never retrieved'."""
    caplog.set_level(logging.ERROR)
    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: None) as d:
        handle = await d.submit(explode, "once")
    del handle
    import gc

    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


# Failures: an on_error hook that raises must not kill the worker.
async def test_failure_hook_that_raises_does_not_kill_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If on_error raises, both errors are logged and the worker goes on with the next job."""
    caplog.set_level(logging.ERROR, logger="asyncpool")

    def bad_hook(handle: asyncpool.JobHandle[object], exc: BaseException) -> None:
        raise RuntimeError("hook broke")

    async with asyncpool.Dispatcher(workers=1, on_error=bad_hook) as d:
        await d.submit(explode, "first")
        after = await d.submit(asyncio.sleep, 0, "next")
    assert after.result() == "next"
    logged = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert [type(e) for e in logged] == [Boom, RuntimeError]


# Failures: a handle with a done callback is watched; its failure is not for on_error.
async def test_failure_with_done_callback_counts_as_awaited() -> None:
    """A handle with a done callback is being watched: its failure is not sent to on_error."""
    reported: list[BaseException] = []
    seen: list[BaseException | None] = []
    gate = Gate()
    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: reported.append(e)) as d:
        handle = await d.submit(gate)
        handle.add_done_callback(lambda h: seen.append(h.exception()))
        gate.fail(Boom("watched"))
    assert reported == []
    assert len(seen) == 1
    assert isinstance(seen[0], Boom)


# Failures: without fail_fast, a failure must not stop the other jobs.
async def test_failure_never_stops_the_pool() -> None:
    """With fail_fast=False, failures leave the other jobs running to completion."""
    async with asyncpool.Dispatcher(workers=2, on_error=lambda h, e: None) as d:
        handles = []
        for i in range(10):
            handles.append(await d.submit(explode, str(i)))
            handles.append(await d.submit(asyncio.sleep, 0))
    states = [h.state for h in handles]
    assert states.count(JobState.FAILED) == 10
    assert states.count(JobState.SUCCEEDED) == 10


# Regression: an on_error hook raising CancelledError killed its worker and hung join().
async def test_on_error_hook_raising_base_exception_keeps_worker_and_join(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An on_error hook raising CancelledError is logged; join() and the worker carry on."""
    caplog.set_level(logging.ERROR, logger="asyncpool")

    def hook(handle: asyncpool.JobHandle[object], exc: BaseException) -> None:
        raise asyncio.CancelledError

    async def fails() -> None:
        raise ValueError("job failed")

    async with asyncpool.Dispatcher(workers=1, on_error=hook) as d:
        await d.submit(fails)
        await d.join()
        assert await (await d.submit(asyncio.sleep, 0, "next")) == "next"
    assert len([r for r in caplog.records if r.exc_info]) == 2


# Failures: KeyboardInterrupt and SystemExit from a job must escape, never be swallowed.
@pytest.mark.slow
@pytest.mark.parametrize("where", ["coroutine", "thread"])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("fatal", ["KeyboardInterrupt", "SystemExit"])
def test_fatal_exception_in_job_propagates(fatal: str, loop: str, where: str) -> None:
    """KeyboardInterrupt and SystemExit raised by a job are never swallowed: they escape."""
    script = Path(__file__).with_name("fatal_job.py")
    done = subprocess.run(
        [sys.executable, str(script), fatal, loop, where],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    # The long job was cancelled on the way out; the fatal one is FAILED.
    assert outcome == {"escaped": fatal, "states": ["CANCELLED", "FAILED"]}


# ---------------------------------------------------------- the worker loop


async def test_job_raising_cancelled_error_itself_is_cancelled() -> None:
    """A job that raises CancelledError on its own ends CANCELLED and the worker survives."""

    async def stray() -> None:
        raise asyncio.CancelledError

    async with asyncpool.Dispatcher(workers=1) as d:
        handle = await d.submit(stray)
        follower = await d.submit(asyncio.sleep, 0, 1)
    assert handle.cancelled()
    assert follower.result() == 1


async def test_job_cancelling_its_own_handle_ends_cancelled_and_spares_the_worker() -> None:
    """A job that cancels its own handle and returns ends CANCELLED, like a task; worker lives."""
    handles: list[asyncpool.JobHandle[str]] = []

    async def self_cancelling() -> str:
        handles[0].cancel()
        return "returned anyway"

    async def innocent() -> str:
        await asyncio.sleep(0)
        return "innocent"

    async with asyncpool.Dispatcher(workers=1) as d:
        handles.append(await d.submit(self_cancelling))
        after = await d.submit(innocent)
        assert await after == "innocent"
        later = await d.submit(innocent)
        assert await later == "innocent"
    assert handles[0].cancelled()
    assert check_stats(d).cancelled == 1


# Regression: a job leaving an unbalanced cancel() (old async_timeout) killed its worker.
async def test_job_leaving_an_unbalanced_cancel_keeps_its_worker() -> None:
    """A job that cancels its own task and raises TimeoutError instead keeps the pool whole."""

    async def old_style_timeout() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # never balanced with uncancel(), as async_timeout <= 4.0.2 did
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise TimeoutError("timed out") from None

    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: None) as d:
        first = await d.submit(old_style_timeout)
        second = await d.submit(asyncio.sleep, 0, "still served")
        assert await second == "still served"
    assert isinstance(first.exception(), TimeoutError)


# Regression (found running the suite on 3.13): on 3.11 and 3.12 the request
# stayed pending on the worker's task and cancelled the next, unrelated job.
async def test_job_cancelling_its_own_task_and_returning_spares_the_next_job() -> None:
    """A job that calls current_task().cancel() and returns without awaiting: the next job runs."""

    async def cancels_its_task() -> str:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        return "returned"

    async def innocent() -> str:
        await asyncio.sleep(0)
        return "innocent"

    async with asyncpool.Dispatcher(workers=1) as d:
        first = await d.submit(cancels_its_task)
        second = await d.submit(innocent)
        third = await d.submit(innocent)
        assert await asyncio.wait_for(second, 10) == "innocent"
        assert await asyncio.wait_for(third, 10) == "innocent"
    assert first.result() == "returned"
    assert check_stats(d).cancelled == 0


# Regression: an idle worker kept a reference to its last job's result.
async def test_idle_worker_keeps_nothing_of_its_last_job() -> None:
    """Once a job is done and its handle dropped, the idle worker keeps no reference to it."""

    class Payload:
        pass

    async def make() -> Payload:
        return Payload()

    async with asyncpool.Dispatcher(workers=1) as d:
        handle = await d.submit(make)
        ref = weakref.ref(await handle)
        del handle
        await asyncio.sleep(0)
        gc.collect()
        assert ref() is None


def test_core_asyncio_internals_it_reads_keep_their_shape() -> None:
    """The asyncio internals the hot path reads exist and mean what asyncpool/_core.py assumes.

    If a Python release renames or reshapes one, this fails loudly here
    instead of the pool misbehaving quietly.
    """
    loop = asyncio.new_event_loop()
    try:
        future: Any = loop.create_future()  # Any: these attributes are not in the stubs
        assert not future._callbacks  # "is anyone waiting?" reads its truth value
        future.add_done_callback(lambda f: None)
        assert len(future._callbacks) == 1
        future.set_exception(ValueError("x"))
        unseen_before = future._log_traceback
        future.exception()
        assert (unseen_before, future._log_traceback) == (True, False)

        async def idle() -> None:
            await asyncio.sleep(0)

        task: Any = loop.create_task(idle())
        task.cancel()
        assert task._must_cancel is True
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

        from asyncpool._core import LeanQueue

        queue: LeanQueue[int] = LeanQueue()
        assert isinstance(queue._queue, collections.deque)
        assert isinstance(queue._getters, collections.deque)
    finally:
        loop.close()


# Regression (issue 16): jobs awaiting the jobs they submitted (fork/join)
# hung for good once every worker held such a parent.
@pytest.mark.parametrize("collect", ["await", "gather"])
async def test_core_fork_join_jobs_never_deadlock_the_pool(collect: str) -> None:
    """Parents awaiting their own children finish; runnable jobs stay within the pool's size."""
    running = peak = 0
    async with asyncpool.Dispatcher(workers=2) as d:

        async def child(i: int) -> int:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0)
            running -= 1
            return i

        async def parent(n: int) -> int:
            handles = [await d.submit(child, n * 10 + k) for k in range(3)]
            if collect == "gather":
                return sum(await asyncio.gather(*handles))
            return sum([await h for h in handles])

        parents = [await d.submit(parent, n) for n in range(5)]
        async with asyncio.timeout(10):  # the old code hung here
            results = [await p for p in parents]
        await d.join()
        assert results == [30 * n + 3 for n in range(5)]
        assert peak <= 2  # children never ran more at once than the pool's size
        # The spare workers lent meanwhile have left again.
        assert len(internals(d).worker_tasks) == 2
        check_stats(d)


async def test_core_spare_workers_only_when_every_worker_waits() -> None:
    """A parent waiting on a queued child while another worker is free gets no spare."""
    async with asyncpool.Dispatcher(workers=2) as d:
        gate = Gate(value=1)

        async def parent() -> object:
            child = await d.submit(gate)
            return await child

        handle = await d.submit(parent)
        await gate.started.wait()  # the other worker runs the child: no deadlock
        assert len(internals(d).worker_tasks) == 2
        gate.release()
        assert await handle == 1
