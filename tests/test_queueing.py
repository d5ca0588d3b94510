"""Queueing: backpressure, FIFO order, the unbounded queue, join()."""

from __future__ import annotations

import asyncio

import pytest

import asyncpool
from asyncpool._worker import running_worker
from tests._jobs import Gate, all_idle, check_stats


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


async def test_join_waits_for_jobs_submitted_so_far_only() -> None:
    """join() returns when earlier jobs finish, even while later ones still run."""
    early = [Gate(value=i) for i in range(3)]
    late = Gate(value="late")
    async with asyncpool.Dispatcher(workers=4) as dispatcher:
        handles = [await dispatcher.submit(g) for g in early]
        joiner = asyncio.create_task(dispatcher.join())
        await asyncio.sleep(0)  # join() takes its snapshot
        late_handle = await dispatcher.submit(late)
        for gate in early:
            assert not joiner.done()
            gate.release()
            await asyncio.sleep(0)
        await joiner
        assert all(h.done() for h in handles)
        assert not late_handle.done()
        late.release()
        # The dispatcher keeps accepting jobs after join().
        assert await (await dispatcher.submit(asyncio.sleep, 0, "after")) == "after"
        assert await late_handle == "late"


async def test_join_counts_failed_and_cancelled_jobs_as_finished() -> None:
    """join() does not wait forever for jobs that failed or were cancelled."""
    fails, cancelled = Gate(), Gate()
    async with asyncpool.Dispatcher(workers=2, on_error=lambda h, e: None) as dispatcher:
        failing = await dispatcher.submit(fails)
        to_cancel = await dispatcher.submit(cancelled)
        await fails.started.wait()
        await cancelled.started.wait()
        joiner = asyncio.create_task(dispatcher.join())
        await asyncio.sleep(0)
        fails.fail(ValueError("boom"))
        to_cancel.cancel()
        await joiner
        assert failing.state is asyncpool.JobState.FAILED
        assert to_cancel.state is asyncpool.JobState.CANCELLED


async def test_join_with_nothing_submitted_returns_at_once() -> None:
    """join() on an idle dispatcher returns without waiting."""
    async with asyncpool.Dispatcher(workers=2) as dispatcher:
        await dispatcher.join()
        assert check_stats(dispatcher).submitted == 0


async def test_concurrent_joins_each_wait_for_their_own_snapshot() -> None:
    """Two join() calls taken at different times each return when their jobs are done."""
    a, b = Gate(), Gate()
    async with asyncpool.Dispatcher(workers=2) as dispatcher:
        await dispatcher.submit(a)
        first = asyncio.create_task(dispatcher.join())
        await asyncio.sleep(0)
        await dispatcher.submit(b)
        second = asyncio.create_task(dispatcher.join())
        await asyncio.sleep(0)
        a.release()
        await first
        assert not second.done()
        b.release()
        await second


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
        assert dispatcher._idle_count == 1
        assert not started.is_set()
        await asyncio.sleep(0)  # one turn of the event loop: the worker runs
        assert started.is_set()
        await asyncio.wait_for(handle, 10)
        check_stats(dispatcher)


async def test_submit_hands_each_job_to_the_longest_idle_worker() -> None:
    """The direct handoff at submit keeps the routing rule: the longest-idle worker goes first."""
    ran_on: list[int] = []

    async def job() -> None:
        worker = running_worker.get()
        assert worker is not None
        ran_on.append(worker.index)

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
