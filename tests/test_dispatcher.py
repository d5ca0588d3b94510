"""The Dispatcher façade (asyncpool._dispatcher): its arguments, repr and resize().

Jobs block on gates the test controls, so "how many run at once" is exact:
a job that starts stays running until the test releases it, so any job that
starts when it should not is still counted by `Peak` at the end.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import anyio.to_thread
import pytest

import asyncpool
from asyncpool import Dispatcher, JobHandle, JobState
from asyncpool._testing import handed_over, internals
from tests._jobs import (
    GUARD,
    Gate,
    Peak,
    all_idle,
    check_stats,
    guarded,
    let_run,
    state_of,
    tracked,
)

# -------------------------------------------------------------- constructor


# Bad input: a bad constructor argument must fail at construction, naming it.
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"workers": 0}, ValueError, "workers must be >= 1, got 0"),
        ({"workers": -1}, ValueError, "workers must be >= 1, got -1"),
        ({"workers": 1.5}, TypeError, "workers must be an int, got float 1.5"),
        ({"workers": "8"}, TypeError, "workers must be an int, got str '8'"),
        ({"workers": True}, TypeError, "workers must be an int, got bool True"),
        ({"workers": None}, TypeError, "workers must be an int, got NoneType None"),
        ({"queue_size": -1}, ValueError, "queue_size must be >= 0, got -1"),
        ({"queue_size": 2.0}, TypeError, "queue_size must be an int"),
        ({"fail_fast": 1}, TypeError, "fail_fast must be a bool"),
        ({"on_error": "log"}, TypeError, "on_error must be callable or None"),
        ({"name": 3}, TypeError, "name must be a str or None"),
        ({"sync_in": "gpu"}, ValueError, "sync_in must be 'thread' or 'process', got 'gpu'"),
        ({"timeout": 0}, ValueError, "timeout must be > 0 seconds"),
        ({"timeout": -1.0}, ValueError, "timeout must be > 0 seconds"),
        ({"timeout": "5"}, TypeError, "timeout must be a number of seconds or None"),
        ({"retry": 3}, TypeError, "retry must be an asyncpool.Retry or None, got 3"),
        ({"rate_limit": 0}, ValueError, "rate_limit must be a finite number of starts per"),
        ({"rate_limit": float("inf")}, ValueError, "rate_limit must be a finite number of"),
        ({"rate_limit": "10/s"}, TypeError, "rate_limit must be a number of starts per second"),
        ({"rate_limit": 5, "rate_burst": 0}, ValueError, "rate_burst must be >= 1, got 0"),
        ({"rate_burst": 4}, ValueError, "rate_burst needs rate_limit"),
    ],
)
def test_bad_input_dispatcher_arguments(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each invalid constructor argument raises at construction, naming the argument."""
    with pytest.raises(error) as caught:
        asyncpool.Dispatcher(**kwargs)
    assert str(caught.value).startswith(message)


# Regression (issue 16): Dispatcher(rate_limit=10**400) raised a bare OverflowError.
@pytest.mark.parametrize("rate", [10**400, 10**5000], ids=["10**400", "10**5000"])
def test_bad_input_rate_limit_too_large_for_a_float_is_refused(rate: int) -> None:
    """rate_limit must be finite: an int too large for a float is refused like math.inf."""
    message = "rate_limit must be a finite number of starts per second > 0, got an int too large"
    with pytest.raises(ValueError, match=f"^{re.escape(message)} for a float$"):
        asyncpool.Dispatcher(rate_limit=rate)


# Regression (issue 16): Dispatcher(rate_limit=1, rate_burst=10**400) raised OverflowError.
def test_bad_input_rate_burst_too_large_for_a_float_is_refused() -> None:
    """A burst no float holds would fill the token bucket with inf: a ValueError naming it."""
    message = "rate_burst must be a finite number of starts, got an int too large for a float"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        asyncpool.Dispatcher(rate_limit=1, rate_burst=10**400)


# The most workers a dispatcher takes, as docs/reference/bad-input.md documents it.
MOST_WORKERS = 1_000_000
TOO_MANY = "^" + re.escape(
    "workers must be <= 1000000 (a started worker takes about 5 KB of memory"
)


# Regression (issue 16): Dispatcher(10**12) was accepted, then start() ran out of memory.
@pytest.mark.parametrize(
    "workers", [MOST_WORKERS + 1, 10**12, 10**400], ids=["1000001", "10**12", "10**400"]
)
def test_bad_input_workers_above_the_maximum_are_refused(workers: int) -> None:
    """Dispatcher(n) with n above the maximum is a ValueError naming workers and the maximum."""
    with pytest.raises(ValueError, match=TOO_MANY):
        asyncpool.Dispatcher(workers)
    assert asyncpool.Dispatcher(MOST_WORKERS).workers == MOST_WORKERS  # not started: no workers


# Bad input: an unknown option must be refused, not silently ignored.
def test_bad_input_unknown_option_is_a_type_error() -> None:
    """An option the dispatcher does not have is rejected, not ignored."""
    with pytest.raises(TypeError, match="deadline"):
        asyncpool.Dispatcher(deadline=5)  # type: ignore[call-arg]


async def test_repr_shows_state_and_load() -> None:
    """The repr says the name, the lifecycle state and the load."""
    gate = Gate()
    dispatcher = asyncpool.Dispatcher(workers=2, name="images")
    assert repr(dispatcher) == "<Dispatcher 'images' not started workers=2 busy=0 queued=0>"
    async with dispatcher:
        handle = await dispatcher.submit(gate)
        await gate.started.wait()
        await dispatcher.submit(asyncio.sleep, 0)
        assert repr(dispatcher) == "<Dispatcher 'images' running workers=2 busy=1 queued=1>"
        assert repr(handle) == "<JobHandle id=1 RUNNING Gate.process>"
        gate.release()
    assert repr(dispatcher) == "<Dispatcher 'images' closed workers=2 busy=0 queued=0>"


# ---------------------------------------------------------- resize: growing


def check_counts(dispatcher: asyncpool.Dispatcher) -> asyncpool.Stats:
    """`check_stats` for a shrink in progress.

    While busy workers are on their way out, more jobs run than `workers`
    (resize's documented contract), so `idle + busy == workers` is suspended;
    the job identity still holds and `idle` is `workers - busy`, never negative.
    """
    s = dispatcher.stats()
    assert s.submitted == s.queued + s.busy + s.succeeded + s.failed + s.cancelled, s
    assert s.idle == max(0, s.workers - s.busy), s
    return s


def states(handles: Sequence[JobHandle[Any]]) -> list[JobState]:
    """The handles' states, read afresh."""
    return [h.state for h in handles]


def worker_tasks() -> list[asyncio.Task[Any]]:
    """The worker tasks alive now (of any dispatcher)."""
    return [t for t in asyncio.all_tasks() if " worker " in t.get_name() and not t.done()]


async def test_resize_grow_starts_workers_at_once() -> None:
    """1 busy worker and a backlog, resize(4): exactly 4 jobs run at once, the rest wait."""
    peak = Peak()
    gates = [Gate(value=i) for i in range(8)]
    async with asyncpool.Dispatcher(workers=1) as d:
        handles = [await d.submit(tracked, peak, g) for g in gates]
        await guarded(gates[0].started.wait())
        assert peak.running == 1
        d.resize(4)
        for gate in gates[1:4]:
            await guarded(gate.started.wait())
        await let_run()
        assert peak.running == 4
        assert not any(g.started.is_set() for g in gates[4:])
        s = check_stats(d)
        assert (s.workers, s.busy, s.idle, s.queued) == (4, 4, 0, 4)
        assert len(internals(d).worker_tasks) == 4
        assert len(worker_tasks()) == 4
        for gate in gates:
            gate.release()
    assert [h.result() for h in handles] == list(range(8))
    assert peak.peak == 4


async def test_resize_grow_never_runs_more_than_the_new_size() -> None:
    """After growing 1 -> 4 with a backlog, never more than 4 jobs run at once, to the end."""
    peak = Peak()
    gates = [Gate(value=i) for i in range(16)]
    async with asyncpool.Dispatcher(workers=1) as d:
        handles = [await d.submit(tracked, peak, g) for g in gates]
        await guarded(gates[0].started.wait())
        d.resize(4)
        for i, gate in enumerate(gates):
            # Jobs start in FIFO order, one as each ends: jobs i..i+3 run now.
            for running in gates[i : i + 4]:
                await guarded(running.started.wait())
            await let_run()  # a fifth job would start here, and stay counted
            assert peak.running == min(4, len(gates) - i)
            check_stats(d)
            gate.release()
            assert await guarded(handles[i]) == i
        assert len(internals(d).worker_tasks) == 4
    assert peak.peak == 4
    assert all(g.runs == 1 for g in gates)


async def test_resize_grow_wakes_blocked_submitters() -> None:
    """A submitter waiting on a full queue gets in once the new workers take queued jobs."""
    gates = [Gate(value=i) for i in range(4)]
    async with asyncpool.Dispatcher(workers=1, queue_size=2) as d:
        first = await d.submit(gates[0])
        await guarded(gates[0].started.wait())
        queued = [await d.submit(gates[1]), await d.submit(gates[2])]
        blocked = asyncio.create_task(d.submit(gates[3]))
        await let_run()
        assert not blocked.done()
        assert check_stats(d).queued == 2

        d.resize(2)  # the new worker takes gate 1, which frees a place
        last = await guarded(blocked)
        await guarded(gates[1].started.wait())
        s = check_stats(d)
        assert (s.busy, s.queued, s.submitted) == (2, 2, 4)
        for gate in gates:
            gate.release()
        results = [await h for h in (first, *queued, last)]
    assert results == [0, 1, 2, 3]


# -------------------------------------------------------- resize: shrinking


async def test_resize_shrink_retires_idle_workers_at_once() -> None:
    """resize(1) on 4 idle workers stops 3 of them now; afterwards one job runs at a time."""
    peak = Peak()
    gates = [Gate(value=i) for i in range(5)]
    async with asyncpool.Dispatcher(workers=4) as d:
        before = list(internals(d).worker_tasks)
        d.resize(1)
        s = check_stats(d)
        assert (s.workers, s.idle, s.busy) == (1, 1, 0)
        assert len(internals(d).worker_tasks) == 1
        assert internals(d).retiring == 0  # nobody was busy: nobody leaves later
        retired = [t for t in before if t is not internals(d).worker_tasks[0]]
        assert len(retired) == 3
        await guarded(asyncio.gather(*(t for t in retired if t is not None)))

        handles = [await d.submit(tracked, peak, g) for g in gates]
        for i, gate in enumerate(gates):
            await guarded(gate.started.wait())
            await let_run()
            assert peak.running == 1
            assert not any(g.started.is_set() for g in gates[i + 1 :])
            check_stats(d)
            gate.release()
            assert await guarded(handles[i]) == i
    assert peak.peak == 1


async def test_resize_shrink_prefers_idle_workers_over_busy_ones() -> None:
    """2 busy + 2 idle, resize(2): the idle ones go, the busy ones keep running, nothing waits."""
    busy = [Gate(value=i) for i in range(2)]
    peak = Peak()
    later = [Gate(value=10 + i) for i in range(4)]
    async with asyncpool.Dispatcher(workers=4) as d:
        busy_handles = [await d.submit(tracked, peak, g) for g in busy]
        for gate in busy:
            await guarded(gate.started.wait())
        d.resize(2)
        assert len(internals(d).worker_tasks) == 2  # the idle two left at once
        assert internals(d).retiring == 0  # so no busy worker has to leave
        s = check_stats(d)
        assert (s.workers, s.busy, s.idle) == (2, 2, 0)

        later_handles = [await d.submit(tracked, peak, g) for g in later]
        await let_run()
        assert not any(g.started.is_set() for g in later)  # the pool is full
        assert peak.running == 2
        busy[0].release()
        assert await guarded(busy_handles[0]) == 0
        # The busy worker that finished stays and takes the next job at once.
        assert state_of(later_handles[0]) is JobState.RUNNING
        assert len(internals(d).worker_tasks) == 2
        for gate in (busy[1], *later):
            gate.release()
    assert [h.result() for h in later_handles] == [10, 11, 12, 13]
    assert peak.peak == 2
    assert not any(g.saw_cancel for g in busy)


async def test_resize_shrink_lets_busy_workers_finish_their_job() -> None:
    """4 busy, resize(1): no running job is cancelled; queued jobs then start one at a time."""
    old = [Gate(value=i) for i in range(4)]
    peak = Peak()
    new = [Gate(value=10 + i) for i in range(3)]
    async with asyncpool.Dispatcher(workers=4) as d:
        old_handles = [await d.submit(g) for g in old]
        for gate in old:
            await guarded(gate.started.wait())
        new_handles = [await d.submit(tracked, peak, g) for g in new]
        d.resize(1)
        s = check_counts(d)
        assert (s.workers, s.busy, s.idle, s.queued) == (1, 4, 0, 3)
        assert len(internals(d).worker_tasks) == 4  # busy workers leave only after their job
        assert all(state_of(h) is JobState.RUNNING for h in old_handles)

        for n in range(3):
            old[n].release()
            assert await guarded(old_handles[n]) == n
            # Its worker left instead of taking a queued job: still too many run.
            assert len(internals(d).worker_tasks) == 3 - n
            assert states(new_handles) == [JobState.QUEUED] * 3
            s = check_counts(d)
            assert (s.busy, s.queued, s.idle) == (3 - n, 3, 0)

        old[3].release()
        assert await guarded(old_handles[3]) == 3
        for i, gate in enumerate(new):
            await guarded(gate.started.wait())
            await let_run()
            assert peak.running == 1
            assert check_stats(d).busy == 1
            gate.release()
            assert await guarded(new_handles[i]) == 10 + i
        assert len(internals(d).worker_tasks) == 1
    assert not any(g.saw_cancel for g in old)
    assert peak.peak == 1


@pytest.mark.parametrize("finished_before_grow", [0, 1, 2, 3])
async def test_resize_shrink_then_grow_back_reuses_the_leaving_workers(
    finished_before_grow: int,
) -> None:
    """4 busy -> resize(1) -> resize(4) before they all end: never more than 4 run or exist."""
    peak = Peak()
    gates = [Gate(value=i) for i in range(12)]
    async with asyncpool.Dispatcher(workers=4) as d:
        handles = [await d.submit(tracked, peak, g) for g in gates]
        for gate in gates[:4]:
            await guarded(gate.started.wait())
        d.resize(1)
        for i in range(finished_before_grow):
            gates[i].release()
            await guarded(handles[i])
        assert len(internals(d).worker_tasks) == 4 - finished_before_grow
        d.resize(4)
        assert len(internals(d).worker_tasks) == 4
        assert internals(d).retiring == 0
        # Each worker that left was replaced: jobs start at once, up to 4.
        for gate in gates[finished_before_grow : finished_before_grow + 4]:
            await guarded(gate.started.wait())
        await let_run()
        assert peak.running == 4
        assert len(worker_tasks()) == 4
        check_stats(d)

        for i in range(finished_before_grow, len(gates)):
            for running in gates[i : i + 4]:
                await guarded(running.started.wait())
            await let_run()
            assert peak.running == min(4, len(gates) - i)
            gates[i].release()
            assert await guarded(handles[i]) == i
        assert len(internals(d).worker_tasks) == 4
        assert len(worker_tasks()) == 4
    assert peak.peak == 4


async def test_resize_stats_follow_every_size() -> None:
    """stats().workers is the new size right after each resize; idle is workers - busy, >= 0."""
    gates = [Gate() for _ in range(2)]
    async with asyncpool.Dispatcher(workers=2) as d:
        for gate in gates:
            await d.submit(gate)
            await guarded(gate.started.wait())
        for size in (3, 1, 5, 2, 2, 6, 1):
            d.resize(size)
            s = check_counts(d)
            assert (s.workers, d.workers, s.busy) == (size, size, 2)
            assert s.idle == max(0, size - 2)
            assert s.idle >= 0
        for gate in gates:
            gate.release()
        await d.join()
        s = check_stats(d)
        assert (s.workers, s.idle, s.busy, s.succeeded) == (1, 1, 0, 2)
        assert len(internals(d).worker_tasks) == 1


@pytest.mark.parametrize(
    ("size", "error"),
    [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)],
)
async def test_resize_rejects_bad_sizes(size: Any, error: type[Exception]) -> None:
    """resize() refuses a size that is not an int >= 1, naming `workers`, and changes nothing."""
    async with asyncpool.Dispatcher(workers=2) as d:
        with pytest.raises(error, match="workers"):
            d.resize(size)
        assert check_stats(d).workers == 2
        assert len(internals(d).worker_tasks) == 2


# Regression (issue 16): resize(10**12) tried to start 10**12 workers and killed the process.
# (Were the check lost, this would start them here; the capped child below proves it safely.)
@pytest.mark.parametrize("workers", [MOST_WORKERS + 1, 10**12], ids=["1000001", "10**12"])
async def test_resize_above_the_maximum_is_refused_at_once(workers: int) -> None:
    """resize(n) above the maximum is a ValueError naming workers, and changes nothing."""
    async with asyncpool.Dispatcher(workers=2) as d:
        with pytest.raises(ValueError, match=TOO_MANY):
            d.resize(workers)
        assert check_stats(d).workers == 2
        assert len(internals(d).worker_tasks) == 2


# Run in a child process whose address space is capped at 1 GiB: a pool of
# 10**12 workers (or even of a million) cannot fit, so if either call tried to
# make one, the child would die of a MemoryError rather than print.
_CAPPED_CHILD = """
import asyncio, json, resource
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
import asyncpool

def refused(call):
    try:
        call()
    except ValueError as exc:
        return str(exc)
    return "accepted"

async def main():
    said = [refused(lambda: asyncpool.Dispatcher(10**12))]
    async with asyncpool.Dispatcher(2) as d:
        said.append(refused(lambda: d.resize(10**12)))
        said.append(d.stats().workers)
    print(json.dumps(said))

asyncio.run(main())
"""


# Regression (issue 16): Dispatcher(10**12) and resize(10**12) allocated until memory ran out.
@pytest.mark.slow
def test_workers_above_the_maximum_are_refused_without_allocating() -> None:
    """Under a 1 GiB memory cap, Dispatcher(10**12) and resize(10**12) raise ValueError at once."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _CAPPED_CHILD],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    constructor, resize, workers = json.loads(done.stdout.strip().splitlines()[-1])
    assert re.match(TOO_MANY, constructor), constructor
    assert re.match(TOO_MANY, resize), resize
    assert workers == 2
    assert time.monotonic() - began < 10


async def test_resize_refuses_a_dispatcher_that_is_not_running() -> None:
    """resize() before start, while closing and after close raises DispatcherClosed."""
    d = asyncpool.Dispatcher(workers=2)
    with pytest.raises(asyncpool.DispatcherClosed, match="not started"):
        d.resize(3)
    await d.start()
    gate = Gate()
    handle = await d.submit(gate)
    await guarded(gate.started.wait())
    closing = asyncio.create_task(d.close())
    await let_run()
    assert not closing.done()
    with pytest.raises(asyncpool.DispatcherClosed, match="closing"):
        d.resize(3)
    gate.release()
    await guarded(closing)
    assert handle.result() is None
    with pytest.raises(asyncpool.DispatcherClosed, match="closed"):
        d.resize(3)
    assert check_stats(d).workers == 2


# A job handed to an idle worker's inbox by submit has not started yet:
# a shrink must take it back rather than let it start in a full pool.
async def test_resize_shrink_does_not_start_a_job_already_handed_to_a_worker() -> None:
    """A job routed to a worker but not yet started when the pool shrinks to 1 waits its turn."""
    running, handed = Gate(value=1), Gate(value=2)
    async with asyncpool.Dispatcher(workers=2) as d:
        first = await d.submit(running)
        await guarded(running.started.wait())
        second = await d.submit(handed)
        # A worker is idle, so submit handed the job to its inbox at once.
        # Caught between routing and starting (the worker has not run yet).
        assert handed_over(second)
        assert state_of(second) is JobState.QUEUED
        d.resize(1)
        await let_run()
        try:
            # One job runs and the pool has one worker: the second must wait.
            assert state_of(second) is JobState.QUEUED
            assert check_counts(d).busy == 1
        finally:
            running.release()
            handed.release()
    assert (first.result(), second.result()) == (1, 2)


async def test_resize_shrink_gives_back_the_rate_token_of_a_job_it_takes_back(
    fast_clock: None,
) -> None:
    """A job taken back from a leaving worker did not start: its rate token is returned."""
    loop = asyncio.get_running_loop()
    running, handed = Gate(value=1), Gate(value=2)
    # Two tokens, then one every 1000 s: a lost token would delay the second job for ever.
    async with asyncpool.Dispatcher(workers=2, rate_limit=0.001, rate_burst=2) as d:
        first = await d.submit(running)
        await guarded(running.started.wait())
        second = await d.submit(handed)
        # A worker is idle, so submit handed the job to its inbox at once.
        assert handed_over(second)
        d.resize(1)
        await let_run()
        released_at = loop.time()
        running.release()
        await guarded(handed.started.wait())
        assert loop.time() == pytest.approx(released_at)  # at once: the token came back
        handed.release()
    assert (first.result(), second.result()) == (1, 2)


# Regression: jobs resize() took back from leaving workers went back newest first.
async def test_jobs_taken_back_by_a_shrink_keep_their_order() -> None:
    """resize() takes back jobs handed to leaving workers: they run oldest first, as queued."""
    order: list[str] = []

    async def record(name: str) -> None:
        order.append(name)

    gate = Gate()
    async with Dispatcher(workers=3) as d:
        blocker = d.submit_nowait(gate)
        await gate.started.wait()  # one worker busy, two idle
        first = d.submit_nowait(record, "first")
        second = d.submit_nowait(record, "second")
        # submit_nowait handed both jobs to the idle workers' inboxes, and
        # the workers have not run yet.
        assert internals(d).idle_workers == 0
        assert d.stats().queued == 2
        d.resize(1)  # both workers leave; their jobs go back to the queue
        gate.release()
        await asyncio.wait_for(asyncio.gather(blocker, first, second), 10)
        check_stats(d)
    assert order == ["first", "second"]
    assert first.started_at is not None
    assert second.started_at is not None
    assert first.started_at <= second.started_at


# Regression: resize() took back older handed-over jobs, so a newer one started first.
async def test_a_shrink_takes_back_the_newest_jobs_handed_to_idle_workers() -> None:
    """resize() takes back the newest unstarted jobs: none starts before an older one."""
    order: list[str] = []

    async def record(name: str) -> None:
        order.append(name)

    async with Dispatcher(workers=2) as d:
        await all_idle(d)
        first = d.submit_nowait(record, "first")  # to the longest-idle worker
        second = d.submit_nowait(record, "second")  # to the other one
        assert internals(d).idle_workers == 0
        d.resize(1)  # one of them leaves: the one holding the newer job
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        check_stats(d)
    assert order == ["first", "second"]
    assert first.started_at is not None
    assert second.started_at is not None
    assert first.started_at <= second.started_at


# ---------------------------------------------------------- resize: threads


async def test_resize_grow_lets_more_threads_run_at_once() -> None:
    """workers=1 runs one blocking job; after resize(3), three run at once in three threads."""
    barrier = threading.Barrier(3)  # passes only when three threads wait on it together
    started = threading.Semaphore(0)

    def meet() -> int:
        started.release()
        barrier.wait(timeout=GUARD)
        return threading.get_ident()

    async with asyncpool.Dispatcher(workers=1) as d:
        handles = [await d.submit(meet) for _ in range(3)]
        assert await anyio.to_thread.run_sync(started.acquire, True, GUARD)
        s = check_stats(d)
        assert (s.busy, s.queued) == (1, 2)
        d.resize(3)
        threads = [await guarded(h) for h in handles]
    assert len(set(threads)) == 3
    assert threading.get_ident() not in threads


class Hold:
    """A sync job that blocks its thread until released."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.started = threading.Event()
        self.go = threading.Event()

    def process(self) -> int:
        self.started.set()
        assert self.go.wait(GUARD), "never released"
        return self.value


async def test_resize_shrink_limits_threads_once_busy_ones_end() -> None:
    """3 blocking jobs running, resize(1): they finish; then one thread job runs at a time."""
    old = [Hold(i) for i in range(3)]
    new = [Hold(10 + i) for i in range(3)]
    async with asyncpool.Dispatcher(workers=3) as d:
        old_handles = [await d.submit(job) for job in old]
        for job in old:
            assert await anyio.to_thread.run_sync(job.started.wait, GUARD)
        new_handles = [await d.submit(job) for job in new]
        d.resize(1)
        assert internals(d).thread_limit is not None
        assert internals(d).thread_limit == 1
        for i, job in enumerate(old):
            assert states(new_handles) == [JobState.QUEUED] * 3
            job.go.set()
            assert await guarded(old_handles[i]) == i
        for i, job in enumerate(new):
            expected = [JobState.SUCCEEDED] * i + [JobState.RUNNING] + [JobState.QUEUED] * (2 - i)
            assert states(new_handles) == expected
            assert check_stats(d).busy == 1
            job.go.set()
            assert await guarded(new_handles[i]) == 10 + i


# ------------------------------------------------------- resize: then close


@pytest.mark.parametrize("cancel", [False, True])
async def test_close_after_resizes_leaves_every_job_final(cancel: bool) -> None:
    """Closing while busy workers are on their way out ends every job and every worker task."""
    gates = [Gate(value=i) for i in range(10)]
    d = asyncpool.Dispatcher(workers=2)
    await d.start()
    handles = [await d.submit(g) for g in gates]
    d.resize(5)
    for gate in gates[:5]:
        await guarded(gate.started.wait())
    d.resize(1)  # 5 busy: 4 of them leave when their job ends...
    d.resize(3)  # ...now only 2 of them
    assert len(internals(d).worker_tasks) == 5
    tasks = list(internals(d).worker_tasks)
    if cancel:
        report = await guarded(d.close(cancel=True))
        assert all(h.cancelled() for h in handles)
        assert set(report.interrupted) == set(handles[:5])
        assert set(report.never_started) == set(handles[5:])
        assert all(g.saw_cancel for g in gates[:5])
    else:
        closing = asyncio.create_task(d.close())
        for gate in gates:
            gate.release()
        report = await guarded(closing)
        assert [h.result() for h in handles] == list(range(10))
        assert len(report) == 0
    assert all(t is not None and t.done() for t in tasks)
    assert worker_tasks() == []
    s = d.stats()
    assert s.submitted == s.succeeded + s.failed + s.cancelled == 10
    assert (s.queued, s.busy) == (0, 0)
