"""The hot path: the job queue, the idle-worker queue, the routing rule and the worker loop.

This is the one module where speed tricks are allowed, and every one of
them is here: slots, local aliases of attributes and functions, inlined
copies of small methods (each names what it copies), and reads of asyncio
internals (`Future._callbacks`, `Future._log_traceback`, `Task._must_cancel`,
`Queue._queue` and `Queue._getters`; `tests/test_core.py` fails loudly if
one of them changes shape). Everything else in asyncpool is plain code.

The per-job call graph, for a job without options on an idle pool:

    Dispatcher.submit
      -> Core.enqueue            room check; makes the JobHandle and queues it
           -> Core.route         hands it to the longest-idle worker's inbox
    Worker.run                   (the worker's task, woken by its inbox)
      -> awaits the job
      -> Core.finish_succeeded   latency ring and counters inlined
      -> Core.next_job_for       the next job, or register the inbox as idle

In a busy pool a freed worker takes the next job in `next_job_for` itself
(no inbox round trip). Everything unusual (stopping, a shrink, a rate
limit, priorities, a job source waiting for free workers) is behind one
flag, `Core._detour`, that the common path tests once; `_recheck_detour` is
the only place that sets it, and every input to it is a property whose
setter calls it.

The scheduling rule itself is `Core.route`: while a worker is idle and a
job waits, the oldest job of the highest priority goes to the longest-idle
worker. It is synchronous, so nothing changes under it while it decides;
all awaiting happens outside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ._backoff import Backoffs, retry_delay
from ._errors import JobTimeout
from ._executors import Executors
from ._handle import JobHandle
from ._job import (
    CORO_OBJECT,
    IN_THREAD,
    JOB_ON_LOOP,
    ON_LOOP,
    JobState,
    name_of,
)
from ._joins import JoinWaiters
from ._options import JobOptions
from ._policies import KeyTable, PriorityLanes, TokenBucket
from ._reporting import Reporter
from ._stats import WINDOW, Casualties, Stats, latency
from ._telemetry import announce_queued, job_run, run_instrumented

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher

__all__ = ("Core", "Inbox", "LeanQueue", "Worker", "running_worker")

T = TypeVar("T")

_QUEUED = JobState.QUEUED
_RUNNING = JobState.RUNNING
_SUCCEEDED = JobState.SUCCEEDED
_FAILED = JobState.FAILED
_CANCELLED = JobState.CANCELLED

# Unbound methods: calling them skips JobHandle's refusing overrides.
_future_set_result = asyncio.Future.set_result
_future_set_exception = asyncio.Future.set_exception
_future_cancel = asyncio.Future.cancel
_future_add_done_callback = asyncio.Future.add_done_callback
_BASE_LOOP_TIME = asyncio.BaseEventLoop.time
_BASE_CREATE_FUTURE = asyncio.BaseEventLoop.create_future
_WINDOW_MASK = WINDOW - 1
_SAMPLE_MASK = 3  # after the first WINDOW jobs, one job in four is sampled
_DEAD_COMPACTION = 64  # dead queue entries tolerated before a compaction
CORE_WORKERS = 64
"""Workers started with the dispatcher, and never retired for being idle.

A pool larger than this starts its other workers when jobs need them (a job
is queued and no worker is idle) and retires those that stay idle for a
whole `IDLE_SWEEP` period, so that a `Dispatcher(workers=100_000)` costs
memory in proportion to the jobs it runs, not to its size.
"""
IDLE_SWEEP = 10.0
"""Seconds between two looks for idle workers above `CORE_WORKERS` to retire.

A worker retires when it was idle at two looks in a row without running a
job in between: after 10 to 20 seconds idle.
"""

# The putters of every LeanQueue: nobody waits to put into an unbounded queue.
_NOBODY: deque[asyncio.Future[None]] = deque()

# Stands for the outcome of a job whose handle close() already made final.
_ALREADY_FINAL = RuntimeError("the job's handle is final already")

running_worker: contextvars.ContextVar[Worker | None] = contextvars.ContextVar(
    "asyncpool_running_worker", default=None
)
"""The worker that runs the current code (its jobs, and tasks they start).

Set once per worker task (no cost per job); tasks a job creates inherit it
with the context.
"""


class LeanQueue(asyncio.Queue[T]):
    """An unbounded `asyncio.Queue` whose no-wait calls skip what the core never uses.

    The inboxes and the idle-worker queue are private to the core: nobody
    calls `join()` or `task_done()` on them, and they have no `maxsize`, so
    nobody waits in `put()`. `put_nowait` and `get_nowait`, which the routing
    rule calls for every job handed to an idle worker, skip that bookkeeping
    (three or four Python calls each) and wake a waiting `get()` the way
    `asyncio.Queue.put_nowait` does. `get()`, `empty()` and `qsize()` are
    asyncio's own.
    """

    _queue: deque[T]
    _getters: deque[asyncio.Future[None]]
    _is_shutdown = False  # read by asyncio.Queue's methods on Python 3.13+

    def __init__(self) -> None:
        # Not asyncio.Queue.__init__: it also makes a deque for waiting
        # putters and an Event for join(), about 1.4 KB per worker that
        # nothing uses here (no maxsize, so put() never waits; nobody joins).
        # The putters are one shared deque that stays empty.
        self._maxsize = 0
        self._unfinished_tasks = 0
        self._queue = deque()
        self._getters = deque()
        self._putters = _NOBODY

    idle_since = 0
    """For an inbox in the idle-worker queue: the core's sweep count when it was put there."""

    def put_nowait(self, item: T) -> None:
        self._queue.append(item)
        getters = self._getters
        while getters:
            getter = getters.popleft()
            if not getter.done():  # else its get() was cancelled
                getter.set_result(None)
                return

    def get_nowait(self) -> T:
        queue = self._queue
        if not queue:
            raise asyncio.QueueEmpty
        return queue.popleft()

    def peek(self) -> T:
        """The item `get_nowait` would return next (the queue must not be empty)."""
        return self._queue[0]


Inbox = LeanQueue[JobHandle[Any] | None]
"""A worker's inbox. `None` tells the worker to stop."""


def _newest_held_first(worker: Worker) -> float:
    """Sort key for workers holding an unstarted job: a cancelled one first, then the newest."""
    handle = worker.inbox.peek()
    if handle is None or handle._job_state is not _QUEUED:
        return -math.inf
    return -handle.id


def _by_id(handle: JobHandle[Any]) -> int:
    return handle.id


class _DetourInput:
    """An input of `Core._detour`: setting it re-computes the flag, so no caller can forget to.

    Reads and writes go to the slot named `slot`; the hot path reads that
    slot directly, never through this descriptor.
    """

    def __init__(self, slot: str, doc: str) -> None:
        self.slot = slot
        self.__doc__ = doc

    def __get__(self, core: Core | None, owner: type | None = None) -> Any:
        return self if core is None else getattr(core, self.slot)

    def __set__(self, core: Core, value: Any) -> None:
        setattr(core, self.slot, value)
        core._recheck_detour()


class Core:
    """The job queue, the idle workers, the routing rule, job transitions and the counters.

    One per dispatcher. The façade (`Dispatcher`) validates and classifies
    what is submitted, then calls `enqueue`; the lifecycle
    (`asyncpool._lifecycle`) starts and stops the workers through `spawn`,
    `stop_accepting`-side calls and the shutdown methods at the end; job
    handles call `cancel_queued`. The attributes with an underscore are
    this module's own: `Worker` reads them, nothing outside does.
    """

    # Slots: every attribute read on the hot path is a fixed-offset load.
    __slots__ = (
        "__weakref__",
        "dispatcher",
        "reporter",
        "executors",
        "casualties",
        "errors",
        "on_fail_fast",
        "_backlog",
        "_backoffs",
        "_blocked",
        "_bucket",
        "_busy",
        "_cancelled",
        "_cancelling",
        "_dead",
        "_detour",
        "_fail_fast",
        "_failed",
        "_fatal",
        "_group",
        "_idle_count",
        "_idle_inboxes",
        "_joins",
        "_join_horizon",
        "_jobs",
        "_keys",
        "_lanes",
        "_prioritized",
        "_loop",
        "_loop_waiter",
        "_next_worker_index",
        "_now",
        "_putters",
        "_queue_size",
        "_queued",
        "_rate_timer",
        "_rejected",
        "_reserved",
        "_retiring",
        "_retried",
        "_run_samples",
        "_runner",
        "_sample_count",
        "_size",
        "_spares",
        "_stopping",
        "_submitted",
        "_sweep_timer",
        "_sweeps",
        "_unstarted",
        "_succeeded",
        "_timed_out",
        "_wait_samples",
        "_watchers",
        "_workers",
    )

    def __init__(
        self,
        size: int,
        queue_size: int,
        *,
        dispatcher: Dispatcher,
        reporter: Reporter,
        executors: Executors,
        bucket: TokenBucket | None,
        fail_fast: bool,
    ) -> None:
        self.dispatcher = dispatcher
        """The public dispatcher (what `JobHandle.dispatcher` returns)."""
        self.reporter = reporter
        self.executors = executors
        self.casualties: Casualties[JobHandle[Any]] = Casualties()
        """What a shutdown cancelled, for its `ShutdownReport`."""
        self.errors: list[BaseException] = []
        """With fail_fast, the failures that stopped the dispatcher."""
        self.on_fail_fast: Callable[[], None] = _nothing
        """Called after a job failure with fail_fast=True (the lifecycle aborts)."""
        self._fail_fast = fail_fast
        self._size = size
        self._queue_size = queue_size
        # `_loop` is set by start(): nothing reads it before (a job can only
        # be queued once the dispatcher runs), so it has no None to test.
        self._loop: asyncio.AbstractEventLoop
        self._now: Callable[[], float] = time.monotonic
        self._loop_waiter: asyncio.Future[None] | None = None
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None

        # The job queue: fresh jobs without a priority, in id order. Cancelled
        # jobs are left in it and skipped ("dead" entries) so that cancelling
        # is O(1); `_backlog` counts the live ones, and the bound applies to it.
        self._jobs: deque[JobHandle[Any]] = deque()
        self._lanes: PriorityLanes[JobHandle[Any]] = PriorityLanes()
        # The lanes' heap, kept to test "does a prioritized job wait?" as
        # cheaply as the deque (a list's truth value, no call).
        self._prioritized = self._lanes.entries
        self._keys: KeyTable[JobHandle[Any]] = KeyTable()
        self._bucket = bucket
        self._rate_timer: asyncio.TimerHandle | None = None
        self._backoffs: Backoffs[JobHandle[Any]] = Backoffs()
        self._backlog = 0
        self._dead = 0
        self._putters: deque[asyncio.Future[None]] = deque()
        self._reserved = 0  # places promised to woken submitters not yet back

        self._idle_inboxes: LeanQueue[Inbox] = LeanQueue()
        self._idle_count = 0  # its qsize(), kept here: the hot path reads it per job
        # The started workers (spares included), by inbox: a retiring
        # worker is found in O(1), and the order is the order they started.
        self._workers: dict[Inbox, Worker] = {}
        self._next_worker_index = 0
        self._unstarted = size  # places of the pool with no worker started for them yet
        self._sweeps = 0  # looks for idle workers to retire, so far
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._watchers: list[asyncio.Future[None]] = []  # job sources waiting for free workers
        self._blocked = 0  # workers whose job waits for a job of this pool not yet started
        self._spares = 0  # workers lent while every other one is blocked so (fork/join)

        # Counters behind stats(); `_queued` counts jobs not started yet,
        # whether still in the job queue or already handed to a worker.
        self._submitted = 0
        self._queued = 0
        self._busy = 0
        self._succeeded = 0
        self._failed = 0
        self._cancelled = 0
        self._retried = 0
        self._rejected = 0
        self._timed_out = 0
        # Latency rings: the last WINDOW tries that ran to an end, recorded
        # when they end (one index for both keeps it cheap: it is per job).
        self._wait_samples = [0.0] * WINDOW
        self._run_samples = [0.0] * WINDOW
        self._sample_count = 0
        self._join_horizon = 0  # the joins' horizon, copied here: read per job
        self._joins = JoinWaiters(self._set_join_horizon)

        self._cancelling = False  # every job must end now; none may start
        self._fatal = False  # a job raised KeyboardInterrupt or SystemExit
        self._stopping = False  # workers must exit when they next go idle
        self._retiring = 0  # busy workers that leave when their job ends (resize)
        self._detour = False
        self._recheck_detour()

    # ------------------------------------------------- the detour and its inputs

    def _recheck_detour(self) -> None:
        """Set the one flag that sends `next_job_for` off its common path.

        The only place `_detour` is written. Its inputs change only through
        the `stopping` and `retiring` setters, `_push_prioritized` and the
        capacity watchers, each of which calls this.
        """
        self._detour = bool(
            self._stopping
            or self._retiring
            or self._bucket is not None
            or self._lanes.used
            or self._watchers
        )

    stopping = _DetourInput("_stopping", "Workers exit when they next go idle.")
    retiring = _DetourInput("_retiring", "Busy workers that leave when their job ends (a shrink).")

    # ------------------------------------------------------------- facts

    def counts(self) -> tuple[int, int, int]:
        """`(submitted, finished, unfinished)` job counts, for join()."""
        finished = self._succeeded + self._failed + self._cancelled
        return self._submitted, finished, self._queued + self._busy

    def stats(self, size: int) -> Stats:
        """A consistent snapshot of the counters (`Dispatcher.stats`)."""
        return Stats(
            workers=size,
            # After a shrink, workers that are leaving may still be busy.
            idle=max(0, size - self._busy),
            busy=self._busy,
            queued=self._queued,
            submitted=self._submitted,
            succeeded=self._succeeded,
            failed=self._failed,
            cancelled=self._cancelled,
            retried=self._retried,
            rejected=self._rejected,
            timed_out=self._timed_out,
            queue_wait=latency(self._wait_samples, self._sample_count),
            run_time=latency(self._run_samples, self._sample_count),
        )

    def internals(self) -> dict[str, Any]:
        """Facts for `asyncpool._testing.internals`."""
        return {
            "runner": self._runner,
            "worker_tasks": tuple(w.task for w in self._workers.values()),
            "idle_workers": self._idle_count,
            "unstarted_workers": self._unstarted,
            "retiring": self._retiring,
            "queue_entries": len(self._jobs) + len(self._lanes),
            "dead_entries": self._dead,
            "backlog": self._backlog,
            "waiting_submitters": len(self._putters),
            "reserved_places": self._reserved,
            "held_keys": len(self._keys),
            "rate_timer_pending": self._rate_timer is not None,
            "sweep_timer_pending": self._sweep_timer is not None,
        }

    # ------------------------------------------------------------ workers

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the running loop and make the first `CORE_WORKERS` workers (not started yet)."""
        self._loop = loop
        # The default loop's time() is time.monotonic() behind a Python call;
        # call it directly on the hot path. Other loops keep their own clock.
        self._now = time.monotonic if type(loop).time is _BASE_LOOP_TIME else loop.time
        if self._bucket is not None:
            self._bucket.restart(loop.time())
        first = min(self._size, CORE_WORKERS)
        self._workers = {}
        for index in range(first):
            worker = Worker(self, index)
            self._workers[worker.inbox] = worker
        self._next_worker_index = first
        self._unstarted = self._size - first

    def spawn_all(self, group: asyncio.TaskGroup, runner: asyncio.Task[None], label: str) -> None:
        """Start every worker and the dispatcher loop in `group`, hosted by `runner`."""
        self._group = group
        self._runner = runner
        for worker in self._workers.values():
            group.create_task(worker.run(), name=f"{label} worker {worker.index}")
        group.create_task(self._dispatch_loop(), name=f"{label} loop")

    def workers_cancelled(self) -> bool:
        """True if the workers' task group is cancelling them (the runner is
        cancelled, or a job raised KeyboardInterrupt or SystemExit)."""
        runner = self._runner
        return runner is not None and (runner.cancelling() > 0 or self._fatal)

    def called_from_own_job(self) -> bool:
        """True in a job of this core, or in a task one of its jobs started (while it runs)."""
        worker = running_worker.get()
        return worker is not None and worker.core is self and worker.current is not None

    def can_spawn(self) -> bool:
        """True while the workers' task group can take new workers."""
        return self._group is not None

    def _set_join_horizon(self, horizon: int) -> None:
        self._join_horizon = horizon

    def join_waiters(self) -> JoinWaiters:
        """The `join()` calls waiting on this core's jobs."""
        return self._joins

    def grow(self, size: int) -> None:
        """Resize up to `size` workers (the dispatcher runs)."""
        old = self._size
        self._size = size
        # Workers on their way out stay instead: starting new ones next to
        # them would run more jobs at once than `size`.
        kept = min(self._retiring, size - old)
        self.retiring = self._retiring - kept
        self._unstarted += size - old - kept
        # The new places get workers as the pool needs them: up to
        # CORE_WORKERS at once, and one for each job waiting now.
        started = size - self._unstarted
        wanted = max(min(size, CORE_WORKERS) - started, 0 if self._idle_count else self._backlog)
        for _ in range(min(wanted, self._unstarted)):
            self._start_worker()
        self.route()
        self._wake_watchers()

    def _start_worker(self) -> None:
        """Start a worker for one of the pool's unstarted places, registered as idle.

        A job waits and no worker is idle: the caller routes the job to this
        worker's inbox, as to any idle worker's, so the job never counts
        against `queue_size` while a place of the pool is free.
        """
        self._unstarted -= 1
        worker = self._add_worker("worker", registered=True)
        self._idle_count += 1
        worker.inbox.idle_since = self._sweeps
        self._idle_inboxes._queue.append(worker.inbox)
        if self._sweep_timer is None and self._above_core():
            self._sweep_timer = self._loop.call_later(IDLE_SWEEP, self._sweep)

    def _above_core(self) -> bool:
        """More workers are started for the pool's places than the first `CORE_WORKERS`."""
        return self._size - self._unstarted > CORE_WORKERS

    def _sweep(self) -> None:
        """Retire the idle workers above `CORE_WORKERS` not used since the last look."""
        self._sweep_timer = None
        if self._stopping or self._group is None:
            return
        self._sweeps += 1
        stale = self._sweeps - 1  # idle since before the last look
        idle = self._idle_inboxes
        # The idle queue is in the order the workers went idle: the stale ones lead.
        while self._idle_count and self._above_core() and idle.peek().idle_since < stale:
            self._idle_count -= 1
            self._retire(idle.get_nowait())
            self._unstarted += 1
        if self._above_core():
            self._sweep_timer = self._loop.call_later(IDLE_SWEEP, self._sweep)

    def _add_worker(self, kind: str, *, registered: bool = False) -> Worker:
        """Start one more worker in the task group."""
        assert self._group is not None
        worker = Worker(self, self._next_worker_index, registered=registered)
        self._next_worker_index += 1
        self._workers[worker.inbox] = worker
        self._group.create_task(worker.run(), name=f"{self.reporter.label} {kind} {worker.index}")
        return worker

    def shrink(self, size: int) -> None:
        """Resize down to `size` workers: idle ones leave now, busy ones after their job."""
        leaving = self._size - size
        self._size = size
        unstarted = min(leaving, self._unstarted)  # places with no worker go first
        self._unstarted -= unstarted
        leaving -= unstarted
        idle = self._idle_inboxes
        while leaving and self._idle_count:  # the longest idle first
            self._idle_count -= 1
            self._retire(idle.get_nowait())
            leaving -= 1
        # Next, workers that were handed a job they have not started yet:
        # starting it would exceed the new size, so it goes back to the
        # front of the queue and the worker leaves. The workers holding
        # the newest jobs leave, so that no job starts before an older one.
        holders = [w for w in self._workers.values() if w.current is None and not w.inbox.empty()]
        holders.sort(key=_newest_held_first)
        taken_back = []
        for worker in holders[:leaving]:
            handle = worker.inbox.get_nowait()
            if handle is not None and handle._job_state is _QUEUED:
                taken_back.append(handle)
            self._retire(worker.inbox)
            leaving -= 1
        # The newest first: each goes to the front, so the oldest ends up at the head.
        for handle in sorted(taken_back, key=_by_id, reverse=True):
            self._put_back(handle)
        self.retiring = self._retiring + leaving

    def _put_back(self, handle: JobHandle[Any]) -> None:
        """Return a job handed to a worker that will not start it to the front of the queue."""
        handle._handed_over = False
        self._backlog += 1
        if self._bucket is not None:
            self._bucket.give_back()  # the token route() took for it was not used for a start
        opts = handle._opts
        if opts is not None:
            self._push_prioritized(handle, opts)  # at its old place, kept in `order`
        else:
            self._jobs.appendleft(handle)  # it was the head: the deque stays in id order

    def _retire(self, inbox: Inbox) -> None:
        """Tell the worker that owns `inbox` to stop, and forget it."""
        self._workers.pop(inbox, None)
        inbox.put_nowait(None)

    # ------------------------------------------------------------ submitting

    def has_room(self) -> bool:
        """True if a new job may be queued now without jumping a waiting submitter."""
        return not self._queue_size or (
            not self._putters and self._backlog + self._reserved < self._queue_size
        )

    def count_rejected(self) -> None:
        """A `submit_nowait` was refused for want of room."""
        self._rejected += 1

    def enqueue(
        self,
        mode: int,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        opts: JobOptions | None,
        room_or_none: bool,
    ) -> JobHandle[Any] | None:
        """Make the job's handle and queue it; route it if a worker is idle.

        With `room_or_none`, a full queue (or a submitter waiting for room)
        makes it return None instead: the submitter must wait for room. The
        check is `has_room()`, inlined: this runs for every job.
        """
        if room_or_none:
            size = self._queue_size
            if size and (self._putters or self._backlog + self._reserved >= size):
                return None
        handle: JobHandle[Any] = JobHandle(loop=self._loop)
        handle._owner = self
        handle._job_state = _QUEUED
        handle._mode = mode
        handle._fn = fn
        handle._args = args
        handle._kwargs = kwargs or None  # an empty dict is not kept alive per job
        handle._opts = opts
        handle._handed_over = False
        self._submitted += 1
        handle.id = self._submitted
        now = self._now  # a local: a method-style call of an attribute is slow
        handle._queued_at = now()
        self._queued += 1
        self._backlog += 1
        if opts is None:
            self._jobs.append(handle)
        else:
            opts.order = handle.id
            if opts.instruments:
                announce_queued(handle, opts, self.dispatcher.name or "")
            if opts.key is not None:
                if not self._keys.claim(opts.key, handle):
                    opts.parked = True
                    return handle  # parked behind an earlier job of its key
                opts.holds_key = True
            if opts.priority:
                self._push_prioritized(handle, opts)
            else:
                self._jobs.append(handle)
        if self._idle_count:
            # A worker is idle: hand the job over now (one event-loop turn to
            # its start), not through a wake-up of the dispatcher loop (two).
            self.route()
        elif self._unstarted:
            self._start_worker()
            self.route()
        return handle

    async def wait_for_room(self) -> None:
        """Wait, first come first served, until a place in the job queue is ours.

        A woken submitter has a place reserved for it (`_reserved`), so no
        later `submit` or `submit_nowait` can take it first. The caller
        checks, once woken, that the dispatcher still accepts jobs.
        """
        putter = asyncio.get_running_loop().create_future()
        self._putters.append(putter)
        try:
            await putter
        except BaseException:
            if putter.done() and not putter.cancelled():
                # Woken, then cancelled before taking the place: pass it on.
                self._reserved -= 1
                self.wake_putters()
            else:
                # Cancelled while waiting; wake_putters may have dropped it already.
                with contextlib.suppress(ValueError):
                    self._putters.remove(putter)
            raise
        self._reserved -= 1

    def wake_putters(self, *, everyone: bool = False) -> None:
        """Wake as many waiting submitters as there are free places (or all of them)."""
        putters = self._putters
        room = len(putters) if everyone else self._queue_size - self._backlog - self._reserved
        while putters and room > 0:
            putter = putters.popleft()
            if putter.done():
                continue  # its submitter was cancelled and has not run yet
            putter.set_result(None)
            self._reserved += 1
            room -= 1

    def _push_prioritized(self, handle: JobHandle[Any], opts: JobOptions) -> None:
        """Queue a job in the priority lanes, at the place `opts.order` gives it."""
        first = not self._lanes.used
        self._lanes.push(handle, opts.priority, opts.order)
        if first:
            self._recheck_detour()  # from now on next_job_for must look at the lanes too

    def _release_key(self, opts: JobOptions) -> None:
        """A job that held its key is final: the key's next job may go, or the key idles."""
        opts.holds_key = False
        handle = self._keys.release(opts.key)
        if handle is None:
            return
        following = handle._opts
        assert following is not None  # a parked job has a key, so options
        following.parked = False
        following.holds_key = True
        # It has waited since it was submitted: among its priority it goes
        # before the jobs submitted after it (its order is its id).
        self._push_prioritized(handle, following)
        self._wake_or_start()

    # -------------------------------------------------------------- routing

    def route(self) -> None:
        """The routing rule: hand the oldest waiting job to the longest-idle worker.

        Repeats while both exist. Synchronous on purpose: this method and
        `next_job_for`, its special case, are where every scheduling
        decision is made.
        """
        idle = self._idle_inboxes._queue
        bucket = self._bucket
        while self._idle_count and (self._jobs or self._prioritized):
            if bucket is not None and not self._take_token(bucket):
                return  # a timer routes again when the next start is allowed
            handle = self._pop_job()
            if handle is None:
                if bucket is not None:
                    bucket.give_back()  # not used for a start
                return
            self._idle_count -= 1
            handle._handed_over = True  # in an inbox: cancelling it must not touch the queue
            # A copy of LeanQueue.get_nowait and put_nowait, inlined: this is
            # the wake-up of an idle worker, once per job in a bursty pool.
            inbox = idle.popleft()
            inbox._queue.append(handle)
            getters = inbox._getters
            while getters:
                getter = getters.popleft()
                if not getter.done():  # else the worker was cancelled while idle
                    getter.set_result(None)
                    break

    def next_job_for(self, inbox: Inbox) -> JobHandle[Any] | None:
        """A worker is free: give it a job to start now, or register it as idle.

        If jobs wait, the workers idle for longer get theirs first (`route`);
        if jobs are still left, the routing rule would pick this worker next,
        so it gets the oldest one directly, instead of parking its inbox in
        the idle queue only to have it taken out again. This direct
        handoff is what keeps a busy pool from paying queue round trips and
        wake-ups per job. Otherwise the inbox is registered and `route` runs.
        Returns None when the worker must wait on its inbox (or stop, if the
        core is stopping).
        """
        jobs = self._jobs
        if self._detour:  # stopping, shrinking, a rate limit, priorities, watchers
            if self._stopping:
                return None
            if self._retiring:  # a resize() shrank the pool: this worker leaves
                self.retiring = self._retiring - 1
                self._retire(inbox)
                return None
            if self._watchers and self._size - self._busy - self._queued > 0:
                self._wake_watchers()
            # With a rate limit, route() decides; priorities live in the lanes too.
            if self._bucket is None and (jobs or self._prioritized):
                if self._idle_count:
                    self.route()  # the longer-idle workers first
                if not self._idle_count:
                    handle = self._pop_job()
                    if handle is not None:
                        return handle
        elif jobs:
            if self._idle_count:
                # Workers idle for longer come first: the routing rule gives
                # them the oldest jobs. If jobs are left, every worker but
                # this one is busy, and the next job is this worker's.
                self.route()
            # A copy of _pop_job's common case (no priorities: the deque
            # alone), inlined because it runs once per job in a busy pool.
            # (Without a detour no prioritized job was ever queued.)
            while jobs:
                handle = jobs.popleft()
                if handle._job_state is _QUEUED:
                    self._backlog -= 1
                    if self._putters:
                        self.wake_putters()
                    return handle
                self._dead -= 1  # cancelled while it waited
        self._idle_count += 1
        inbox.idle_since = self._sweeps
        # Nobody waits on the idle-worker queue: an append is its put_nowait.
        self._idle_inboxes._queue.append(inbox)
        if jobs or self._prioritized:
            self.route()
        return None

    def _pop_job(self) -> JobHandle[Any] | None:
        """Take the next job that may start off the job queue, freeing its room.

        The next job is the oldest of the highest priority. (Jobs parked
        behind an earlier job of their key are not in the queue yet; they
        still count against `queue_size`.)
        """
        jobs = self._jobs
        if not self._prioritized:
            # The common case: the FIFO deque alone.
            while jobs:
                handle = jobs.popleft()
                if handle._job_state is _QUEUED:
                    self._backlog -= 1
                    if self._putters:
                        self.wake_putters()
                    return handle
                self._dead -= 1  # cancelled while it waited
            return None
        lanes = self._lanes
        while True:
            taken = lanes.take(jobs)
            if taken is None:
                return None
            if taken._job_state is not _QUEUED:
                self._dead -= 1  # cancelled while it waited
                continue
            self._backlog -= 1
            if self._putters:
                self.wake_putters()
            return taken

    def _take_token(self, bucket: TokenBucket) -> bool:
        """May a job start now under the rate limit? If not, a timer routes again later."""
        wait = bucket.take(self._loop.time())
        if not wait:
            return True
        if self._rate_timer is None:
            self._rate_timer = self._loop.call_later(wait, self._token_due)
        return False

    def _token_due(self) -> None:
        self._rate_timer = None
        if not (self._stopping or self.workers_cancelled()):
            self.route()

    async def _dispatch_loop(self) -> None:
        """Route; sleep until a job waits while a worker is idle; repeat.

        Routing before every sleep means nothing queued while the loop was
        not asleep (before its first run, or between its wake-up and now)
        is missed: `_wake_loop` only has to wake a sleeping loop.
        """
        loop = self._loop
        while not self._stopping:
            self.route()
            waiter = self._loop_waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._loop_waiter = None

    def _wake_loop(self) -> None:
        """Wake the dispatcher loop if it sleeps (once: later calls are free)."""
        waiter = self._loop_waiter
        if waiter is not None:
            self._loop_waiter = None
            if not waiter.done():  # else the loop is being cancelled
                waiter.set_result(None)

    # --------------------------------------------- fork/join: spare workers

    def waiting_on_queued(self, handle: JobHandle[Any]) -> None:
        """A task starts waiting for `handle`, a job of this pool that has not started.

        If the task is a worker's own (a job awaiting a job it submitted: the
        fork/join pattern), that worker is blocked until the job ends. Were
        every worker blocked so, no job could ever start again: `_compensate`
        lends a spare worker (fork/join pools call this compensation).
        """
        worker = running_worker.get()
        if (
            worker is None
            or worker.core is not self
            or worker.current is None
            or worker.task is not asyncio.current_task()  # a task the job started
        ):
            return
        if not worker.waiting:
            self._blocked += 1
        worker.waiting += 1
        _future_add_done_callback(handle, worker.waited)
        self._compensate()

    def unblocked(self, worker: Worker) -> None:
        """A job `worker` waited for has ended."""
        worker.waiting -= 1
        if not worker.waiting:
            self._blocked -= 1
            self._compensate()

    def _compensate(self) -> None:
        """Keep one worker able to start jobs while every other one waits for its own pool.

        With `b` blocked workers out of `size + spares`, the pool needs
        `b - size + 1` spares when `b >= size`, else none. Spares no longer
        needed leave: an idle one at once, else the next worker to free up.
        """
        needed = self._blocked - self._size + 1 if self._blocked >= self._size else 0
        while self._spares < needed and self._group is not None and not self._stopping:
            self._spares += 1
            self._add_worker("spare worker")
        while self._spares > needed:
            self._spares -= 1
            if self._idle_count:
                self._idle_count -= 1
                self._retire(self._idle_inboxes.get_nowait())
            else:
                self.retiring = self._retiring + 1

    # ------------------------------------------------------ free workers (sources)

    def free_slots(self) -> int:
        """Workers that no running or queued job accounts for: what a job source may feed."""
        return self._size - self._busy - self._queued

    async def wait_for_free_slots(self) -> None:
        """Wait until `free_slots()` may have grown (or `wake_watchers` is called)."""
        watcher = self._loop.create_future()
        self._watchers.append(watcher)
        self._recheck_detour()
        try:
            await watcher
        finally:
            with contextlib.suppress(ValueError):
                self._watchers.remove(watcher)
            self._recheck_detour()

    def _wake_watchers(self) -> None:
        for watcher in self._watchers:
            if not watcher.done():
                watcher.set_result(None)

    wake_watchers = _wake_watchers

    # ------------------------------------------------------------ job states

    def finish_succeeded(self, handle: JobHandle[Any], result: Any) -> float:
        """The job returned `result`. Returns the time it finished, on the loop's clock."""
        handle._job_state = _SUCCEEDED
        clock = self._now
        now = handle._finished_at = clock()
        # A copy of _sample(), inlined. Every job of the first WINDOW, then
        # every fourth: recording costs more than 5% of a trivial job.
        job_id = handle.id
        if not job_id & _SAMPLE_MASK or job_id <= WINDOW:
            i = self._sample_count
            # Set: the job ran (an assert here would cost a test per job).
            started: float = handle._started_at  # type: ignore[assignment]
            self._wait_samples[i & _WINDOW_MASK] = started - handle._queued_at
            self._run_samples[i & _WINDOW_MASK] = now - started
            self._sample_count = i + 1
        self._busy -= 1
        self._succeeded += 1
        _future_set_result(handle, result)
        if job_id <= self._join_horizon:
            self._joins.count(handle)
        opts = handle._opts
        if opts is not None and opts.holds_key:
            self._release_key(opts)
        return now

    def _sample(self, handle: JobHandle[Any], now: float) -> None:
        """Record a try that ran to an end in the latency rings (one in four after WINDOW)."""
        if not handle.id & _SAMPLE_MASK or handle.id <= WINDOW:
            i = self._sample_count
            started = handle._started_at
            assert started is not None  # the job ran
            self._wait_samples[i & _WINDOW_MASK] = started - handle._queued_at
            self._run_samples[i & _WINDOW_MASK] = now - started
            self._sample_count = i + 1

    def finish_failed(self, handle: JobHandle[Any], exc: BaseException, *, fatal: bool) -> None:
        """The job raised `exc` (`fatal`: KeyboardInterrupt or SystemExit): retry it, or fail it."""
        now = self._now()
        self._sample(handle, now)
        opts = handle._opts
        if opts is not None:
            if not fatal and self._retry_later(handle, opts, exc):
                return
            if opts.holds_key:
                self._release_key(opts)
        handle._job_state = _FAILED
        handle._finished_at = now
        self._busy -= 1
        self._failed += 1
        # Someone is waiting if the future has callbacks: an awaiting task
        # registers one, and so do gather(), wait() and add_done_callback().
        awaited = bool(handle._callbacks)
        _future_set_exception(handle, exc)
        if fatal:
            self._fatal = True  # the group will cancel the other workers
            handle._log_traceback = False  # it propagates; reporting it again would be noise
            if self._fail_fast:
                self.errors.append(exc)  # re-raised by __aexit__, as TaskGroup does
        elif self._fail_fast:
            handle._log_traceback = False  # reported once, in the ExceptionGroup
            self.errors.append(exc)
            self.on_fail_fast()
        if handle.id <= self._join_horizon:
            self._joins.count(handle)
        if not (fatal or self._fail_fast or awaited):
            handle._log_traceback = False  # reported here, so asyncio must not report it again
            self.reporter.report(handle, exc)

    def finish_cancelled(self, handle: JobHandle[Any], msg: Any) -> None:
        """The job is cancelled: before it started, or while it ran."""
        if handle._job_state is _QUEUED:
            self._queued -= 1
            opts = handle._opts
            if opts is None or not opts.tries:
                handle._started_at = None  # it never started
            if handle._mode == CORO_OBJECT:
                handle._fn.close()  # it will never run: no "never awaited" warning
        else:
            self._busy -= 1
        handle._job_state = _CANCELLED
        handle._finished_at = self._now()
        self._cancelled += 1
        _future_cancel(handle, msg)
        if handle.id <= self._join_horizon:
            self._joins.count(handle)
        opts = handle._opts
        if opts is not None and opts.holds_key:
            self._release_key(opts)
        if self._watchers:
            self._wake_watchers()

    def _retry_later(self, handle: JobHandle[Any], opts: JobOptions, exc: BaseException) -> bool:
        """A try failed: if the job's policy retries it, send it to wait out its backoff.

        While it waits the job holds no worker and counts as queued; its key,
        if it has one, stays held, so later jobs of the key keep their order.
        """
        delay = retry_delay(
            opts.retry, opts.tries, exc, handle, self.reporter.label, self._cancelling
        )
        if delay is None:
            return False
        handle._job_state = _QUEUED
        handle._worker_task = None
        handle._handed_over = False
        self._busy -= 1
        self._queued += 1
        self._retried += 1
        self._backoffs.start(self._loop, handle, delay, self._requeue)
        return True

    def _requeue(self, handle: JobHandle[Any]) -> None:
        """A retry's backoff is over: the job goes back in the queue."""
        if handle._job_state is not _QUEUED:
            return
        if self._cancelling:
            self.cancel_unstarted(handle)
            return
        opts = handle._opts
        assert opts is not None  # only jobs with a retry policy wait out a backoff
        # Back in the queue even when it is full: the job was accepted long
        # ago, and nobody is there to wait for room. At the back of its priority.
        self._backlog += 1
        opts.order = self._submitted  # behind every job accepted so far
        self._push_prioritized(handle, opts)
        self._wake_or_start()

    def _wake_or_start(self) -> None:
        """A job was queued outside `enqueue`: route it, or start a worker for it."""
        if self._idle_count:
            self._wake_loop()
        elif self._unstarted and not self._stopping and self._group is not None:
            self._start_worker()
            self._wake_loop()

    def cancel_queued(self, handle: JobHandle[Any], msg: Any) -> None:
        """`handle.cancel()` on a job that has not started (or waits to be retried)."""
        opts = handle._opts
        if opts is not None:
            if self._backoffs.stop(handle):  # it was waiting out a retry backoff
                self.finish_cancelled(handle, msg)
                return
            if opts.parked:  # waiting for its key, outside the queue
                opts.parked = False
                self._keys.unpark(opts.key, handle)
                self._backlog -= 1
                self.finish_cancelled(handle, msg)
                if self._putters:
                    self.wake_putters()
                return
        in_queue = not handle._handed_over
        self.finish_cancelled(handle, msg)
        if in_queue:
            # Left in the job queue for routing to skip; its room is free now.
            self._backlog -= 1
            self._dead += 1
            if self._dead > _DEAD_COMPACTION and self._dead * 2 > len(self._jobs) + len(
                self._lanes
            ):
                self._jobs = deque(h for h in self._jobs if h._job_state is _QUEUED)
                self._lanes.keep(_is_queued)
                self._dead = 0
            if self._putters:
                self.wake_putters()

    # ------------------------------------------------------------ shutdown

    def stop_accepting(self) -> None:
        """The dispatcher stops accepting: every waiting submitter and source is woken."""
        self.wake_putters(everyone=True)
        self._wake_watchers()

    def cancel_queued_jobs(self) -> None:
        """Cancel every job that has not started: queued, parked, or waiting out a backoff."""
        # Parked jobs first, and the key table with them: ending a key's
        # running job must not un-park the next one into a queue being emptied.
        parked = self._keys.drain()
        for handle in parked:
            assert handle._opts is not None
            handle._opts.parked = False
            self._backlog -= 1
        jobs = self._jobs
        while jobs:
            handle = jobs.popleft()
            if handle._job_state is _QUEUED:
                self._backlog -= 1
                self.cancel_unstarted(handle)
        for handle in self._lanes.drain():
            if handle._job_state is _QUEUED:
                self._backlog -= 1
                self.cancel_unstarted(handle)
        self._dead = 0
        for handle in parked:
            self.cancel_unstarted(handle)
        for handle in self._backoffs.drain():
            self.cancel_unstarted(handle)

    def cut_short(self, handle: JobHandle[Any]) -> None:
        """A map cut short by a cancellation drops `handle`: list it in the next report.

        A job not done is cancelled and listed as `never_started` or
        `interrupted`; one that finished is listed as `undelivered`.
        """
        if handle.done():
            if not handle.cancelled():
                self.casualties.undelivered.append(handle)
            return
        casualties = self.casualties
        (casualties.interrupted if handle.attempts else casualties.never_started).append(handle)
        handle.cancel()

    def cancel_unstarted(self, handle: JobHandle[Any]) -> None:
        """A shutdown cancels a job that is not running; the report lists it."""
        # A job between two tries (waiting out a backoff, or queued again)
        # has run: it was interrupted, not never started.
        casualties = self.casualties
        (casualties.interrupted if handle.attempts else casualties.never_started).append(handle)
        self.finish_cancelled(handle, None)

    def stop_workers(self) -> None:
        """Workers exit when they next go idle; the idle ones now."""
        self.stopping = True
        idle = self._idle_inboxes
        while self._idle_count:
            self._idle_count -= 1
            idle.get_nowait().put_nowait(None)
        self._wake_loop()

    def running(self) -> list[tuple[asyncio.Task[None], JobHandle[Any]]]:
        """The workers running a job now: each one's task and its job."""
        return [
            (w.task, w.current) for w in self._workers.values() if w.current is not None and w.task
        ]

    def begin_cancelling(self) -> None:
        """Every job must end now; none may start (queued jobs are cancelled as they come)."""
        self._cancelling = True

    def tear_down(self) -> None:
        """Whatever way the workers ended, every handle ends final and nobody is left waiting."""
        self._cancelling = True
        self.stopping = True
        self.cancel_queued_jobs()
        # Workers that were cancelled while idle left their inboxes
        # registered; a job routed there since must still end final.
        while self._idle_count:
            self._idle_count -= 1
            self._idle_inboxes.get_nowait()
        for worker in self._workers.values():
            worker.release_inbox()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None
        self._group = None
        self.stop_accepting()


class Worker:
    """One worker: an inbox, and the coroutine that serves it one job at a time.

    This is the seed's `Worker`: it registers its inbox with the core's
    idle-worker queue, waits for a job on the inbox, runs it, and registers
    again, whatever the job did. A lost registration would shrink the pool
    for good, so the loop has exactly one place where it registers, at its
    top (`Core.next_job_for`).
    """

    __slots__ = ("core", "index", "inbox", "current", "task", "waiting", "registered")

    def __init__(self, core: Core, index: int, *, registered: bool = False) -> None:
        self.core = core
        self.index = index
        self.registered = registered
        """Its inbox was put in the idle-worker queue when it was made (its first step waits)."""
        self.inbox: Inbox = LeanQueue()
        self.current: JobHandle[Any] | None = None
        """The job this worker is running, if any."""
        self.task: asyncio.Task[None] | None = None
        """The worker's task, once it runs."""
        self.waiting = 0
        """How many jobs of its own pool, not started when it began to wait,
        this worker's job waits for (see `Core.waiting_on_queued`)."""

    def waited(self, _: asyncio.Future[Any]) -> None:
        """A done callback: a job this worker's job waited for has ended."""
        self.core.unblocked(self)

    async def run(self) -> None:
        """Serve the inbox until told to stop.

        Raises:
            KeyboardInterrupt, SystemExit: raised by a job; they tear the
                dispatcher down, as in `asyncio.TaskGroup`.
            asyncio.CancelledError: the worker itself was cancelled (its task
                group is shutting down).
        """
        core = self.core
        inbox = self.inbox
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        running_worker.set(self)
        cancelling = task.cancelling  # bound once: a method call on a task is slow to look up
        now = core._now
        # The inbox's wait, inlined (asyncio.Queue.get costs a coroutine and
        # four calls per wake-up): a future in the inbox's getters, which
        # Core.route completes. Cancelled, it stays there and route skips it.
        loop = core._loop
        new_future = (
            partial(asyncio.Future, loop=loop)
            if type(loop).create_future is _BASE_CREATE_FUTURE
            else loop.create_future
        )
        waiting = inbox._queue
        getters = inbox._getters
        # When this worker last became free: the start time of a job it takes
        # in the same step (one clock read per job fewer on the busy path).
        free_at = now()
        # A worker started for a job begins registered as idle, its job in
        # its inbox (Core._start_worker): its first step is the wait.
        registered = self.registered
        try:
            while True:
                if registered:
                    registered = False
                    handle = None
                else:
                    handle = core.next_job_for(inbox)
                if handle is None:
                    if core._stopping and not waiting:
                        return
                    while not waiting:
                        getter = new_future()
                        getters.append(getter)
                        await getter
                    handle = waiting.popleft()
                    if handle is None:
                        return
                    free_at = now()
                    if handle._job_state is not _QUEUED:
                        continue  # cancelled after it was handed over
                if core._cancelling:
                    core.cancel_unstarted(handle)
                    continue
                self.current = handle
                # The job starts (a copy of the transition to RUNNING, inlined:
                # it is per job).
                handle._job_state = _RUNNING
                handle._worker_task = task
                handle._cancel_requested = False
                handle._started_at = free_at
                core._queued -= 1
                core._busy += 1
                try:
                    if handle._opts is not None:
                        result = await self._run_with_options(handle)
                    else:
                        mode = handle._mode
                        if mode == ON_LOOP:
                            kwargs = handle._kwargs
                            if kwargs:
                                result = await handle._fn(*handle._args, **kwargs)
                            else:
                                result = await handle._fn(*handle._args)
                        elif mode == JOB_ON_LOOP:
                            result = await handle._fn.process()
                        else:
                            result = await self._call(handle)
                except (KeyboardInterrupt, SystemExit) as exc:
                    self.current = None
                    core.finish_failed(handle, exc, fatal=True)
                    raise
                except BaseException as exc:
                    error: BaseException | None = exc
                else:
                    error = None
                self.current = None
                if handle._cancel_requested:
                    # Balance our cancel() request, however the job ended: it
                    # may have swallowed the CancelledError, or turned it into
                    # another exception.
                    # Read before uncancel(): from Python 3.13 on, an
                    # uncancel() that brings the count to zero also drops a
                    # request still pending.
                    pending = getattr(task, "_must_cancel", False)
                    task.uncancel()
                    if pending:
                        # The job cancelled its own handle and never awaited
                        # again, so the request was still pending on this task:
                        # take delivery here (3.11 and 3.12 keep it), or the
                        # worker's next await gets it. Like a task that cancels
                        # itself and returns, the job ends cancelled.
                        if getattr(task, "_must_cancel", False):
                            with contextlib.suppress(asyncio.CancelledError):
                                await asyncio.sleep(0)
                        if error is None:
                            error = asyncio.CancelledError()
                    if handle.done():  # close() abandoned it: it is final already
                        core.reporter.abandoned_job_ended(handle, error)
                        error = _ALREADY_FINAL
                if error is None:
                    free_at = core.finish_succeeded(handle, result)
                else:
                    if isinstance(error, asyncio.CancelledError):
                        core.finish_cancelled(handle, error.args[0] if error.args else None)
                    elif error is not _ALREADY_FINAL:
                        core.finish_failed(handle, error, fatal=False)
                    free_at = now()
                # Drop the job's data before waiting: an idle worker must not
                # keep the last result, error or arguments (and their frames) alive.
                handle = result = error = None
                if cancelling():
                    if core.workers_cancelled():
                        # The worker itself is being cancelled (its group is
                        # shutting down), whether or not the job noticed.
                        raise asyncio.CancelledError
                    # A job cancelled its own task and never balanced it (old
                    # timeout libraries do that); the request was the job's.
                    while task.cancelling():
                        task.uncancel()
                    if getattr(task, "_must_cancel", False):
                        # It returned without awaiting after its cancel(), so
                        # the request is still pending (3.11 and 3.12; 3.13's
                        # uncancel() drops it): taken here, it cannot cancel
                        # the worker's next job.
                        with contextlib.suppress(asyncio.CancelledError):
                            await asyncio.sleep(0)
                        if core.workers_cancelled():
                            raise asyncio.CancelledError
        finally:
            self.release_inbox()

    async def _run_with_options(self, handle: JobHandle[Any]) -> Any:
        """Run a job that has per-job options: count the try, tell its observer, keep its limit."""
        opts = handle._opts
        assert opts is not None
        opts.tries += 1
        if opts.observer is not None:
            opts.observer.job_started(handle)
        if opts.instruments:
            job = job_run(handle, opts, self.core.dispatcher.name or "", opts.tries)
            return await run_instrumented(opts.instruments, job, lambda: self._try(handle, opts))
        if opts.timeout is None:
            return await self._call(handle)  # one coroutine frame fewer: most options jobs
        return await self._try(handle, opts)

    async def _try(self, handle: JobHandle[Any], opts: JobOptions) -> Any:
        """One try of a job with options, within its time limit."""
        timeout = opts.timeout
        if timeout is None:
            return await self._call(handle)
        try:
            async with asyncio.timeout(timeout) as scope:
                return await self._call(handle)
        except TimeoutError as exc:
            if not scope.expired():
                raise  # the job's own TimeoutError
            self.core._timed_out += 1
            raise JobTimeout(
                f"job {handle.id} ({name_of(handle.fn)}) ran longer than its timeout of "
                f"{timeout:g} s and was cancelled (try {handle.attempts})"
            ) from exc

    async def _call(self, handle: JobHandle[Any]) -> Any:
        """Run one try of the job, whatever its run mode (the general path)."""
        mode = handle._mode
        if mode == ON_LOOP:
            return await handle._fn(*handle._args, **(handle._kwargs or {}))
        if mode == JOB_ON_LOOP:  # not made with options today; kept so it never runs elsewhere
            return await handle._fn.process()
        if mode == CORO_OBJECT:
            return await handle._fn
        executors = self.core.executors
        if mode == IN_THREAD:
            return await executors.run_in_thread(handle._fn, handle._args, handle._kwargs or {})
        return await executors.run_in_process(handle._fn, handle._args, handle._kwargs or {})

    def release_inbox(self) -> None:
        """End the jobs left in the inbox when the worker stops: nothing is lost."""
        # Jobs handed over but never started when the worker stops (it was
        # cancelled) must still end in a final state.
        inbox = self.inbox
        while not inbox.empty():
            handle = inbox.get_nowait()
            if handle is not None and handle._job_state is _QUEUED:
                self.core.cancel_unstarted(handle)


def _is_queued(handle: JobHandle[Any]) -> bool:
    return handle._job_state is _QUEUED


def _nothing() -> None:
    pass
