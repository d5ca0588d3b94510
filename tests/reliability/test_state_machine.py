"""Model-based test: a hypothesis state machine drives one dispatcher and checks it against a model.

The machine submits jobs it controls (each waits on an event until the
machine releases it with a success or a failure; some swallow their first
cancellation), with random priorities, keys and retries; it cancels handles
and callers, resizes the pool, joins, and finally closes (drain, cancel,
timeout, or a caller cancelled while draining). The jobs themselves tell the
model when they start and how they end, so after every step the model knows
what each handle must say, and checks it:

* the stats identity, and every counter against the handles;
* `busy` is the number of jobs the model saw start and not end;
* a job starts only while fewer than `workers` run (after a shrink the
  leaving jobs may run on, but nothing new starts meanwhile), and jobs of one
  key never run at once, in submission order within one priority;
* once the loop has settled: no worker is idle while a job could start, a
  blocked submitter means a full queue, submitters are served in order, and
  `join()` returns exactly when its jobs are final;
* every failure reached `on_error` exactly once;
* after `close()` every handle is final, the `ShutdownReport` lists exactly
  the jobs the shutdown cancelled, and no task is left on the loop.

Hypothesis state machines are synchronous: each machine owns an event loop
and runs each step to completion on it. "Settled" means the loop has run
until nothing visible changes any more. No real time is involved: retries
back off for 0 s and close(timeout=0) is the only timeout.

`ASYNCPOOL_STRESS=1` (`make stress`) runs many more examples.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import uvloop
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import asyncpool
from asyncpool import JobState

T = TypeVar("T")

# A pass takes seconds; a failure is shrunk for up to five minutes (hypothesis'
# own limit), and the minimal example is worth that wait. The thread timeout
# would otherwise end the whole session mid-shrink.
pytestmark = pytest.mark.timeout(480)

STRESS = os.environ.get("ASYNCPOOL_STRESS", "0") not in ("", "0")

# Settling: the loop is settled when the model's view has not changed for
# _QUIET iterations in a row. The longest chain of steps that change nothing
# visible (a retry's 0 s timer, the requeue, the dispatcher loop's wake-up,
# the routing, the worker's wake-up) is about five iterations long.
_QUIET = 12
_SETTLE_LIMIT = 2000

KEYS = (None, None, "a", "b")
PRIORITIES = (0, 0, 1, -1, 5)
TRIES = (1, 2)  # Retry(attempts=...) when > 1, with no backoff
CLOSE_MODES = ("drain", "cancel", "timeout0", "caller_cancelled")

steps = st.one_of(st.none(), st.integers(0, 2))
"""How far a step runs the loop: None settles it, a number runs that many iterations."""


class PlannedError(Exception):
    """The failure a released job raises when the machine says so."""


@dataclass(eq=False)
class ModelJob:
    """A job the machine controls, and what the model knows about it."""

    index: int
    key: str | None
    priority: int
    tries: int
    swallows: bool
    on_start: Callable[[ModelJob], None]
    on_end: Callable[[ModelJob, str], None]
    handle: asyncpool.JobHandle[int] | None = None
    runs: int = 0
    running: bool = False
    released: bool = False  # the current run was told to end
    fail_next: bool = False
    swallowed: bool = False
    cancel_requested: bool = False  # handle.cancel() during the current run
    expected: JobState | None = None  # the final state, once the model knows it
    go: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> int:
        self.go = asyncio.Event()
        self.released = False
        self.on_start(self)
        outcome = "cancel"
        try:
            while True:
                try:
                    await self.go.wait()
                    break
                except asyncio.CancelledError:
                    if self.swallows and not self.swallowed:
                        event("a job swallows its cancellation")
                        self.swallowed = True  # a job that ignores its first cancellation
                        continue
                    raise
            if self.fail_next:
                outcome = "fail"
                raise PlannedError(self.index)
            outcome = "ok"
            return self.index
        finally:
            self.on_end(self, outcome)

    def release(self, *, fail: bool) -> None:
        self.fail_next = fail
        self.released = True
        self.go.set()


@dataclass(eq=False)
class Submission:
    """One `await submit(...)` running in its own task (it may wait for room)."""

    job: ModelJob
    task: asyncio.Task[None]
    cancelled_by_us: bool = False


@dataclass(eq=False)
class Joiner:
    """One `await join()` running in its own task."""

    task: asyncio.Task[None]
    horizon: list[int]  # set when the call begins: the jobs it waits for
    cancelled_by_us: bool = False


class DispatcherMachine(RuleBasedStateMachine):
    """One dispatcher, driven at random, checked against the model after every step."""

    loop_factory: Callable[[], asyncio.AbstractEventLoop] = staticmethod(asyncio.new_event_loop)

    def __init__(self) -> None:
        super().__init__()
        self.loop = type(self).loop_factory()
        # No asyncio debug mode here: it triples the cost of a step, and the
        # examples are worth more (the async tests run in debug mode).
        self.dispatcher: asyncpool.Dispatcher | None = None
        self.jobs: list[ModelJob] = []
        self.submissions: list[Submission] = []
        self.joiners: list[Joiner] = []
        self.reported: list[int] = []  # handle ids given to on_error
        self.rejected = 0
        self.events = 0  # starts and ends: part of what "settled" watches
        self.settled = True
        self.cap = 0  # the most jobs that may run now (see _check_running)
        self.cancelling = False  # a shutdown is cancelling every job
        self.closed = False
        self.report: asyncpool.ShutdownReport | None = None
        self.broken = False  # a step failed: teardown only cleans up
        self.violations: list[AssertionError] = []
        self.final_close = "cancel"  # how teardown closes, if no step did

    # ---------------------------------------------------------------- driving

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        self.broken = True
        result = self.loop.run_until_complete(coro)
        self._raise_violations()
        self.broken = False
        return result

    def _raise_violations(self) -> None:
        # A check that fails inside a job or a hook would only fail that job
        # (or be logged): they are kept here and raised by the step.
        if self.violations:
            raise self.violations[0]

    @property
    def d(self) -> asyncpool.Dispatcher:
        assert self.dispatcher is not None
        return self.dispatcher

    def _fingerprint(self) -> tuple[object, ...]:
        s = self.d.stats()
        return (
            self.events,
            s.submitted,
            s.queued,
            s.busy,
            s.finished,
            s.retried,
            sum(sub.task.done() for sub in self.submissions),
            sum(j.task.done() for j in self.joiners),
        )

    async def _settle(self) -> None:
        last: tuple[object, ...] | None = None
        quiet = 0
        for _ in range(_SETTLE_LIMIT):
            await asyncio.sleep(0)
            self._raise_violations()
            mark = self._fingerprint()
            if mark == last:
                quiet += 1
                if quiet >= _QUIET:
                    self.settled = True
                    return
            else:
                last, quiet = mark, 0
        raise AssertionError("the dispatcher never settled: something keeps running")

    async def _advance(self, steps: int | None) -> None:
        if steps is None:
            await self._settle()
            return
        for _ in range(steps):
            await asyncio.sleep(0)
        self.settled = False

    # ------------------------------------------------------ what jobs report

    def _job_started(self, job: ModelJob) -> None:
        try:
            self._check_start(job)
        except AssertionError as violation:
            self.violations.append(violation)
            raise
        job.runs += 1
        job.running = True
        job.cancel_requested = False
        self.events += 1

    def _check_start(self, job: ModelJob) -> None:
        d = self.d
        handle = job.handle
        assert handle is not None, "a job started before its submit() returned"
        assert not self.cancelling, f"job {handle.id} started while a shutdown cancels"
        running = self._running()
        assert len(running) < d.workers, (
            f"job {handle.id} started with {len(running)} running and workers={d.workers}"
        )
        if job.key is not None:
            assert all(other.key != job.key for other in running), (
                f"job {handle.id} started while another job of key {job.key!r} runs"
            )
            if job.runs == 0:
                skipped = [
                    other.handle.id
                    for other in self.jobs
                    if other.key == job.key
                    and other.priority == job.priority
                    and other.handle is not None
                    and other.handle.id < handle.id
                    and other.runs == 0
                    and other.handle.state is JobState.QUEUED
                ]
                assert not skipped, f"job {handle.id} of key {job.key!r} overtook {skipped}"
        assert handle.state is JobState.RUNNING
        assert handle.attempts == job.runs + 1
        if job.runs:
            event("a job runs again (retry)")

    def _job_ended(self, job: ModelJob, outcome: str) -> None:
        job.running = False
        if outcome == "ok":
            job.expected = JobState.SUCCEEDED
        elif outcome == "cancel":
            job.expected = JobState.CANCELLED
        elif job.runs < job.tries and not job.cancel_requested and not self.cancelling:
            job.expected = None  # retried: back to the queue
        else:
            job.expected = JobState.FAILED
        self.events += 1

    def _on_error(self, handle: asyncpool.JobHandle[Any], exc: BaseException) -> None:
        if not isinstance(exc, PlannedError):
            self.violations.append(AssertionError(f"job {handle.id} failed unplanned: {exc!r}"))
        self.reported.append(handle.id)

    # -------------------------------------------------------------- queries

    def _running(self) -> list[ModelJob]:
        return [job for job in self.jobs if job.running]

    def _accepted(self) -> list[ModelJob]:
        return [job for job in self.jobs if job.handle is not None]

    def _queued(self) -> list[ModelJob]:
        return [j for j in self._accepted() if not j.running and j.expected is None]

    def _pending_submissions(self) -> list[Submission]:
        return [sub for sub in self.submissions if not sub.task.done()]

    def _callers(self) -> list[Submission | Joiner]:
        return [*self.submissions, *self.joiners]

    def _waiting_callers(self) -> list[Submission | Joiner]:
        return [caller for caller in self._callers() if not caller.task.done()]

    def _queue_full(self) -> bool:
        """Settled, the bound counts the jobs not started (parked ones too)."""
        size = self.d.queue_size
        return bool(size) and (len(self._queued()) >= size or bool(self._pending_submissions()))

    def _new_job(self, key: str | None, priority: int, tries: int, swallows: bool) -> ModelJob:
        job = ModelJob(
            index=len(self.jobs),
            key=key,
            priority=priority,
            tries=tries,
            swallows=swallows,
            on_start=self._job_started,
            on_end=self._job_ended,
        )
        self.jobs.append(job)
        return job

    @staticmethod
    def _options(job: ModelJob) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if job.key is not None:
            options["key"] = job.key
        if job.priority:
            options["priority"] = job.priority
        if job.tries > 1:
            options["retry"] = asyncpool.Retry(attempts=job.tries, backoff=0, jitter=0)
        return options

    # ----------------------------------------------------------------- rules

    @initialize(
        workers=st.integers(1, 4),
        queue_size=st.integers(0, 4),
        final_close=st.sampled_from(CLOSE_MODES),
    )
    def start(self, workers: int, queue_size: int, final_close: str) -> None:
        self.final_close = final_close
        self.dispatcher = asyncpool.Dispatcher(
            workers, queue_size=queue_size, on_error=self._on_error
        )
        self.cap = workers
        self.run(self.d.start())

    def _open(self) -> bool:
        return self.dispatcher is not None and not self.closed

    @rule(
        key=st.sampled_from(KEYS),
        priority=st.sampled_from(PRIORITIES),
        tries=st.sampled_from(TRIES),
        swallows=st.booleans(),
    )
    def submit(self, key: str | None, priority: int, tries: int, swallows: bool) -> None:
        """`await submit()` in a task of its own: it waits while the queue is full."""
        job = self._new_job(key, priority, tries, swallows)
        if self.closed:
            self.run(self._refused(self.d.submit(job.run, **self._options(job))))
            return
        predicted_wait = self._queue_full() if self.settled else None

        async def submitting() -> None:
            job.handle = await self.d.submit(job.run, **self._options(job))

        async def step() -> None:
            task = asyncio.create_task(submitting())
            self.submissions.append(Submission(job, task))
            await self._settle()
            if not task.done():
                event("submit() waits for room")
            if predicted_wait is not None:
                assert task.done() is not predicted_wait, (
                    f"submit() {'returned' if task.done() else 'waits'}, "
                    f"the model says the queue is {'full' if predicted_wait else 'not full'}"
                )

        self.run(step())

    @rule(
        key=st.sampled_from(KEYS),
        priority=st.sampled_from(PRIORITIES),
        tries=st.sampled_from(TRIES),
        swallows=st.booleans(),
        steps=steps,
    )
    def submit_nowait(
        self, key: str | None, priority: int, tries: int, swallows: bool, steps: int | None
    ) -> None:
        """`submit_nowait()`: QueueFull exactly when the model says the queue is full."""
        job = self._new_job(key, priority, tries, swallows)
        if self.closed:
            with pytest.raises(asyncpool.DispatcherClosed):
                self.d.submit_nowait(job.run, **self._options(job))
            return
        full = self._queue_full() if self.settled else None
        try:
            job.handle = self.d.submit_nowait(job.run, **self._options(job))
        except asyncpool.QueueFull:
            event("submit_nowait() raises QueueFull")
            self.rejected += 1
            assert self.d.queue_size, "QueueFull from an unbounded queue"
            assert full is not False, "QueueFull while the model sees room"
        else:
            assert full is not True, "submit_nowait() accepted a job into a full queue"
            assert job.handle.state is JobState.QUEUED
        self.run(self._advance(steps))

    @precondition(lambda self: self._accepted())
    @rule(
        which=st.sampled_from(["waiting", "running", "any"]),
        pick=st.integers(0, 1 << 16),
        steps=steps,
    )
    def cancel(self, which: str, pick: int, steps: int | None) -> None:
        """`handle.cancel()` on any handle: a waiting job ends at once, a running one soon."""
        accepted = self._accepted()
        if which == "waiting":
            accepted = self._queued() or accepted
        elif which == "running":
            accepted = self._running() or accepted
        job = accepted[pick % len(accepted)]
        handle = job.handle
        assert handle is not None
        was_done = handle.done()
        assert handle.cancel() is not was_done
        if not was_done:
            if job.running:
                event("cancel() a running job")
                job.cancel_requested = True
            else:
                event("cancel() a waiting job")
                assert handle.state is JobState.CANCELLED, "a waiting job was not cancelled at once"
                job.expected = JobState.CANCELLED
        self.run(self._advance(steps))

    @precondition(lambda self: self._open() and any(not j.released for j in self._running()))
    @rule(pick=st.integers(0, 1 << 16), fail=st.booleans(), steps=steps)
    def release(self, pick: int, fail: bool, steps: int | None) -> None:
        """Let a running job end, with its result or a failure."""
        running = [j for j in self._running() if not j.released]
        job = running[pick % len(running)]
        job.release(fail=fail)
        if fail and job.runs < job.tries:
            event("release a job to fail and be retried")
        self.run(self._advance(steps))

    @rule(workers=st.integers(1, 6), steps=steps)
    def resize(self, workers: int, steps: int | None) -> None:
        """Grow or shrink the pool; running jobs are never cut short."""
        if self.closed:
            with pytest.raises(asyncpool.DispatcherClosed):
                self.d.resize(workers)
            return
        if workers < len(self._running()):
            event("resize() below the running jobs")
        self.d.resize(workers)
        assert self.d.workers == self.d.stats().workers == workers
        self.cap = max(workers, len(self._running()))
        self.run(self._advance(steps))

    @rule()
    def join(self) -> None:
        """`await join()` in a task of its own; it returns when its jobs are final."""
        if self.closed:
            self.run(self.d.join())  # returns at once: every job is final
            return
        horizon: list[int] = []

        async def joining() -> None:
            horizon.append(self.d.stats().submitted)
            await self.d.join()

        async def step() -> None:
            self.joiners.append(Joiner(asyncio.create_task(joining()), horizon))
            await self._settle()

        self.run(step())

    @precondition(lambda self: self._open() and self._waiting_callers())
    @rule(pick=st.integers(0, 1 << 16))
    def cancel_caller(self, pick: int) -> None:
        """Cancel a caller blocked in `submit()` or `join()`: it must leak nothing."""
        waiting = self._waiting_callers()
        caller = waiting[pick % len(waiting)]
        caller.task.cancel()
        caller.cancelled_by_us = True
        event(f"cancel a caller waiting in {type(caller).__name__}")
        self.run(self._settle())

    @precondition(_open)
    @rule(fail=st.booleans())
    def drain(self, fail: bool) -> None:
        """Release every job until none is left; then join() returns at once."""

        async def step() -> None:
            for _ in range(10 * len(self.jobs) + 10):
                await self._settle()
                running = [j for j in self._running() if not j.released]
                if not running and not self._queued() and not self._pending_submissions():
                    break
                for job in running:
                    job.release(fail=fail and job.index % 2 == 0)
            else:
                raise AssertionError("draining never ended")
            joining = asyncio.create_task(self.d.join())
            await self._settle()
            assert joining.done(), "join() waits with every job final"
            await joining

        self.run(step())

    # Closing early would waste the rest of an example: wait for some jobs.
    @precondition(lambda self: self.closed or len(self.jobs) >= 8)
    @rule(
        mode=st.sampled_from(CLOSE_MODES),
        second_close=st.booleans(),
        also_join=st.booleans(),
        fail=st.booleans(),
    )
    def close(self, mode: str, second_close: bool, also_join: bool, fail: bool) -> None:
        """Close, in one of four ways; then everything is final and nothing runs."""
        if self.closed:
            self.run(self._close_again())
            return
        event(f"close: {mode}")
        self.run(self._close(mode, second_close=second_close, also_join=also_join, fail=fail))

    async def _close(self, mode: str, *, second_close: bool, also_join: bool, fail: bool) -> None:
        d = self.d
        await self._settle()
        queued = [j.handle for j in self._queued() if j.handle is not None]
        running = self._running()
        unfinished = bool(queued or running)
        blocked = self._pending_submissions()
        closing: asyncio.Task[asyncpool.ShutdownReport]
        if mode == "cancel":
            closing = asyncio.create_task(d.close(cancel=True))
        elif mode == "timeout0":
            closing = asyncio.create_task(d.close(timeout=0))
        else:
            closing = asyncio.create_task(d.close())
        cancels = mode == "cancel" or (mode == "timeout0" and unfinished)
        if cancels:
            self._shutdown_cancels()
        others: list[asyncio.Task[Any]] = []
        if second_close:
            others.append(asyncio.create_task(d.close()))
        if also_join:
            others.append(asyncio.create_task(d.join()))
        if mode == "caller_cancelled":
            await self._settle()
            if not closing.done():
                cancels = True
                self._shutdown_cancels()
                closing.cancel()
        for _ in range(10 * len(self.jobs) + 10):
            await self._settle()
            if closing.done() and all(task.done() for task in others):
                break
            for job in self._running():
                if not job.released:
                    job.release(fail=fail and job.index % 2 == 0)
        else:
            raise AssertionError("close() never returned")

        if mode == "caller_cancelled" and cancels:
            assert closing.cancelled(), "close() swallowed its caller's cancellation"
            report = d.shutdown_report
            assert report is not None
        else:
            report = closing.result()
        for task in others:
            task.result()  # neither a second close() nor a join() may fail
        self.closed = True
        self.report = report
        for job in self._queued():
            assert cancels, f"job {job.index} never finished in a draining close()"
            job.expected = JobState.CANCELLED

        # The report lists exactly what the shutdown cut off.
        if cancels:
            never_started = {h for h in queued if h.attempts == 0}
            interrupted = {h for h in queued if h.attempts} | {
                j.handle for j in running if j.handle is not None and j.handle.cancelled()
            }
        else:
            never_started = interrupted = set()
        assert set(report.never_started) == never_started
        assert set(report.interrupted) == interrupted
        assert len(report) == len(never_started) + len(interrupted)

        # Blocked submitters were turned away.
        for sub in blocked:
            assert sub.task.done()
            if not sub.task.cancelled():
                error = sub.task.exception()
                assert isinstance(error, asyncpool.DispatcherClosed), error
            else:
                assert sub.cancelled_by_us or mode == "caller_cancelled"
        await self._settle()
        self._check_closed()

    def _shutdown_cancels(self) -> None:
        self.cancelling = True
        for job in self._running():
            job.cancel_requested = True

    async def _refused(self, submitting: Coroutine[Any, Any, object]) -> None:
        with pytest.raises(asyncpool.DispatcherClosed):
            await submitting

    async def _close_again(self) -> None:
        """Closing a closed dispatcher is harmless and reports the same jobs."""
        with pytest.raises(asyncpool.DispatcherClosed):
            await self.d.start()
        again = await self.d.close(cancel=True)
        assert self.report is not None
        assert again.never_started == self.report.never_started
        assert again.interrupted == self.report.interrupted
        self._check_closed()

    # ------------------------------------------------------------ invariants

    @invariant()
    def books_balance(self) -> None:
        """The model and the dispatcher agree, after every step."""
        if self.dispatcher is None:
            return
        self.broken = True
        self._raise_violations()
        self._check_handles()
        self._check_running()
        if self.settled and not self.closed:
            self._check_settled()
        self.broken = False

    def _check_handles(self) -> None:
        d = self.d
        s = d.stats()
        assert s.submitted == s.queued + s.busy + s.succeeded + s.failed + s.cancelled, s
        accepted = self._accepted()
        assert s.submitted == len(accepted), (s, len(accepted))
        assert sorted(j.handle.id for j in accepted if j.handle is not None) == list(
            range(1, s.submitted + 1)
        )
        assert s.rejected == self.rejected
        states: Counter[JobState] = Counter()
        for job in accepted:
            handle = job.handle
            assert handle is not None
            if job.running:
                want = JobState.RUNNING
            elif job.expected is None:
                want = JobState.QUEUED
            else:
                want = job.expected
            assert handle.state is want, f"{handle!r}: the model says {want.name}"
            assert handle.done() is want.is_final
            if want is JobState.SUCCEEDED:
                assert handle.result() == job.index
            elif want is JobState.FAILED:
                error = handle.exception()
                assert isinstance(error, PlannedError)
                assert error.args == (job.index,)
            elif want is JobState.CANCELLED:
                assert handle.cancelled()
            states[want] += 1
        assert (s.queued, s.busy, s.succeeded, s.failed, s.cancelled) == (
            states[JobState.QUEUED],
            states[JobState.RUNNING],
            states[JobState.SUCCEEDED],
            states[JobState.FAILED],
            states[JobState.CANCELLED],
        ), (s, states)
        # Nobody awaits these handles: each failure went to on_error, once.
        assert Counter(self.reported) == Counter(
            j.handle.id for j in accepted if j.handle is not None and j.expected is JobState.FAILED
        )

    def _check_running(self) -> None:
        # _job_started checks that nothing starts while `workers` jobs run;
        # in between, the jobs left over from a shrink only ever go down.
        running = len(self._running())
        assert self.d.stats().busy == running
        assert running <= self.cap, (running, self.cap)
        self.cap = max(self.d.workers, running)

    def _check_settled(self) -> None:
        d = self.d
        running = self._running()
        queued = self._queued()
        if len(running) < d.workers:
            # A worker is idle: every job still waiting must be parked behind
            # the running job of its key. Anything else is a lost wake-up.
            held = {j.key for j in running}
            stuck = [j.index for j in queued if j.key is None or j.key not in held]
            assert not stuck, f"jobs {stuck} wait while a worker is idle"
            if queued:
                event("a job waits behind the running job of its key, a worker idle")
        pending = self._pending_submissions()
        if pending:
            assert d.queue_size, "a submitter waits on an unbounded queue"
            assert len(queued) >= d.queue_size, "a submitter waits for room in a queue with room"
        # First come, first served: nobody got in ahead of a waiting submitter.
        first_waiting = min((self.submissions.index(s) for s in pending), default=None)
        if first_waiting is not None:
            for sub in self.submissions[first_waiting:]:
                assert sub.job.handle is None, "a later submitter got in first"
        for joiner in self.joiners:
            if joiner.task.cancelled() or not joiner.horizon:
                continue
            if joiner.task.done():
                assert joiner.task.exception() is None, joiner.task.exception()
            horizon = joiner.horizon[0]
            final = all(
                j.handle.done() for j in self._accepted() if j.handle and j.handle.id <= horizon
            )
            assert joiner.task.done() is final, (
                f"join() {'returned' if joiner.task.done() else 'waits'} "
                f"with its jobs {'final' if final else 'not final'}"
            )

    def _check_closed(self) -> None:
        d = self.d
        assert d.closed
        assert not d.running
        s = d.stats()
        assert (s.queued, s.busy) == (0, 0), s
        for job in self._accepted():
            assert job.handle is not None
            assert job.handle.done(), job.handle
        for caller in self._callers():
            assert caller.task.done()
            if not caller.task.cancelled():
                # A submit() either returned or was refused; a join() returned.
                error = caller.task.exception()
                assert error is None or (
                    isinstance(caller, Submission) and isinstance(error, asyncpool.DispatcherClosed)
                ), error
        current = asyncio.current_task()
        alive = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        assert not alive, f"tasks alive after close(): {alive}"

    # -------------------------------------------------------------- teardown

    def teardown(self) -> None:
        try:
            if self.dispatcher is not None and not self.closed:
                if self.broken:
                    self._clean_up()
                else:
                    self.close(self.final_close, second_close=False, also_join=False, fail=False)
        finally:
            try:
                self._clean_up()
            finally:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.close()

    def _clean_up(self) -> None:
        """After a failure: stop everything without checking anything."""

        async def stop() -> None:
            current = asyncio.current_task()
            for caller in self._callers():
                caller.task.cancel()
            closing = asyncio.create_task(self.d.close(cancel=True))
            # Jobs that swallow a cancellation wait for their event: keep
            # releasing them (a job started meanwhile has a new one).
            for _ in range(_SETTLE_LIMIT):
                for job in self.jobs:
                    job.go.set()
                await asyncio.sleep(0)
                if closing.done() and all(t.done() for t in asyncio.all_tasks() - {current}):
                    break
            if closing.done() and not closing.cancelled():
                closing.exception()  # the failure that broke the step is reported already

        if self.dispatcher is not None and (
            not self.dispatcher.closed or any(not t.done() for t in asyncio.all_tasks(self.loop))
        ):
            self.loop.run_until_complete(stop())


_SETTINGS = settings(
    max_examples=3000 if STRESS else 300,
    stateful_step_count=50 if STRESS else 30,
    deadline=None,
)


class AsyncioMachine(DispatcherMachine):
    """The machine on the default event loop."""

    loop_factory = staticmethod(asyncio.new_event_loop)


class UvloopMachine(DispatcherMachine):
    """The machine on uvloop."""

    loop_factory = staticmethod(uvloop.new_event_loop)


TestStateMachineAsyncio = AsyncioMachine.TestCase
TestStateMachineAsyncio.settings = _SETTINGS
TestStateMachineUvloop = UvloopMachine.TestCase
TestStateMachineUvloop.settings = _SETTINGS
