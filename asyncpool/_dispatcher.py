"""`Dispatcher`: the bounded job queue, the idle-worker queue, the routing rule and the lifecycle.

The shape is the Go seed's, done in asyncio:

* submitters append jobs to a bounded job queue (a full queue makes
  `await submit()` wait: real backpressure);
* each worker owns an `asyncio.Queue` inbox and, when idle, registers that
  inbox in the idle-worker queue (`_idle_inboxes`);
* `_route` hands the oldest waiting job to the longest-idle inbox. It is the
  whole routing rule, and it is synchronous: every scheduling decision is
  made there, and all awaiting happens outside it;
* `submit` routes on the spot when a worker is idle (the job starts one turn
  of the event loop later), and a worker that becomes free while jobs wait
  routes on the spot too, so no job pays a wake-up of the dispatcher loop on
  its way in; the dispatcher loop (`_dispatch_loop`) routes the jobs that
  come back from elsewhere (a retry after its backoff, the next job of a
  key) and sleeps in between;
* one `asyncio.TaskGroup` owns the workers and the loop: it is the WaitGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import itertools
import logging
import math
import multiprocessing
import pickle
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Coroutine,
    Hashable,
    Iterable,
)
from concurrent.futures import ProcessPoolExecutor
from types import FunctionType, TracebackType
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, overload

import anyio

from ._errors import DispatcherClosed, QueueFull
from ._handle import JobHandle
from ._job import (
    CORO_OBJECT,
    IN_PROCESS,
    IN_THREAD,
    JOB_ON_LOOP,
    ON_LOOP,
    OPTIONED,
    JobState,
    classify,
)
from ._map import map_results
from ._options import (
    RESERVED_OPTIONS,
    JobOptions,
    check_retry,
    check_timeout,
    pop_options,
)
from ._retry import Retry
from ._stats import WINDOW, ShutdownReport, Stats, latency
from ._testing import Internals
from ._worker import Inbox, LeanQueue, Worker, running_worker, wait_through_cancellation

__all__ = ("RESERVED_OPTIONS", "Dispatcher")

logger = logging.getLogger("asyncpool")

T = TypeVar("T")
A = TypeVar("A")
T_co = TypeVar("T_co", covariant=True)
P = ParamSpec("P")

_QUEUED = JobState.QUEUED
_RUNNING = JobState.RUNNING
_SUCCEEDED = JobState.SUCCEEDED
_FAILED = JobState.FAILED
_CANCELLED = JobState.CANCELLED

_future_set_result = asyncio.Future.set_result
_future_set_exception = asyncio.Future.set_exception
_future_cancel = asyncio.Future.cancel
_CO_COROUTINE = inspect.CO_COROUTINE
_BASE_LOOP_TIME = asyncio.BaseEventLoop.time
_WINDOW_MASK = WINDOW - 1
_MIN_GRACE = 0.1  # seconds close(timeout=...) waits at least for cancelled jobs to stop
_SAMPLE_MASK = 3  # after the first WINDOW jobs, one job in four is sampled
_MAX_JOB_CLASSES = 64  # Job classes whose process() submit remembers
_NO_FN = object()  # what `_plain_fn` holds when submit's fast path is off: no target is it


class _AsyncProcess(Protocol[T_co]):
    def process(self) -> Coroutine[Any, Any, T_co]: ...


class _SyncProcess(Protocol[T_co]):
    def process(self) -> T_co: ...


class _Lifecycle:
    NEW = "not started"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


class _JoinWaiter:
    """One `join()` call: waits for the jobs numbered up to `horizon`."""

    __slots__ = ("horizon", "remaining", "future")

    def __init__(self, horizon: int, remaining: int, future: asyncio.Future[None]) -> None:
        self.horizon = horizon
        self.remaining = remaining
        self.future = future


def _close_if_coroutine(target: object) -> None:
    # A coroutine object that is refused will never run; closing it spares
    # the user a "coroutine ... was never awaited" warning on top of the error.
    # Only a fresh one: a started coroutine belongs to whoever is running it.
    if inspect.iscoroutine(target) and inspect.getcoroutinestate(target) == inspect.CORO_CREATED:
        target.close()


def _check_picklable(fn: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # A job that cannot be pickled would fail in the pool, far from the
    # caller; refuse it here instead.
    try:
        pickle.dumps((fn, args, kwargs))
    except Exception as exc:
        raise TypeError(
            f"submit() cannot send {fn!r} to a worker process (sync_in='process'): "
            f"it or its arguments cannot be pickled: {exc}. Define the function at "
            "module level, or use sync_in='thread'"
        ) from exc


def _by_id(handle: JobHandle[Any]) -> int:
    return handle.id


def _newest_held_first(worker: Worker) -> float:
    """Sort key for workers holding an unstarted job: a cancelled one first, then the newest."""
    handle = worker.inbox._queue[0]
    if handle is None or handle._job_state is not _QUEUED:
        return -math.inf
    return -handle.id


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class Dispatcher:
    """A pool of worker coroutines fed from a bounded job queue.

    Use it as an async context manager, or call `start()` and `close()`
    yourself where a framework manages lifetimes:

    ```python
    async with Dispatcher(workers=4) as dispatcher:
        handle = await dispatcher.submit(fetch, url)
        print(await handle)
    ```

    Args:
        workers: How many jobs may run at once (>= 1).
        queue_size: How many jobs may wait for a worker before `submit` waits
            for room; 0 means unbounded.
        fail_fast: If True, the first job failure cancels every other job and
            the body of `async with`, which then raises an `ExceptionGroup`
            with the failure(s): the semantics of `asyncio.TaskGroup`.
        on_error: Called as `on_error(handle, exception)` for a failure that
            nobody is waiting for when it happens (no awaiter, no done
            callback). The default logs it, with its traceback, at ERROR on
            the `"asyncpool"` logger. Ignored with `fail_fast=True`, where
            failures go to the `ExceptionGroup`.
        name: A name for `repr`, task names and log messages.
        sync_in: Where blocking jobs (sync callables, sync `process()`) run:
            `"thread"` (worker threads, the default) or `"process"` (a pool of
            `workers` processes owned by the dispatcher, for CPU-bound work;
            the job and its arguments must be picklable, which `submit`
            checks).
        timeout: The default time limit of a job's run, in seconds; a job
            that runs longer is cancelled and fails with `JobTimeout`.
            `submit(..., timeout=...)` overrides it per job (`timeout=None`
            turns it off). Waiting in the queue does not count.
        retry: The default `Retry` policy for failed jobs;
            `submit(..., retry=...)` overrides it per job (`retry=None` turns
            it off). Coroutine objects run once, so it does not apply to them.
        rate_limit: At most this many job starts per second (a float > 0),
            whatever the number of workers; None (the default) for no limit.
        rate_burst: With `rate_limit`, how many jobs may start at once after
            a quiet spell (the token bucket's size, >= 1).

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: `workers` < 1, `queue_size` < 0, `sync_in` is neither
            `"thread"` nor `"process"`, `timeout` or `rate_limit` is not > 0,
            `rate_burst` < 1, or `rate_burst` is given without `rate_limit`.
    """

    # Slots: every attribute read on the hot path is a fixed-offset load.
    __slots__ = (
        "__weakref__",
        "_abandoned",
        "_backing_off",
        "_backlog",
        "_body_cancel_requested",
        "_body_task",
        "_busy",
        "_cancelled",
        "_cancelling",
        "_dead",
        "_default_retry",
        "_default_timeout",
        "_errors",
        "_errors_raised",
        "_fail_fast",
        "_failed",
        "_fatal",
        "_group",
        "_has_defaults",
        "_idle_count",
        "_idle_inboxes",
        "_interrupted",
        "_job_classes",
        "_job_queue",
        "_join_horizon",
        "_join_waiters",
        "_keys",
        "_lifecycle",
        "_loop",
        "_loop_waiter",
        "_name",
        "_never_started",
        "_next_worker_index",
        "_now",
        "_old_pools",
        "_on_error",
        "_plain_fn",
        "_priorities_used",
        "_priority_heap",
        "_process_pool",
        "_putters",
        "_queue_size",
        "_queued",
        "_rate",
        "_rate_burst",
        "_rate_timer",
        "_rejected",
        "_reserved",
        "_retiring",
        "_retried",
        "_run_samples",
        "_runner",
        "_sample_count",
        "_shutdown_report",
        "_size",
        "_stopping",
        "_submitted",
        "_succeeded",
        "_sync_in",
        "_thread_limiter",
        "_tie",
        "_timed_out",
        "_tokens",
        "_tokens_at",
        "_unusual",
        "_wait_samples",
        "_workers",
    )

    def __init__(
        self,
        workers: int = 8,
        *,
        queue_size: int = 1024,
        fail_fast: bool = False,
        on_error: Callable[[JobHandle[Any], BaseException], object] | None = None,
        name: str | None = None,
        sync_in: Literal["thread", "process"] = "thread",
        timeout: float | None = None,
        retry: Retry | None = None,
        rate_limit: float | None = None,
        rate_burst: int | None = None,
    ) -> None:
        self._size = _check_int("workers", workers, 1)
        self._queue_size = _check_int("queue_size", queue_size, 0)
        if not isinstance(fail_fast, bool):
            raise TypeError(f"fail_fast must be a bool, got {fail_fast!r}")
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be callable or None, got {on_error!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        if sync_in not in ("thread", "process"):
            raise ValueError(f"sync_in must be 'thread' or 'process', got {sync_in!r}")
        self._sync_in = sync_in
        self._default_timeout = check_timeout(timeout)
        self._default_retry = check_retry(retry)
        # Options on every job when a default is set: submit's fast path is off.
        self._has_defaults = timeout is not None or retry is not None
        if rate_limit is not None:
            if isinstance(rate_limit, bool) or not isinstance(rate_limit, (int, float)):
                raise TypeError(
                    f"rate_limit must be a number of starts per second, got {rate_limit!r}"
                )
            if not (rate_limit > 0 and math.isfinite(rate_limit)):
                raise ValueError(f"rate_limit must be > 0 starts per second, got {rate_limit}")
        if rate_burst is not None:
            _check_int("rate_burst", rate_burst, 1)
            if rate_limit is None:
                raise ValueError("rate_burst needs rate_limit (the burst of a rate limit)")
        self._rate: float | None = None if rate_limit is None else float(rate_limit)
        self._rate_burst = 1 if rate_burst is None else rate_burst
        self._tokens = float(self._rate_burst)
        self._tokens_at = 0.0
        self._rate_timer: asyncio.TimerHandle | None = None
        self._process_pool: ProcessPoolExecutor | None = None
        self._fail_fast = fail_fast
        self._on_error = on_error
        self._name = name

        self._lifecycle = _Lifecycle.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._workers: list[Worker] = []
        self._group: asyncio.TaskGroup | None = None
        self._next_worker_index = 0
        self._retiring = 0  # busy workers that leave when their job ends (resize)
        self._old_pools: list[ProcessPoolExecutor] = []  # replaced by resize()
        self._idle_inboxes: LeanQueue[Inbox] = LeanQueue()
        self._idle_count = 0  # its qsize(), kept here: the hot path reads it per job
        # The dispatcher loop's wake-up: set while the loop sleeps, taken by whoever wakes it.
        self._loop_waiter: asyncio.Future[None] | None = None
        self._thread_limiter: anyio.CapacityLimiter | None = None
        self._now: Callable[[], float] = time.monotonic
        # The last plain coroutine function submitted without options while
        # running: submitting it again skips classify() (one identity test).
        self._plain_fn: object = _NO_FN
        # The same for Job objects: Job classes whose process() is an async
        # method, with that method's function.
        self._job_classes: dict[type, FunctionType] = {}

        # The job queue. Cancelled jobs are left in it and skipped by _route
        # ("dead" entries) so that cancelling is O(1); `_backlog` counts the
        # live ones, and the bound applies to it.
        self._job_queue: deque[JobHandle[Any]] = deque()
        # Jobs with a priority other than 0 wait in a heap of
        # (-priority, seq, handle); priority-0 jobs in the deque, which a
        # positive priority goes before and a negative one after.
        # Entries are (-priority, order, tie, handle): `order` is the job's
        # id, or for a retry the last id given out (the back of its
        # priority); the deque holds fresh priority-0 jobs in id order, so
        # a heap entry of priority 0 goes first if its order is smaller
        # than the id at the head of the deque.
        self._priority_heap: list[tuple[int, int, int, JobHandle[Any]]] = []
        self._tie = itertools.count()
        # key -> jobs of that key parked until the running one ends. A key
        # is present while a job of it holds it; it goes when the key idles.
        self._keys: dict[Hashable, deque[JobHandle[Any]]] = {}
        self._backing_off: set[JobHandle[Any]] = set()  # waiting to be retried
        self._backlog = 0
        self._dead = 0
        self._putters: deque[asyncio.Future[None]] = deque()
        self._reserved = 0  # places promised to woken submitters not yet back

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

        self._join_waiters: list[_JoinWaiter] = []
        self._join_horizon = 0  # the largest horizon of any waiter; 0 = none

        self._cancelling = False  # every job must end now; none may start
        self._fatal = False  # a job raised KeyboardInterrupt or SystemExit
        self._stopping = False  # workers must exit when they next go idle
        self._priorities_used = False  # a job with a priority was ever queued
        self._unusual = False
        self._refresh_unusual()
        self._errors: list[BaseException] = []  # fail_fast failures
        self._errors_raised = False
        self._never_started: list[JobHandle[Any]] = []  # cancelled by a shutdown
        self._interrupted: list[JobHandle[Any]] = []
        self._abandoned: list[JobHandle[Any]] = []  # still running when close() gave up
        self._shutdown_report: ShutdownReport | None = None
        self._body_task: asyncio.Task[Any] | None = None
        self._body_cancel_requested = False

    # ----------------------------------------------------------------- info

    @property
    def name(self) -> str | None:
        """The name given to the constructor."""
        return self._name

    @property
    def workers(self) -> int:
        """The size of the pool: how many jobs may run at once (see `resize`)."""
        return self._size

    @property
    def queue_size(self) -> int:
        """How many jobs may wait for a worker; 0 means unbounded."""
        return self._queue_size

    @property
    def running(self) -> bool:
        """True while the dispatcher accepts jobs."""
        return self._lifecycle is _Lifecycle.RUNNING

    @property
    def closed(self) -> bool:
        """True once `close()` has finished (or the dispatcher was torn down)."""
        return self._lifecycle is _Lifecycle.CLOSED

    def stats(self) -> Stats:
        """Take a consistent snapshot of the counters.

        It holds `submitted == queued + busy + succeeded + failed + cancelled`.
        """
        return Stats(
            workers=self._size,
            # After a shrink, workers that are leaving may still be busy.
            idle=max(0, self._size - self._busy),
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

    def _internals(self) -> Internals:
        """The snapshot behind `asyncpool._testing.internals` (for tests only)."""
        return Internals(
            runner=self._runner,
            worker_tasks=tuple(w.task for w in self._workers),
            idle_workers=self._idle_count,
            retiring=self._retiring,
            queue_entries=len(self._job_queue) + len(self._priority_heap),
            dead_entries=self._dead,
            backlog=self._backlog,
            waiting_submitters=len(self._putters),
            reserved_places=self._reserved,
            held_keys=len(self._keys),
            remembered_job_classes=len(self._job_classes),
            rate_timer_pending=self._rate_timer is not None,
            thread_limit=None if self._thread_limiter is None else self._thread_limiter.total_tokens,
        )

    def __repr__(self) -> str:
        name = f" {self._name!r}" if self._name else ""
        return (
            f"<Dispatcher{name} {self._lifecycle} workers={self._size} "
            f"busy={self._busy} queued={self._queued}>"
        )

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Dispatcher:
        await self.start()
        self._body_task = asyncio.current_task()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fail_fast:
            await self._exit_fail_fast(exc_type, exc)
            return
        if exc is None:
            try:
                await self.join()
            except asyncio.CancelledError:
                await self._close(cancel=True)
                raise
            await self._close(cancel=False)
        else:
            # The body failed or was cancelled: nothing it queued should go
            # on running without it. Its exception propagates unchanged.
            await self._close(cancel=True)

    async def start(self) -> None:
        """Start the workers and the dispatcher loop.

        `async with` calls it for you. When it returns the dispatcher accepts
        jobs.

        Raises:
            RuntimeError: the dispatcher is already running.
            DispatcherClosed: the dispatcher has already run; a dispatcher
                runs once, so make a new one.
        """
        if self._lifecycle is not _Lifecycle.NEW:
            if self._lifecycle is _Lifecycle.RUNNING:
                raise RuntimeError(f"{self!r} is already running")
            raise DispatcherClosed(
                f"{self._label()} is {self._lifecycle}; a dispatcher runs once: make a new one"
            )
        loop = asyncio.get_running_loop()
        self._loop = loop
        # The default loop's time() is time.monotonic() behind a Python call;
        # call it directly on the hot path. Other loops keep their own clock.
        self._now = time.monotonic if type(loop).time is _BASE_LOOP_TIME else loop.time
        self._thread_limiter = anyio.CapacityLimiter(self._size)
        if self._sync_in == "process":
            self._process_pool = self._new_process_pool()
        self._workers = [Worker(self, i) for i in range(self._size)]
        self._next_worker_index = self._size
        self._tokens_at = loop.time()
        ready: asyncio.Future[None] = loop.create_future()
        self._lifecycle = _Lifecycle.RUNNING
        self._runner = loop.create_task(self._run(ready), name=f"{self._label()} runner")
        try:
            await ready
        except asyncio.CancelledError:
            self._runner.cancel()
            raise

    async def _run(self, ready: asyncio.Future[None]) -> None:
        # The runner task hosts the TaskGroup, so that start() and close()
        # may be called from different tasks (frameworks do that).
        label = self._label()
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for worker in self._workers:
                    group.create_task(worker.run(), name=f"{label} worker {worker.index}")
                group.create_task(self._dispatch_loop(), name=f"{label} loop")
                if not ready.done():  # start() may have been cancelled meanwhile
                    ready.set_result(None)
        except (KeyboardInterrupt, SystemExit):
            # A job raised it in a worker, and the worker's task has already
            # sent it out of the event loop (asyncio tasks re-raise these two).
            # The group re-raises it here; raising it a second time would only
            # escape the loop again, in the middle of the application's own
            # shutdown.
            pass
        finally:
            self._group = None
            if not ready.done():
                ready.cancel()
            self._tear_down()
            for pool in (*self._old_pools, self._process_pool):
                if pool is not None:
                    # Every job is final, so the processes are idle: wait for
                    # them to exit, so that none outlives the dispatcher.
                    await anyio.to_thread.run_sync(pool.shutdown)

    def _tear_down(self) -> None:
        # Whatever way the runner ended, every handle ends final and nobody
        # is left waiting on the dispatcher.
        self._cancelling = True
        self._stopping = True
        self._refresh_unusual()
        self._cancel_queued_jobs()
        # Workers that were cancelled while idle left their inboxes
        # registered; a job routed there since must still end final.
        while self._idle_count:
            self._idle_count -= 1
            self._idle_inboxes.get_nowait()
        for worker in self._workers:
            worker._release_inbox()
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None
        self._leave_running(_Lifecycle.CLOSED)
        self._wake_putters(everyone=True)

    async def join(self) -> None:
        """Wait until every job submitted so far has finished.

        Finished means succeeded, failed or cancelled. Jobs submitted while
        waiting are not waited for. The dispatcher keeps running.
        """
        self._refuse_from_own_job("join")
        if self._submitted == self._succeeded + self._failed + self._cancelled:
            return
        loop = asyncio.get_running_loop()
        waiter = _JoinWaiter(
            horizon=self._submitted,
            remaining=self._queued + self._busy,
            future=loop.create_future(),
        )
        self._join_waiters.append(waiter)
        self._join_horizon = max(self._join_horizon, waiter.horizon)
        try:
            await waiter.future
        finally:
            self._join_waiters.remove(waiter)
            self._join_horizon = max((w.horizon for w in self._join_waiters), default=0)

    async def close(self, *, cancel: bool = False, timeout: float | None = None) -> ShutdownReport:
        """Stop accepting jobs, finish or cancel the rest, and stop the workers.

        Args:
            cancel: If True, cancel queued and running jobs at once. If False,
                let them finish.
            timeout: With `cancel=False`, how many seconds to let them finish
                before cancelling what is left; None waits as long as it takes.

        When it returns, every handle is in a final state and no task of the
        dispatcher is running. Calling it again, or on a dispatcher that never
        started, is harmless. If the caller is cancelled while waiting, the
        remaining jobs are cancelled, their tasks are waited for, and the
        cancellation propagates.

        Cancelling a job is a request, as with tasks. Without `timeout`, a
        job that catches every `CancelledError` and keeps going, or a blocking
        job whose thread or process does not return, keeps `close()` waiting.
        With `timeout`, `close()` gives the cancelled jobs a grace of
        `timeout` again (at least 0.1 s), cancelling them a second time
        half-way; jobs still running then are *abandoned*: their handles end
        CANCELLED, the report lists them in `abandoned`, an ERROR is logged,
        and `close()` returns while they run on (their worker ends when they
        do). So `close(timeout=t)` returns within about `2 * t`.

        Returns:
            A `ShutdownReport` of the jobs the shutdown cancelled (empty if
            everything finished), also kept as `shutdown_report`.

        Raises:
            ExceptionGroup: with `fail_fast=True`, the job failures that
                stopped the dispatcher (raised once, by the first close; a
                `BaseExceptionGroup` if a failure is not an `Exception`).
            TypeError: `timeout` is not a number.
            ValueError: `timeout` is negative.
        """
        timeout = check_timeout(timeout, zero_ok=True)
        if not isinstance(cancel, bool):
            raise TypeError(f"cancel must be a bool, got {cancel!r}")
        self._refuse_from_own_job("close")
        report = await self._close(cancel=cancel, timeout=timeout)
        if self._errors and not self._errors_raised:
            self._errors_raised = True
            raise BaseExceptionGroup(f"{self._label()} stopped on job failure", self._errors)
        return report

    async def _close(self, *, cancel: bool, timeout: float | None = None) -> ShutdownReport:
        if self._abandoned:
            # An earlier close() gave up on a job that does not stop; waiting
            # for the runner now would wait for that job after all.
            return self._shutdown_report or self._make_report()
        if self._lifecycle is _Lifecycle.NEW:
            self._lifecycle = _Lifecycle.CLOSED
        if self._runner is None:
            return self._make_report()
        self._stop_accepting()
        runner = self._runner
        assert runner is not None
        try:
            if cancel:
                self._cancel_all()
            elif timeout is None:
                await self.join()
            else:
                try:
                    async with asyncio.timeout(timeout):
                        await self.join()
                except TimeoutError:
                    self._cancel_all()
            self._stop_workers()
            if timeout is not None and not await self._wait_or_abandon(runner, timeout):
                return self._make_report()
            await asyncio.wait((runner,))  # unlike awaiting it, never cancels it
            failure = None if runner.cancelled() else runner.exception()
            if failure is not None:
                raise failure  # a bug of ours: never hide it
            return self._make_report()
        except asyncio.CancelledError:
            # Like TaskGroup's exit: a cancelled caller still does not leave
            # before the dispatcher's tasks are gone; the jobs are cancelled
            # so that this is quick, then the cancellation propagates.
            self._cancel_all()
            self._stop_workers()
            await wait_through_cancellation(runner)
            self._make_report()  # for shutdown_report: the caller gets the cancellation
            raise

    async def _wait_or_abandon(self, runner: asyncio.Task[None], timeout: float) -> bool:
        """close(timeout=...): give cancelled jobs a grace to stop; give up on the stuck ones.

        The grace is `timeout` again (at least `_MIN_GRACE`). Half-way, jobs
        still running are cancelled once more (a job that swallowed its first
        cancellation usually stops at the second). Jobs running after that
        are abandoned: their handles end CANCELLED, the report lists them,
        an ERROR is logged, and close() returns while they run on.

        Returns:
            True if the dispatcher's tasks ended; False if jobs were abandoned.
        """
        grace = max(timeout, _MIN_GRACE)
        done, _ = await asyncio.wait((runner,), timeout=grace / 2)
        if done:
            return True
        for worker in self._workers:
            if worker.current is not None and worker.task is not None:
                worker.task.cancel()
        done, _ = await asyncio.wait((runner,), timeout=grace / 2)
        stuck = [w.current for w in self._workers if w.current is not None]
        if done or not stuck:
            return True  # only the teardown is left to wait for
        for handle in stuck:
            if not handle.done():
                self._abandon(handle)
        logger.error(
            "%s: close(timeout=%g) gave up on %d job(s) that did not stop when cancelled "
            "(they run on, unowned): %s",
            self._label(),
            timeout,
            len(self._abandoned),
            ", ".join(repr(h) for h in self._abandoned),
        )
        self._leave_running(_Lifecycle.CLOSED)
        self._wake_putters(everyone=True)
        return False

    def _abandon(self, handle: JobHandle[Any]) -> None:
        """close() stops waiting for a running job that ignores cancellation."""
        self._abandoned.append(handle)
        if handle not in self._interrupted:  # the user had cancelled it already
            self._interrupted.append(handle)
        self._finish_cancelled(handle, "abandoned by close(): the job did not stop when cancelled")

    def _abandoned_job_ended(self, handle: JobHandle[Any], error: BaseException | None) -> None:
        """A job that close() gave up on has ended at last: say how, since nobody can await it."""
        if error is None or isinstance(error, asyncio.CancelledError):
            logger.warning("%s: abandoned job %r has stopped", self._label(), handle)
        else:
            logger.error(
                "%s: abandoned job %r has stopped with an error",
                self._label(),
                handle,
                exc_info=error,
            )

    def _workers_cancelled(self) -> bool:
        """True if the workers' task group is cancelling them (the runner is
        cancelled, or a job raised KeyboardInterrupt or SystemExit)."""
        runner = self._runner
        return runner is not None and (runner.cancelling() > 0 or self._fatal)

    def _refuse_from_own_job(self, method: str) -> None:
        # A job waiting for its own dispatcher to finish every job (itself
        # included) would wait for ever: say so instead of hanging.
        current = asyncio.current_task()
        if current is not None and any(w.task is current for w in self._workers):
            raise RuntimeError(
                f"{method}() called from a job of {self._label()}: it would wait for that "
                f"job itself, for ever; call {method}() from outside the dispatcher's jobs"
            )

    def _make_report(self) -> ShutdownReport:
        report = ShutdownReport(
            never_started=tuple(sorted(self._never_started, key=_by_id)),
            # A job that swallowed its cancellation and finished was not interrupted.
            interrupted=tuple(sorted((h for h in self._interrupted if h.cancelled()), key=_by_id)),
            abandoned=tuple(sorted(self._abandoned, key=_by_id)),
        )
        self._shutdown_report = report
        return report

    @property
    def shutdown_report(self) -> ShutdownReport | None:
        """The `ShutdownReport` of the last `close()` (or `async with` exit); None before."""
        return self._shutdown_report

    def resize(self, workers: int) -> None:
        """Change the number of workers while the dispatcher runs.

        Growing starts the new workers at once; they take queued jobs right
        away (which makes room for waiting submitters). Shrinking stops idle
        workers first, then busy ones as they finish their current job: a
        running job is never cancelled, so for a while more jobs than
        `workers` may still be running, but no new one starts until fewer
        than `workers` run. `stats().workers` is the new size at once.

        Raises:
            TypeError: `workers` is not an int.
            ValueError: `workers` < 1.
            DispatcherClosed: the dispatcher is not running.
        """
        size = _check_int("workers", workers, 1)
        if self._lifecycle is not _Lifecycle.RUNNING or self._group is None:
            raise DispatcherClosed(f"cannot resize: {self._label()} is {self._lifecycle}")
        old = self._size
        self._size = size
        assert self._thread_limiter is not None
        self._thread_limiter.total_tokens = size
        if size > old:
            # Workers on their way out stay instead: starting new ones next to
            # them would run more jobs at once than `size`.
            kept = min(self._retiring, size - old)
            self._retiring -= kept
            self._refresh_unusual()
            label = self._label()
            for _ in range(size - old - kept):
                worker = Worker(self, self._next_worker_index)
                self._next_worker_index += 1
                self._workers.append(worker)
                self._group.create_task(worker.run(), name=f"{label} worker {worker.index}")
            if self._process_pool is not None:
                # A process pool cannot grow: jobs already sent to the old one
                # finish there; it is shut down with the dispatcher.
                self._old_pools.append(self._process_pool)
                self._process_pool.shutdown(wait=False)
                self._process_pool = self._new_process_pool()
        elif size < old:
            leaving = old - size
            idle = self._idle_inboxes
            while leaving and self._idle_count:  # the longest idle first
                self._idle_count -= 1
                self._retire(idle.get_nowait())
                leaving -= 1
            # Next, workers that were handed a job they have not started yet:
            # starting it would exceed the new size, so it goes back to the
            # front of the queue and the worker leaves. The workers holding
            # the newest jobs leave, so that no job starts before an older one.
            holders = [w for w in self._workers if w.current is None and not w.inbox.empty()]
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
            self._retiring += leaving
            self._refresh_unusual()

    def _put_back(self, handle: JobHandle[Any]) -> None:
        """Return a job handed to a worker that will not start it to the front of the queue."""
        handle._handed_over = False
        self._backlog += 1
        if self._rate is not None:
            # The token _route took for it was not used for a start.
            self._tokens = min(float(self._rate_burst), self._tokens + 1)
        if handle._how >= OPTIONED:
            self._heap_push(handle, handle._opts)  # at its old place, kept in `order`
        else:
            self._job_queue.appendleft(handle)  # it was the head: the deque stays in id order

    def _retire(self, inbox: Inbox) -> None:
        """Tell the worker that owns `inbox` to stop, and forget it."""
        for worker in self._workers:
            if worker.inbox is inbox:
                self._workers.remove(worker)
                break
        inbox.put_nowait(None)

    async def _exit_fail_fast(
        self, exc_type: type[BaseException] | None, exc: BaseException | None
    ) -> None:
        # Mirrors asyncio.TaskGroup.__aexit__.
        propagate_cancel: BaseException | None = None
        if exc_type is not None:
            if exc_type is asyncio.CancelledError:
                propagate_cancel = exc
            # The body is over, so only the jobs are left to cancel (cancelling
            # the body's task now would hit its caller's next await instead).
            self._stop_accepting()
            self._cancel_all()
        while True:
            try:
                await self._close(cancel=False)
                break
            except asyncio.CancelledError as cancelled:
                propagate_cancel = cancelled
                self._abort()
        if self._body_cancel_requested:
            self._body_cancel_requested = False
            assert self._body_task is not None
            if self._body_task.uncancel() == 0:
                propagate_cancel = None
        # Failures that close() already raised (a framework closed the
        # dispatcher from another task) are not raised a second time.
        errors = [] if self._errors_raised else list(self._errors)
        for error in errors:
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise error
        if propagate_cancel is not None and not errors:
            raise propagate_cancel
        if exc is not None and exc_type is not asyncio.CancelledError:
            errors.append(exc)
        if errors:
            self._errors_raised = True
            raise BaseExceptionGroup(f"unhandled errors in {self._label()}", errors) from None

    def _abort(self) -> None:
        """fail_fast: stop accepting, cancel every job, and cancel the body."""
        self._stop_accepting()
        self._cancel_all()
        body = self._body_task
        if body is not None and not body.done() and not self._body_cancel_requested:
            self._body_cancel_requested = True
            body.cancel()

    def _stop_accepting(self) -> None:
        if self._lifecycle is _Lifecycle.RUNNING:
            self._leave_running(_Lifecycle.CLOSING)
            self._wake_putters(everyone=True)

    def _leave_running(self, state: str) -> None:
        """Enter a state after RUNNING; submit's fast paths, which skip the
        lifecycle check, stop matching, so the next submit is refused."""
        self._lifecycle = state
        self._plain_fn = _NO_FN
        self._job_classes = {}

    def _cancel_all(self) -> None:
        self._cancelling = True
        self._cancel_queued_jobs()
        for worker in self._workers:
            handle = worker.current
            if handle is not None and not handle._cancel_requested:
                self._interrupted.append(handle)
                handle.cancel()

    def _cancel_queued_jobs(self) -> None:
        # Parked jobs first, and the key table with them: ending a key's
        # running job must not un-park the next one into a queue being emptied.
        parked = [handle for waiters in self._keys.values() for handle in waiters]
        self._keys.clear()
        for handle in parked:
            handle._opts.parked = False
            self._backlog -= 1
        jobs = self._job_queue
        heap = self._priority_heap
        while jobs or heap:
            handle = jobs.popleft() if jobs else heapq.heappop(heap)[3]
            if handle._job_state is _QUEUED:
                self._backlog -= 1
                self._cancel_unstarted(handle)
        self._dead = 0
        for handle in parked:
            self._cancel_unstarted(handle)
        while self._backing_off:
            handle = next(iter(self._backing_off))
            self._end_backoff(handle)
            self._cancel_unstarted(handle)

    def _cancel_unstarted(self, handle: JobHandle[Any]) -> None:
        """A shutdown cancels a job that is not running; the report lists it."""
        # A job between two tries (waiting out a backoff, or queued again)
        # has run: it was interrupted, not never started.
        (self._interrupted if handle.attempts else self._never_started).append(handle)
        self._finish_cancelled(handle, None)

    def _stop_workers(self) -> None:
        self._stopping = True
        self._refresh_unusual()
        idle = self._idle_inboxes
        while self._idle_count:
            self._idle_count -= 1
            idle.get_nowait().put_nowait(None)
        self._wake_loop()

    # ----------------------------------------------------------- submitting

    @overload
    async def submit(
        self,
        job: _AsyncProcess[T],
        /,
        *,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
    ) -> JobHandle[T]: ...
    @overload
    async def submit(
        self,
        job: _SyncProcess[T],
        /,
        *,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
    ) -> JobHandle[T]: ...
    @overload
    async def submit(
        self,
        job: Coroutine[Any, Any, T],
        /,
        *,
        timeout: float | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
    ) -> JobHandle[T]: ...
    @overload
    async def submit(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> JobHandle[T]: ...
    @overload
    async def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> JobHandle[T]: ...
    # With per-job options. A ParamSpec cannot have keywords of its own next
    # to P.kwargs, so these check the result type but not the job's
    # arguments; each requires one option, so that a call without options
    # never falls through to them.
    @overload
    async def submit(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        /,
        *args: Any,
        timeout: float | None,
        retry: Retry | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    @overload
    async def submit(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        /,
        *args: Any,
        retry: Retry | None,
        timeout: float | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    @overload
    async def submit(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        /,
        *args: Any,
        priority: int,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        key: Hashable | None = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    @overload
    async def submit(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        /,
        *args: Any,
        key: Hashable | None,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        priority: int = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    @overload
    async def submit(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        timeout: float | None,
        retry: Retry | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    @overload
    async def submit(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        retry: Retry | None,
        timeout: float | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    @overload
    async def submit(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        priority: int,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        key: Hashable | None = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    @overload
    async def submit(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        key: Hashable | None,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        priority: int = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    async def submit(self, target: Any, /, *args: Any, **kwargs: Any) -> JobHandle[Any]:
        """Queue a job and return its handle, waiting for room if the queue is full.

        Accepted forms:

        * a `Job`: an object with a `process()` method, async or sync (a
          function or method is called, even if it has an attribute named
          `process`). `submit` looks `process` up to decide where it runs,
          and an async one may be looked up again when the job starts, so
          do not replace a Job's `process` after submitting it;
        * a coroutine function and its arguments: `submit(fetch, url, retries=3)`;
        * a sync callable and its arguments: it runs in a worker thread;
        * a coroutine object: `submit(fetch(url))`. It runs once.

        Keyword arguments go to the job, except the names reserved for
        per-job options (`timeout`, `retry`, `priority`, `key`). To pass a
        job's own argument with one of those names, bind it first with
        `functools.partial(fn, key=...)`, or submit a `Job` object.

        Arguments are not checked against the function's signature (that
        would cost more than the rest of `submit`): a call that does not fit
        fails the job with the `TypeError` the call raises.

        Raises:
            TypeError: `target` is none of the accepted forms (raised here,
                never inside a worker).
            DispatcherClosed: the dispatcher is not running (not started,
                closing or closed), including when it closes while waiting.
        """
        if target is self._plain_fn and not kwargs:
            how, fn, opts = ON_LOOP, target, None  # the same coroutine function as last time
        else:
            how, fn, opts = self._prepare(target, args, kwargs)
        size = self._queue_size
        # _has_room(), inlined: this runs for every job.
        if (
            size
            and (self._putters or self._backlog + self._reserved >= size)
            # A job of this dispatcher (or a task it started, while the job
            # runs) never waits for room: if every worker runs such a job,
            # nobody would make room.
            and not self._submitted_by_own_job()
        ):
            try:
                await self._wait_for_room()
            except BaseException:
                _close_if_coroutine(fn)
                raise
        return self._enqueue(how, fn, args, kwargs, opts)

    @overload
    def submit_nowait(
        self,
        job: _AsyncProcess[T],
        /,
        *,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
    ) -> JobHandle[T]: ...
    @overload
    def submit_nowait(
        self,
        job: _SyncProcess[T],
        /,
        *,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
    ) -> JobHandle[T]: ...
    @overload
    def submit_nowait(
        self,
        job: Coroutine[Any, Any, T],
        /,
        *,
        timeout: float | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
    ) -> JobHandle[T]: ...
    @overload
    def submit_nowait(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> JobHandle[T]: ...
    @overload
    def submit_nowait(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> JobHandle[T]: ...
    # With per-job options. A ParamSpec cannot have keywords of its own next
    # to P.kwargs, so these check the result type but not the job's
    # arguments; each requires one option, so that a call without options
    # never falls through to them.
    @overload
    def submit_nowait(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        /,
        *args: Any,
        timeout: float | None,
        retry: Retry | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    @overload
    def submit_nowait(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        /,
        *args: Any,
        retry: Retry | None,
        timeout: float | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    @overload
    def submit_nowait(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        /,
        *args: Any,
        priority: int,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        key: Hashable | None = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    @overload
    def submit_nowait(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        /,
        *args: Any,
        key: Hashable | None,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        priority: int = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    @overload
    def submit_nowait(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        timeout: float | None,
        retry: Retry | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    @overload
    def submit_nowait(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        retry: Retry | None,
        timeout: float | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    @overload
    def submit_nowait(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        priority: int,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        key: Hashable | None = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    @overload
    def submit_nowait(  # type: ignore[overload-cannot-match]
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        key: Hashable | None,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        priority: int = ...,
        **kwargs: Any,
    ) -> JobHandle[T]: ...
    def submit_nowait(self, target: Any, /, *args: Any, **kwargs: Any) -> JobHandle[Any]:
        """Queue a job without waiting; like `submit`, but a full queue is an error.

        Raises:
            QueueFull: the job queue has no room.
            TypeError: as for `submit`.
            DispatcherClosed: as for `submit`.
        """
        if target is self._plain_fn and not kwargs:
            how, fn, opts = ON_LOOP, target, None  # the same coroutine function as last time
        else:
            how, fn, opts = self._prepare(target, args, kwargs)
        if not self._has_room():
            _close_if_coroutine(fn)
            self._rejected += 1
            raise QueueFull(
                f"the job queue of {self._label()} is full "
                f"(queue_size={self._queue_size}, all places taken or promised)"
            )
        return self._enqueue(how, fn, args, kwargs, opts)

    def _prepare(
        self, target: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[int, Any, JobOptions | None]:
        known = self._job_classes.get(type(target))
        if known is not None and not args and not kwargs:
            # A Job of a class seen before: if its process() is still the
            # class's async method, it runs on the loop like last time.
            process = getattr(target, "process", None)  # an instance may lack it
            if getattr(process, "__func__", None) is known:
                return JOB_ON_LOOP, target, None  # the Job, not `process`: no bound method kept
        if (
            type(target) is FunctionType
            and target.__code__.co_flags & _CO_COROUTINE
            and not kwargs
            and self._lifecycle is _Lifecycle.RUNNING
            and not self._has_defaults
        ):
            # The common case, decided without classify(); remembered, so
            # that the next submit of the same function skips even this.
            self._plain_fn = target
            return ON_LOOP, target, None
        try:
            opts = None
            if self._has_defaults or not RESERVED_OPTIONS.isdisjoint(kwargs):
                retry_given = kwargs.get("retry") is not None
                opts = pop_options(kwargs, self._default_timeout, self._default_retry)
            how, fn = classify(target, args, kwargs)
            if how == IN_THREAD and self._sync_in == "process":
                how = IN_PROCESS
                _check_picklable(fn, args, kwargs)
            if opts is not None:
                if how == CORO_OBJECT and opts.retry is not None:
                    if retry_given:
                        raise TypeError(
                            "submit() got a coroutine object with retry=: a coroutine "
                            "object runs once; submit the coroutine function and its "
                            "arguments to retry it"
                        )
                    opts.retry = None  # the dispatcher's default cannot apply
                how += OPTIONED
            if self._lifecycle is not _Lifecycle.RUNNING:
                raise self._closed_error()
        except BaseException:
            _close_if_coroutine(target)
            raise
        if how == ON_LOOP and opts is None and fn is not target and not self._has_defaults:
            self._remember_job_class(target, fn)
        return how, fn, opts

    def _remember_job_class(self, job: object, process: Any) -> None:
        """A Job whose `process` is an async method: later Jobs of its class skip classify()."""
        func = getattr(process, "__func__", None)
        if (
            getattr(process, "__self__", None) is job
            and type(func) is FunctionType
            and func.__code__.co_flags & _CO_COROUTINE
        ):
            if len(self._job_classes) >= _MAX_JOB_CLASSES:
                self._job_classes.clear()  # classes made on the fly: keep the table small
            self._job_classes[type(job)] = func

    def _closed_error(self) -> DispatcherClosed:
        state = self._lifecycle
        if state is _Lifecycle.NEW:
            hint = ": use 'async with Dispatcher(...)' or 'await dispatcher.start()' first"
        elif self._errors:
            hint = ": a job failed and fail_fast=True stopped it"
        else:
            hint = ""
        return DispatcherClosed(f"cannot submit: {self._label()} is {state}{hint}")

    def _submitted_by_own_job(self) -> bool:
        worker = running_worker.get()
        return worker is not None and worker.dispatcher is self and worker.current is not None

    async def _wait_for_room(self) -> None:
        """Wait, first come first served, until a place in the job queue is ours.

        A woken submitter has a place reserved for it (`_reserved`), so no
        later `submit` or `submit_nowait` can take it first.
        """
        putter = asyncio.get_running_loop().create_future()
        self._putters.append(putter)
        try:
            await putter
        except BaseException:
            if putter.done() and not putter.cancelled():
                # Woken, then cancelled before taking the place: pass it on.
                self._reserved -= 1
                self._wake_putters()
            else:
                # Cancelled while waiting; _wake_putters may have dropped it already.
                with contextlib.suppress(ValueError):
                    self._putters.remove(putter)
            raise
        self._reserved -= 1
        if self._lifecycle is not _Lifecycle.RUNNING:
            raise self._closed_error()

    def _has_room(self) -> bool:
        """True if a new job may be queued now without jumping a waiting submitter."""
        return not self._queue_size or (
            not self._putters and self._backlog + self._reserved < self._queue_size
        )

    def _wake_putters(self, *, everyone: bool = False) -> None:
        putters = self._putters
        room = len(putters) if everyone else self._queue_size - self._backlog - self._reserved
        while putters and room > 0:
            putter = putters.popleft()
            if putter.done():
                continue  # its submitter was cancelled and has not run yet
            putter.set_result(None)
            self._reserved += 1
            room -= 1

    def _enqueue(
        self,
        how: int,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        opts: JobOptions | None,
    ) -> JobHandle[Any]:
        loop = self._loop
        assert loop is not None
        handle: JobHandle[Any] = JobHandle(loop=loop)
        handle._dispatcher = self
        handle._job_state = _QUEUED
        handle._how = how
        handle._fn = fn
        handle._args = args
        handle._kwargs = kwargs or None  # an empty dict is not kept alive per job
        # Slots a queued job does not need yet stay unset; JobHandle reads
        # them with defaults. Fewer stores here is measurably faster.
        self._submitted += 1
        handle.id = self._submitted
        now = self._now  # a local: a method-style call of an attribute is slow
        handle._queued_at = now()
        self._queued += 1
        self._backlog += 1
        if opts is None:
            self._job_queue.append(handle)
        else:
            handle._opts = opts
            handle._attempts = 0
            opts.order = handle.id
            if opts.key is not None and not self._claim_key(handle, opts):
                return handle  # parked behind an earlier job of its key
            self._push(handle, opts)
        if self._idle_count:
            # A worker is idle: hand the job over now (one event-loop turn to
            # its start), not through a wake-up of the dispatcher loop (two).
            self._route()
        return handle

    def _push(self, handle: JobHandle[Any], opts: JobOptions) -> None:
        """Queue a newly submitted job with options at the back of its priority."""
        if opts.priority:
            self._heap_push(handle, opts)
        else:
            self._job_queue.append(handle)

    def _heap_push(self, handle: JobHandle[Any], opts: JobOptions) -> None:
        """Queue a job in the priority heap, at the place `opts.order` gives it."""
        if not self._priorities_used:
            # From now on _next_job_for must look at the heap too.
            self._priorities_used = self._unusual = True
        entry = (-opts.priority, opts.order, next(self._tie), handle)
        heapq.heappush(self._priority_heap, entry)

    def _claim_key(self, handle: JobHandle[Any], opts: JobOptions) -> bool:
        """Give a new keyed job its key if the key is free; else park it behind the key's jobs.

        Deciding at submission keeps the order of a key's jobs the order they
        were submitted in, whatever their priorities: a job enters the job
        queue only when every earlier job of its key is final.
        """
        parked = self._keys.get(opts.key)
        if parked is None:
            self._keys[opts.key] = deque()
            opts.holds_key = True
            return True
        parked.append(handle)
        opts.parked = True
        return False

    # ------------------------------------------------------------ streaming

    @overload
    def map(
        self,
        fn: Callable[[A], Coroutine[Any, Any, T]],
        iterable: Iterable[A] | AsyncIterable[A],
        /,
        *,
        ordered: bool = ...,
        window: int | None = ...,
        return_exceptions: Literal[False] = ...,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
    ) -> AsyncGenerator[T, None]: ...
    @overload
    def map(
        self,
        fn: Callable[[A], Coroutine[Any, Any, T]],
        iterable: Iterable[A] | AsyncIterable[A],
        /,
        *,
        ordered: bool = ...,
        window: int | None = ...,
        return_exceptions: Literal[True],
        timeout: float | None = ...,
        retry: Retry | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
    ) -> AsyncGenerator[T | BaseException, None]: ...
    @overload
    def map(
        self,
        fn: Callable[[A], T],
        iterable: Iterable[A] | AsyncIterable[A],
        /,
        *,
        ordered: bool = ...,
        window: int | None = ...,
        return_exceptions: Literal[False] = ...,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
    ) -> AsyncGenerator[T, None]: ...
    @overload
    def map(
        self,
        fn: Callable[[A], T],
        iterable: Iterable[A] | AsyncIterable[A],
        /,
        *,
        ordered: bool = ...,
        window: int | None = ...,
        return_exceptions: Literal[True],
        timeout: float | None = ...,
        retry: Retry | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
    ) -> AsyncGenerator[T | BaseException, None]: ...
    @overload
    def map(
        self,
        fn: Callable[[A], Coroutine[Any, Any, T]],
        iterable: Iterable[A] | AsyncIterable[A],
        /,
        *,
        ordered: bool = ...,
        window: int | None = ...,
        return_exceptions: bool,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
    ) -> AsyncGenerator[T | BaseException, None]: ...
    @overload
    def map(
        self,
        fn: Callable[[A], T],
        iterable: Iterable[A] | AsyncIterable[A],
        /,
        *,
        ordered: bool = ...,
        window: int | None = ...,
        return_exceptions: bool,
        timeout: float | None = ...,
        retry: Retry | None = ...,
        priority: int = ...,
        key: Hashable | None = ...,
    ) -> AsyncGenerator[T | BaseException, None]: ...
    def map(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        ordered: bool = True,
        window: int | None = None,
        return_exceptions: bool = False,
        **job_options: Any,
    ) -> AsyncGenerator[Any, None]:
        """Run `fn(item)` as a job for each item of `iterable`; yield the results.

        Items are read only as results are taken: at most `window` jobs are
        submitted and not yet yielded at any time, so memory stays bounded
        whatever the length of the input, an endless generator included.
        Each item becomes `await submit(fn, item, **job_options)`, so a full
        job queue makes the map wait (backpressure). Sync and async
        iterables both work; either is read in the consumer's task, one item
        at a time, so an async input that is slow to produce its next item
        also holds back results that are already done.

        Stopping early (`break`, an exception in the loop body, `aclose()`)
        cancels the jobs the map has in flight. `aclose()` returns only when
        all of them have finished, and a failure among them that the
        consumer never took goes to `on_error` (or the log), never nowhere.
        After a plain `break` the event loop closes the generator soon after;
        `contextlib.aclosing` closes it at once:

        ```python
        async with contextlib.aclosing(dispatcher.map(fetch, urls, window=16)) as pages:
            async for page in pages:
                if page.is_last:
                    break
        ```

        Args:
            fn: Called as `fn(item)` for each item: a coroutine function runs
                on the loop, a sync callable in a worker thread (or process,
                with `sync_in="process"`), as with `submit`.
            iterable: The items: any iterable or async iterable, of any
                length. Read from the first `__anext__` on, never ahead of
                the window.
            ordered: If True, yield results in input order (a slow job holds
                back the results after it); if False, in the order the jobs
                finish.
            window: How many jobs may be submitted and not yet yielded at
                once (>= 1). None means twice `workers`, read when iteration
                starts.
            return_exceptions: If False, a failed job's exception is raised
                at its position and the map ends. If True, it is yielded in
                place of the result (an `asyncio.CancelledError` instance for
                a cancelled job) and the map goes on.
            **job_options: Per-job options (`timeout`, `retry`, `priority`,
                `key`) applied to every job, as `submit` takes them; they are
                checked by the call itself, and any other name is a
                `TypeError` (`fn` is called with the item alone).

        Yields:
            Each job's result, or with `return_exceptions=True` its exception,
            in input order (`ordered=True`) or in finishing order.

        Raises:
            TypeError: `fn` is not callable, `iterable` is neither iterable
                nor async iterable, `ordered` or `return_exceptions` is not a
                bool, `window` is not an int, or a job option is unknown or
                has the wrong type (raised by the call itself).
            ValueError: `window` < 1, or a job option has a wrong value
                (raised by the call itself).
            DispatcherClosed: the dispatcher is not running when iteration
                starts, or stops accepting jobs while the map still has items
                to submit.
            Exception: with `return_exceptions=False`, a job's exception, at
                its position; the jobs still in flight are cancelled. An
                exception raised by the input itself also ends the map.
            asyncio.CancelledError: with `return_exceptions=False`, a job was
                cancelled (for example by `close(cancel=True)`), as awaiting
                its handle would raise.
        """
        unknown = job_options.keys() - RESERVED_OPTIONS
        if unknown:
            raise TypeError(
                f"map() got unexpected keyword argument(s) {', '.join(sorted(unknown))}; "
                f"its job options are {', '.join(sorted(RESERVED_OPTIONS))} "
                "(fn is called with the item alone)"
            )
        pop_options(dict(job_options), None, None)  # checks them now, not at the first job
        return map_results(
            self,
            fn,
            iterable,
            ordered=ordered,
            window=window,
            return_exceptions=return_exceptions,
            job_options=job_options,
        )

    # -------------------------------------------------------------- routing

    def _route(self) -> None:
        """The routing rule: hand the oldest waiting job to the longest-idle worker.

        Repeats while both exist. Synchronous on purpose: this method and
        `_next_job_for`, its special case, are where every scheduling
        decision is made.
        """
        idle = self._idle_inboxes
        while self._idle_count and (self._job_queue or self._priority_heap):
            if self._rate is not None and not self._take_token():
                return  # a timer routes again when the next start is allowed
            handle = self._pop_job()
            if handle is None:
                if self._rate is not None:
                    self._tokens += 1  # not used: give it back
                return
            self._idle_count -= 1
            handle._handed_over = True  # in an inbox: cancelling it must not touch the queue
            idle.get_nowait().put_nowait(handle)

    def _next_job_for(self, inbox: Inbox) -> JobHandle[Any] | None:
        """A worker is free: give it a job to start now, or register it as idle.

        If jobs wait, the workers idle for longer get theirs first (`_route`);
        if jobs are still left, the routing rule would pick this worker next,
        so it gets the oldest one directly, instead of parking its inbox in
        the idle queue only to have it taken out again. This direct
        handoff is what keeps a busy pool from paying queue round trips and
        wake-ups per job. Otherwise the inbox is registered and `_route` runs.
        Returns None when the worker must wait on its inbox (or stop, if the
        dispatcher is stopping).
        """
        jobs = self._job_queue
        if self._unusual:  # stopping, shrinking, a rate limit, or priorities
            if self._stopping:
                return None
            if self._retiring:  # a resize() shrank the pool: this worker leaves
                self._retiring -= 1
                self._refresh_unusual()
                self._retire(inbox)
                return None
            # With a rate limit, _route decides; priorities live in the heap too.
            if self._rate is None and (jobs or self._priority_heap):
                if self._idle_count:
                    self._route()  # the longer-idle workers first
                if not self._idle_count:
                    handle = self._pop_job()
                    if handle is not None:
                        return handle
        elif jobs:
            if self._idle_count:
                # Workers idle for longer come first: the routing rule gives
                # them the oldest jobs. If jobs are left, every worker but
                # this one is busy, and the next job is this worker's.
                self._route()
            # _pop_job's common case (no priorities: the deque alone), inlined
            # because it runs once per job in a busy pool.
            while jobs:
                handle = jobs.popleft()
                if handle._job_state is _QUEUED:
                    self._backlog -= 1
                    if self._putters:
                        self._wake_putters()
                    return handle
                self._dead -= 1  # cancelled while it waited
        self._idle_count += 1
        self._idle_inboxes.put_nowait(inbox)
        if self._job_queue or self._priority_heap:
            self._route()
        return None

    def _refresh_unusual(self) -> None:
        # One flag keeps the common case of `_next_job_for` to one test.
        self._unusual = bool(
            self._stopping or self._retiring or self._rate is not None or self._priorities_used
        )

    def _pop_job(self) -> JobHandle[Any] | None:
        """Take the next job that may start off the job queue, freeing its room.

        The next job is the oldest of the highest priority. (Jobs parked
        behind an earlier job of their key are not in the queue yet; they
        still count against `queue_size`.)
        """
        if not self._priority_heap:
            # The common case: the FIFO deque alone.
            jobs = self._job_queue
            while jobs:
                handle = jobs.popleft()
                if handle._job_state is _QUEUED:
                    self._backlog -= 1
                    if self._putters:
                        self._wake_putters()
                    return handle
                self._dead -= 1  # cancelled while it waited
            return None
        jobs = self._job_queue
        heap = self._priority_heap
        while True:
            if heap and (
                heap[0][0] < 0  # a positive priority
                or not jobs
                or (heap[0][0] == 0 and heap[0][1] < jobs[0].id)  # older, same priority
            ):
                handle = heapq.heappop(heap)[3]
            elif jobs:
                handle = jobs.popleft()
            else:
                return None
            if handle._job_state is not _QUEUED:
                self._dead -= 1  # cancelled while it waited
                continue
            self._backlog -= 1
            if self._putters:
                self._wake_putters()
            return handle

    def _release_key(self, opts: JobOptions) -> None:
        """A job that held its key is final: the key's next job may go, or the key idles."""
        opts.holds_key = False
        parked = self._keys.get(opts.key)
        if parked is None:
            return  # a shutdown cleared the table
        if not parked:
            del self._keys[opts.key]  # nothing kept for an idle key
            return
        handle = parked.popleft()
        following = handle._opts
        following.parked = False
        following.holds_key = True
        # It has waited since it was submitted: among its priority it goes
        # before the jobs submitted after it (its order is its id).
        self._heap_push(handle, following)
        if self._idle_count:
            self._wake_loop()

    def _take_token(self) -> bool:
        """The rate limit's token bucket: may a job start now?

        If not, a timer routes again when the next token is due.
        """
        assert self._rate is not None
        assert self._loop is not None
        now = self._loop.time()
        tokens = min(self._rate_burst, self._tokens + (now - self._tokens_at) * self._rate)
        self._tokens_at = now
        # The tolerance absorbs float rounding: a timer set for the exact
        # moment of the next token must find it there.
        if tokens >= 1 - 1e-9:
            self._tokens = max(0.0, tokens - 1)
            return True
        self._tokens = tokens
        if self._rate_timer is None:
            self._rate_timer = self._loop.call_later((1 - tokens) / self._rate, self._token_due)
        return False

    def _token_due(self) -> None:
        self._rate_timer = None
        if not (self._stopping or self._workers_cancelled()):
            self._route()

    async def _dispatch_loop(self) -> None:
        """Route; sleep until a job waits while a worker is idle; repeat.

        Routing before every sleep means nothing queued while the loop was
        not asleep (before its first run, or between its wake-up and now)
        is missed: `_wake_loop` only has to wake a sleeping loop.
        """
        loop = self._loop
        assert loop is not None
        while not self._stopping:
            self._route()
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

    # ------------------------------------------------------------ job states

    def _finish_succeeded(self, handle: JobHandle[Any], result: Any) -> float:
        """The job returned `result`. Returns the time it finished, on the loop's clock."""
        handle._job_state = _SUCCEEDED
        clock = self._now
        now = handle._finished_at = clock()
        # The latency rings, inlined. Every job of the first WINDOW, then
        # every fourth: recording costs more than 5% of a trivial job.
        job_id = handle.id
        if not job_id & _SAMPLE_MASK or job_id <= WINDOW:
            i = self._sample_count
            started = handle._started_at
            self._wait_samples[i & _WINDOW_MASK] = started - handle._queued_at
            self._run_samples[i & _WINDOW_MASK] = now - started
            self._sample_count = i + 1
        self._busy -= 1
        self._succeeded += 1
        _future_set_result(handle, result)
        if job_id <= self._join_horizon:
            self._count_for_joins(handle)
        if handle._how >= OPTIONED and handle._opts.holds_key:
            self._release_key(handle._opts)
        return now

    def _finish_failed(self, handle: JobHandle[Any], exc: BaseException, *, fatal: bool) -> None:
        clock = self._now
        now = clock()
        if not handle.id & _SAMPLE_MASK or handle.id <= WINDOW:
            i = self._sample_count
            started = handle._started_at
            self._wait_samples[i & _WINDOW_MASK] = started - handle._queued_at
            self._run_samples[i & _WINDOW_MASK] = now - started
            self._sample_count = i + 1
        if handle._how >= OPTIONED:
            if not fatal and self._retry_later(handle, exc):
                return
            if handle._opts.holds_key:
                self._release_key(handle._opts)
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
                self._errors.append(exc)  # re-raised by __aexit__, as TaskGroup does
        elif self._fail_fast:
            handle._log_traceback = False  # reported once, in the ExceptionGroup
            self._errors.append(exc)
            self._abort()
        if handle.id <= self._join_horizon:
            self._count_for_joins(handle)
        if not (fatal or self._fail_fast or awaited):
            handle._log_traceback = False  # reported here, so asyncio must not report it again
            self._report(handle, exc)

    def _finish_cancelled(self, handle: JobHandle[Any], msg: Any) -> None:
        if handle._job_state is _QUEUED:
            self._queued -= 1
            if handle._how % OPTIONED == CORO_OBJECT:
                handle._fn.close()  # it will never run: no "never awaited" warning
        else:
            self._busy -= 1
        handle._job_state = _CANCELLED
        handle._finished_at = self._now()
        self._cancelled += 1
        _future_cancel(handle, msg)
        if handle.id <= self._join_horizon:
            self._count_for_joins(handle)
        if handle._how >= OPTIONED and handle._opts.holds_key:
            self._release_key(handle._opts)

    def _retry_later(self, handle: JobHandle[Any], exc: BaseException) -> bool:
        """A try failed: if the job's policy retries it, send it to wait out its backoff.

        While it waits the job holds no worker and counts as queued; its key,
        if it has one, stays held, so later jobs of the key keep their order.
        """
        policy = handle._opts.retry
        if (
            policy is None
            or handle._attempts >= policy.attempts
            or handle._cancel_requested  # asked to stop: it does not come back
            or self._cancelling
        ):
            return False
        try:
            retried = policy.retries(exc)
        except Exception as predicate_error:
            # A broken `on=` predicate must not kill the worker or hide the
            # job's failure: the job fails with its own error, and this is logged.
            logger.error(
                "%s: the retry predicate %r raised on the failure of job %d; not retrying",
                self._label(),
                policy.on,
                handle.id,
                exc_info=predicate_error,
            )
            return False
        if not retried:
            return False
        handle._job_state = _QUEUED
        handle._worker_task = None
        handle._handed_over = False
        self._busy -= 1
        self._queued += 1
        self._retried += 1
        delay = policy.delay(handle._attempts)
        logger.warning(
            "%s: job %d (%s) failed (try %d of %d), retrying in %.3g s: %r",
            self._label(),
            handle.id,
            _name(handle.fn),
            handle._attempts,
            policy.attempts,
            delay,
            exc,
        )
        assert self._loop is not None
        self._backing_off.add(handle)
        handle._opts.timer = self._loop.call_later(delay, self._requeue, handle)
        return True

    def _end_backoff(self, handle: JobHandle[Any]) -> None:
        """Stop a job's retry backoff timer (it will not be re-queued by it)."""
        timer = handle._opts.timer
        if timer is not None:
            timer.cancel()
            handle._opts.timer = None
        self._backing_off.discard(handle)

    def _requeue(self, handle: JobHandle[Any]) -> None:
        """A retry's backoff is over: the job goes back in the queue."""
        handle._opts.timer = None
        self._backing_off.discard(handle)
        if handle._job_state is not _QUEUED:
            return
        if self._cancelling:
            self._cancel_unstarted(handle)
            return
        # Back in the queue even when it is full: the job was accepted long
        # ago, and nobody is there to wait for room. At the back of its priority.
        self._backlog += 1
        handle._opts.order = self._submitted  # behind every job accepted so far
        self._heap_push(handle, handle._opts)
        if self._idle_count:
            self._wake_loop()

    def _cancel_queued(self, handle: JobHandle[Any], msg: Any) -> None:
        """`handle.cancel()` on a job that has not started (or waits to be retried)."""
        if handle._how >= OPTIONED:
            opts = handle._opts
            if opts.timer is not None:  # waiting out a retry backoff
                self._end_backoff(handle)
                self._finish_cancelled(handle, msg)
                return
            if opts.parked:  # waiting for its key, outside the queue
                opts.parked = False
                self._keys[opts.key].remove(handle)
                self._backlog -= 1
                self._finish_cancelled(handle, msg)
                if self._putters:
                    self._wake_putters()
                return
        in_queue = not handle._was_handed_over()
        self._finish_cancelled(handle, msg)
        if in_queue:
            # Left in the job queue for _route to skip; its room is free now.
            self._backlog -= 1
            self._dead += 1
            if self._dead > 64 and self._dead * 2 > len(self._job_queue) + len(self._priority_heap):
                self._job_queue = deque(h for h in self._job_queue if h._job_state is _QUEUED)
                self._priority_heap = [e for e in self._priority_heap if e[3]._job_state is _QUEUED]
                heapq.heapify(self._priority_heap)
                self._dead = 0
            if self._putters:
                self._wake_putters()

    def _count_for_joins(self, handle: JobHandle[Any]) -> None:
        for waiter in self._join_waiters:
            if handle.id <= waiter.horizon:
                waiter.remaining -= 1
                if waiter.remaining == 0 and not waiter.future.done():
                    waiter.future.set_result(None)

    def _report(self, handle: JobHandle[Any], exc: BaseException) -> None:
        hook = self._on_error
        if hook is None:
            logger.error("%s: job %r failed", self._label(), handle, exc_info=exc)
            return
        try:
            hook(handle, exc)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as hook_exc:
            # The hook must not kill a worker (not even with a stray
            # CancelledError), and the job's failure must not vanish with it:
            # log both.
            logger.error("%s: job %r failed", self._label(), handle, exc_info=exc)
            logger.error("%s: on_error hook %r raised", self._label(), hook, exc_info=hook_exc)

    def _new_process_pool(self) -> ProcessPoolExecutor:
        # "spawn": forking a process that runs an event loop and threads is
        # unsafe; a spawned child starts clean and imports the job's module.
        return ProcessPoolExecutor(self._size, mp_context=multiprocessing.get_context("spawn"))

    def _renew_process_pool(self, broken: ProcessPoolExecutor) -> None:
        """A child process died: jobs in that pool fail, later ones get a fresh pool."""
        if self._process_pool is broken:
            broken.shutdown(wait=False, cancel_futures=True)
            self._process_pool = self._new_process_pool()

    def _label(self) -> str:
        return f"Dispatcher {self._name!r}" if self._name else "Dispatcher"
