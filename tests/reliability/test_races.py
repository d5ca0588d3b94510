"""Races: thousands of submitters against close(), cancellations and a tiny queue; nothing is lost.

Each test lets a seeded random decide the interleaving (how long each
submitter and each job takes, in event-loop iterations, which submitters and
handles get cancelled, when close() comes) and then checks the books
exactly: every submit() either returned a handle, which ends final, or
raised DispatcherClosed or CancelledError; the handles returned are the jobs
the dispatcher counted; every job counted ends in exactly one final state.

No test sleeps to synchronize: jobs and submitters yield with sleep(0), and
close() comes when a chosen submitter says so. Timeouts race on the
fast-forward clock, or on real timers whose order does not matter to the
checks.

`ASYNCPOOL_STRESS=1` (`make stress`) runs many more seeds.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import pytest

import asyncpool
from asyncpool import JobState
from tests._jobs import check_stats

STRESS = os.environ.get("ASYNCPOOL_STRESS", "0") not in ("", "0")
SEEDS = range(40) if STRESS else range(3)

SUBMITTERS = 10_000


class Planned(Exception):
    """The failure some jobs raise, on purpose."""


@dataclass
class Race:
    """The plan of one race, drawn from a seed, and what happened in it."""

    seed: int
    close: Literal["drain", "cancel"]
    rng: random.Random = field(init=False)
    handles: dict[int, asyncpool.JobHandle[int]] = field(default_factory=dict)
    closed: set[int] = field(default_factory=set)  # submitters told DispatcherClosed
    late: list[int] = field(default_factory=list)  # handles returned after close() began
    ran: Counter[int] = field(default_factory=Counter)
    reported: list[int] = field(default_factory=list)
    close_started: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


async def _yield(times: int) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


async def _run_race(race: Race) -> None:
    rng = race.rng
    n = SUBMITTERS
    # The plan, drawn up front so that the seed alone decides it.
    submitter_delay = [rng.choice((0, 0, 1, 2, 5)) for _ in range(n)]
    job_length = [rng.choice((0, 0, 1, 3)) for _ in range(n)]
    job_fails = [rng.random() < 0.05 for _ in range(n)]
    cancel_own_handle = [rng.random() < 0.05 for _ in range(n)]
    closer = rng.randrange(n // 10, n)  # the submitter whose handle triggers close()
    victims = rng.sample(range(n), n // 20)  # submitter tasks cancelled by others
    killers = rng.sample(range(n), len(victims))  # ...and who cancels each one

    dispatcher = asyncpool.Dispatcher(
        4, queue_size=8, on_error=lambda handle, exc: race.reported.append(handle.id)
    )
    time_to_close = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    kills = dict(zip(killers, victims, strict=True))

    async def job(i: int) -> int:
        race.ran[i] += 1
        await _yield(job_length[i])
        if job_fails[i]:
            raise Planned(i)
        return i

    async def submitter(i: int) -> None:
        try:
            await _yield(submitter_delay[i])
            try:
                handle = await dispatcher.submit(job, i)
            except asyncpool.DispatcherClosed:
                race.closed.add(i)
                return
            # Recorded before any other await: a cancellation of this task
            # from here on must not lose the handle.
            race.handles[i] = handle
            if race.close_started:
                race.late.append(i)
            if cancel_own_handle[i]:
                await _yield(rng.choice((0, 1, 2)))
                handle.cancel()  # queued, handed over, running or done: any of them
        finally:
            if i == closer:  # however it ended: it may be one of the victims
                time_to_close.set()
            victim = kills.get(i)
            if victim is not None and victim < len(tasks):
                tasks[victim].cancel()

    before = asyncio.all_tasks()
    await dispatcher.start()
    tasks.extend(asyncio.create_task(submitter(i)) for i in range(n))
    await time_to_close.wait()
    race.close_started = True
    report = await dispatcher.close(cancel=race.close == "cancel")
    await asyncio.wait(tasks)

    # Every submitter ended one way: a handle, DispatcherClosed, or cancelled.
    cancelled = {i for i, task in enumerate(tasks) if task.cancelled()}
    for task in tasks:
        if not task.cancelled():
            assert task.exception() is None, task.exception()
    with_handle = set(race.handles)
    assert not race.late, f"submit() returned handles after close() began: {race.late[:5]}"
    assert not (race.closed & with_handle)
    assert len(with_handle | race.closed | cancelled) == n
    assert (cancelled & with_handle) <= set(victims)  # cancelled after its submit

    # The books: every handle counted once, every job in one final state.
    stats = check_stats(dispatcher)
    handles = list(race.handles.values())
    assert stats.submitted == len(handles)
    assert sorted(h.id for h in handles) == list(range(1, stats.submitted + 1))
    assert (stats.queued, stats.busy) == (0, 0)
    assert stats.succeeded + stats.failed + stats.cancelled == stats.submitted
    states = Counter(h.state for h in handles)
    assert states[JobState.SUCCEEDED] == stats.succeeded
    assert states[JobState.FAILED] == stats.failed
    assert states[JobState.CANCELLED] == stats.cancelled
    for i, handle in race.handles.items():
        assert handle.done()
        assert race.ran[i] <= 1, f"job {i} ran {race.ran[i]} times"
        if handle.state is JobState.SUCCEEDED:
            assert handle.result() == i
            assert race.ran[i] == 1
        elif handle.state is JobState.FAILED:
            error = handle.exception()
            assert isinstance(error, Planned)
            assert error.args == (i,)
    # Jobs that never ran were cancelled, by their submitter or by the shutdown.
    never_ran = {h for i, h in race.handles.items() if not race.ran[i]}
    assert all(h.cancelled() for h in never_ran)
    assert set(report.never_started) <= never_ran
    if race.close == "drain":
        # A draining close cancels nothing: every cancelled job was cancelled by its submitter.
        assert len(report) == 0
        assert {i for i, h in race.handles.items() if h.cancelled()} <= {
            i for i in range(n) if cancel_own_handle[i]
        }
    else:
        for handle in report.unfinished:
            assert handle.cancelled()
    # Every failure went to on_error once (nobody awaited these handles).
    assert sorted(race.reported) == sorted(h.id for h in handles if h.state is JobState.FAILED)
    assert not [t for t in asyncio.all_tasks() - before if not t.done()]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("close", ["drain", "cancel"])
async def test_races_submitters_against_close(seed: int, close: Literal["drain", "cancel"]) -> None:
    """10,000 submitters, a queue of 8, cancellations, then close() mid-way: nothing is lost."""
    # asyncio debug mode records a traceback for every callback: with some
    # 100,000 of them it makes this test 14 times slower (0.4 s -> 6 s), for
    # checks that the smaller tests make anyway. Off for the race only.
    loop = asyncio.get_running_loop()
    debug = loop.get_debug()
    loop.set_debug(False)
    try:
        await _run_race(Race(seed, close))
    finally:
        loop.set_debug(debug)


@pytest.mark.parametrize("seed", SEEDS)
async def test_races_submitters_cancelled_while_waiting_for_room(seed: int) -> None:
    """Submitters cancelled while blocked on a full queue leave no place taken and jump nobody."""
    rng = random.Random(seed)
    gate = asyncio.Event()

    async def job(i: int) -> int:
        await gate.wait()
        return i

    async with asyncpool.Dispatcher(2, queue_size=4) as dispatcher:
        # Two jobs run and four wait: the queue is full.
        first = [await dispatcher.submit(job, i) for i in range(6)]
        order: list[int] = []

        async def submitter(i: int) -> None:
            handle = await dispatcher.submit(job, i)
            order.append(i)
            assert handle.id == len(first) + len(order)  # first come, first served

        blocked = [asyncio.create_task(submitter(i)) for i in range(6, 1006)]
        await _yield(2)
        assert not any(task.done() for task in blocked)
        victims = set(rng.sample(range(len(blocked)), len(blocked) // 2))
        for index in victims:
            blocked[index].cancel()
        gate.set()
        outcomes = await asyncio.gather(*blocked, return_exceptions=True)
        for index, outcome in enumerate(outcomes):
            if index in victims:
                assert isinstance(outcome, asyncio.CancelledError)
            elif outcome is not None:
                raise outcome
        assert order == [6 + i for i in range(len(blocked)) if i not in victims]
        await dispatcher.join()
        s = check_stats(dispatcher)
        assert s.submitted == s.succeeded == len(first) + len(order)


@pytest.mark.parametrize("seed", SEEDS)
async def test_races_join_and_close_from_many_tasks(seed: int) -> None:
    """join() and close() called at once from many tasks all return, with every job final."""
    rng = random.Random(seed)

    async def job(i: int) -> int:
        await _yield(rng.choice((0, 1, 5)))
        return i

    dispatcher = asyncpool.Dispatcher(4, queue_size=8)
    await dispatcher.start()
    handles = [dispatcher.submit_nowait(job, i) for i in range(8)]
    callers: list[asyncio.Task[object]] = []
    for _ in range(50):
        choice = rng.choice(("join", "close", "close_cancel", "close_timeout"))
        if choice == "join":
            callers.append(asyncio.create_task(dispatcher.join()))
        elif choice == "close":
            callers.append(asyncio.create_task(dispatcher.close()))
        elif choice == "close_cancel":
            callers.append(asyncio.create_task(dispatcher.close(cancel=True)))
        else:
            callers.append(asyncio.create_task(dispatcher.close(timeout=0)))
        await _yield(rng.choice((0, 0, 1)))
    results = await asyncio.gather(*callers)
    assert dispatcher.closed
    assert all(h.done() for h in handles)
    reports = [r for r in results if isinstance(r, asyncpool.ShutdownReport)]
    cancelled = {h for h in handles if h.cancelled()}
    for report in reports:
        assert set(report.unfinished) <= cancelled
    s = check_stats(dispatcher)
    assert (s.queued, s.busy) == (0, 0)
    assert s.succeeded + s.cancelled == s.submitted == len(handles)


def _close_timeout_plan(seed: int, timeout: float) -> list[float]:
    # Durations around the deadline: clearly before, exactly on it, clearly after.
    rng = random.Random(seed)
    return [rng.choice((0.0, timeout / 2, timeout, timeout, 2 * timeout)) for _ in range(40)]


async def _close_timeout_race(seed: int, timeout: float, *, exact_clock: bool) -> None:
    durations = _close_timeout_plan(seed, timeout)
    finished: set[int] = set()
    started = 0
    all_started = asyncio.Event()

    async def job(i: int) -> int:
        nonlocal started
        started += 1
        if started == len(durations):
            all_started.set()
        await asyncio.sleep(durations[i])
        finished.add(i)
        return i

    dispatcher = asyncpool.Dispatcher(len(durations))
    await dispatcher.start()
    handles = [dispatcher.submit_nowait(job, i) for i in range(len(durations))]
    await all_started.wait()  # the deadline now races the jobs' timers

    report = await dispatcher.close(timeout=timeout)

    s = check_stats(dispatcher)
    assert (s.queued, s.busy) == (0, 0)
    assert s.succeeded + s.cancelled == s.submitted == len(handles)
    assert not report.never_started
    for i, handle in enumerate(handles):
        # A job finished or was interrupted, never both, and the report agrees.
        assert handle.done()
        if handle.cancelled():
            assert i not in finished
            assert handle in report.interrupted
            if exact_clock:
                assert durations[i] > 0  # an instant job cannot still run at the deadline
        else:
            assert handle.result() == i
            assert i in finished
            assert handle not in report.interrupted
            if exact_clock:
                assert durations[i] <= timeout  # nothing outlives the deadline
    assert len(report.interrupted) == s.cancelled


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.usefixtures("fast_clock")
async def test_races_close_timeout_against_last_jobs_on_the_fast_clock(seed: int) -> None:
    """close(timeout=T) with jobs ending before, exactly at, and after T: each is counted once."""
    await _close_timeout_race(seed, timeout=10.0, exact_clock=True)


@pytest.mark.parametrize("seed", SEEDS)
async def test_races_close_timeout_against_last_jobs_in_real_time(seed: int) -> None:
    """The same race on real timers (uvloop too): whichever wins, the books balance."""
    # Real timers can be late (a busy machine): only the books are checked.
    await _close_timeout_race(seed, timeout=0.02, exact_clock=False)
