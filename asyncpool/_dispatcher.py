"""`Dispatcher`: the bounded job queue, the idle-worker queue, the routing rule and the lifecycle.

The shape is the Go seed's, done in asyncio:

* submitters append jobs to a bounded job queue (a full queue makes
  `await submit()` wait: real backpressure);
* each worker owns an `asyncio.Queue` inbox and, when idle, registers that
  inbox in the idle-worker queue (`_idle_inboxes`);
* `_route` hands the oldest waiting job to the longest-idle inbox. It is the
  whole routing rule, and it is synchronous: every scheduling decision is
  made there, and all awaiting happens outside it;
* the dispatcher loop (`_dispatch_loop`) sleeps until a job arrives while a
  worker is idle, then routes everything it can in one pass; a worker that
  goes idle while jobs wait routes on the spot, so a busy pool never pays a
  wake-up of the loop per job;
* one `asyncio.TaskGroup` owns the workers and the loop: it is the WaitGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import multiprocessing
import pickle
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from types import FunctionType, TracebackType
from typing import Any, Final, Literal, ParamSpec, Protocol, TypeVar, overload

import anyio

from ._errors import DispatcherClosed, QueueFull
from ._handle import JobHandle
from ._job import CORO_OBJECT, IN_PROCESS, IN_THREAD, ON_LOOP, JobState, classify
from ._stats import ShutdownReport, Stats
from ._worker import Inbox, Worker, wait_through_cancellation

__all__ = ("Dispatcher",)

logger = logging.getLogger("asyncpool")

T = TypeVar("T")
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

RESERVED_OPTIONS: Final = frozenset({"timeout", "retry", "priority", "key"})
"""Keyword names `submit` keeps for per-job options; never passed to a job."""


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


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
    return float(timeout)


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

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: `workers` < 1, `queue_size` < 0, or `sync_in` is neither
            `"thread"` nor `"process"`.
    """

    def __init__(
        self,
        workers: int = 8,
        *,
        queue_size: int = 1024,
        fail_fast: bool = False,
        on_error: Callable[[JobHandle[Any], BaseException], object] | None = None,
        name: str | None = None,
        sync_in: Literal["thread", "process"] = "thread",
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
        self._process_pool: ProcessPoolExecutor | None = None
        self._fail_fast = fail_fast
        self._on_error = on_error
        self._name = name

        self._lifecycle = _Lifecycle.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._workers: list[Worker] = []
        self._idle_inboxes: asyncio.Queue[Inbox] = asyncio.Queue()
        self._idle_count = 0  # its qsize(), kept here: the hot path reads it per job
        self._wakeup = asyncio.Event()
        self._thread_limiter: anyio.CapacityLimiter | None = None
        self._now: Callable[[], float] = time.monotonic

        # The job queue. Cancelled jobs are left in it and skipped by _route
        # ("dead" entries) so that cancelling is O(1); `_backlog` counts the
        # live ones, and the bound applies to it.
        self._job_queue: deque[JobHandle[Any]] = deque()
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

        self._join_waiters: list[_JoinWaiter] = []
        self._join_horizon = 0  # the largest horizon of any waiter; 0 = none

        self._cancelling = False  # every job must end now; none may start
        self._fatal = False  # a job raised KeyboardInterrupt or SystemExit
        self._stopping = False  # workers must exit when they next go idle
        self._errors: list[BaseException] = []  # fail_fast failures
        self._errors_raised = False
        self._never_started: list[JobHandle[Any]] = []  # cancelled by a shutdown
        self._interrupted: list[JobHandle[Any]] = []
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
        """The size of the pool."""
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
            idle=self._size - self._busy,
            busy=self._busy,
            queued=self._queued,
            submitted=self._submitted,
            succeeded=self._succeeded,
            failed=self._failed,
            cancelled=self._cancelled,
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
            if not ready.done():
                ready.cancel()
            self._tear_down()
            if self._process_pool is not None:
                # Every job is final, so the processes are idle: wait for them
                # to exit, so that none outlives the dispatcher.
                await anyio.to_thread.run_sync(self._process_pool.shutdown)

    def _tear_down(self) -> None:
        # Whatever way the runner ended, every handle ends final and nobody
        # is left waiting on the dispatcher.
        self._cancelling = True
        self._stopping = True
        self._cancel_queued_jobs()
        self._lifecycle = _Lifecycle.CLOSED
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

        Cancelling a job is a request, as with tasks: a job that catches
        every `CancelledError` and keeps going, or a blocking job whose thread
        or process does not return, keeps `close()` waiting, whatever
        `cancel` and `timeout` say.

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
        timeout = _check_timeout(timeout)
        if not isinstance(cancel, bool):
            raise TypeError(f"cancel must be a bool, got {cancel!r}")
        self._refuse_from_own_job("close")
        report = await self._close(cancel=cancel, timeout=timeout)
        if self._errors and not self._errors_raised:
            self._errors_raised = True
            raise BaseExceptionGroup(f"{self._label()} stopped on job failure", self._errors)
        return report

    async def _close(self, *, cancel: bool, timeout: float | None = None) -> ShutdownReport:
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
            never_started=tuple(self._never_started),
            # A job that swallowed its cancellation and finished was not interrupted.
            interrupted=tuple(h for h in self._interrupted if h.cancelled()),
        )
        self._shutdown_report = report
        return report

    @property
    def shutdown_report(self) -> ShutdownReport | None:
        """The `ShutdownReport` of the last `close()` (or `async with` exit); None before."""
        return self._shutdown_report

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
            self._lifecycle = _Lifecycle.CLOSING
            self._wake_putters(everyone=True)

    def _cancel_all(self) -> None:
        self._cancelling = True
        self._cancel_queued_jobs()
        for worker in self._workers:
            handle = worker.current
            if handle is not None and not handle._cancel_requested:
                self._interrupted.append(handle)
                handle.cancel()

    def _cancel_queued_jobs(self) -> None:
        jobs = self._job_queue
        while jobs:
            handle = jobs.popleft()
            if handle._job_state is _QUEUED:
                self._backlog -= 1
                self._cancel_unstarted(handle)
        self._dead = 0

    def _cancel_unstarted(self, handle: JobHandle[Any]) -> None:
        """A shutdown cancels a job that never started; the report lists it."""
        self._never_started.append(handle)
        self._finish_cancelled(handle, None)

    def _stop_workers(self) -> None:
        self._stopping = True
        idle = self._idle_inboxes
        while self._idle_count:
            self._idle_count -= 1
            idle.get_nowait().put_nowait(None)
        self._wakeup.set()

    # ----------------------------------------------------------- submitting

    @overload
    async def submit(self, job: _AsyncProcess[T], /) -> JobHandle[T]: ...
    @overload
    async def submit(self, job: _SyncProcess[T], /) -> JobHandle[T]: ...
    @overload
    async def submit(self, job: Coroutine[Any, Any, T], /) -> JobHandle[T]: ...
    @overload
    async def submit(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> JobHandle[T]: ...
    @overload
    async def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> JobHandle[T]: ...
    async def submit(self, target: Any, /, *args: Any, **kwargs: Any) -> JobHandle[Any]:
        """Queue a job and return its handle, waiting for room if the queue is full.

        Accepted forms:

        * a `Job`: an object with a `process()` method, async or sync;
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
        how, fn = self._prepare(target, args, kwargs)
        size = self._queue_size
        # _has_room(), inlined: this runs for every job.
        if size and (self._putters or self._backlog + self._reserved >= size):
            try:
                await self._wait_for_room()
            except BaseException:
                _close_if_coroutine(fn)
                raise
        return self._enqueue(how, fn, args, kwargs)

    @overload
    def submit_nowait(self, job: _AsyncProcess[T], /) -> JobHandle[T]: ...
    @overload
    def submit_nowait(self, job: _SyncProcess[T], /) -> JobHandle[T]: ...
    @overload
    def submit_nowait(self, job: Coroutine[Any, Any, T], /) -> JobHandle[T]: ...
    @overload
    def submit_nowait(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> JobHandle[T]: ...
    @overload
    def submit_nowait(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> JobHandle[T]: ...
    def submit_nowait(self, target: Any, /, *args: Any, **kwargs: Any) -> JobHandle[Any]:
        """Queue a job without waiting; like `submit`, but a full queue is an error.

        Raises:
            QueueFull: the job queue has no room.
            TypeError: as for `submit`.
            DispatcherClosed: as for `submit`.
        """
        how, fn = self._prepare(target, args, kwargs)
        if not self._has_room():
            _close_if_coroutine(fn)
            raise QueueFull(
                f"the job queue of {self._label()} is full "
                f"(queue_size={self._queue_size}, all places taken or promised)"
            )
        return self._enqueue(how, fn, args, kwargs)

    def _prepare(
        self, target: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[int, Any]:
        if (
            type(target) is FunctionType
            and target.__code__.co_flags & _CO_COROUTINE
            and not kwargs
            and self._lifecycle is _Lifecycle.RUNNING
        ):
            return ON_LOOP, target  # the common case, decided without classify()
        try:
            if kwargs and not RESERVED_OPTIONS.isdisjoint(kwargs):
                names = ", ".join(sorted(RESERVED_OPTIONS.intersection(kwargs)))
                raise TypeError(
                    f"submit() keeps {names} for per-job options, which this version of "
                    "asyncpool does not offer yet; to pass a job's own argument of that "
                    "name, bind it with functools.partial"
                )
            how, fn = classify(target, args, kwargs)
            if how == IN_THREAD and self._sync_in == "process":
                how = IN_PROCESS
                _check_picklable(fn, args, kwargs)
            if self._lifecycle is not _Lifecycle.RUNNING:
                raise self._closed_error()
        except BaseException:
            _close_if_coroutine(target)
            raise
        return how, fn

    def _closed_error(self) -> DispatcherClosed:
        state = self._lifecycle
        if state is _Lifecycle.NEW:
            hint = ": use 'async with Dispatcher(...)' or 'await dispatcher.start()' first"
        elif self._errors:
            hint = ": a job failed and fail_fast=True stopped it"
        else:
            hint = ""
        return DispatcherClosed(f"cannot submit: {self._label()} is {state}{hint}")

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
        self, how: int, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> JobHandle[Any]:
        loop = self._loop
        assert loop is not None
        handle: JobHandle[Any] = JobHandle(loop=loop)
        handle._dispatcher = self
        handle._job_state = _QUEUED
        handle._how = how
        handle._fn = fn
        handle._args = args
        handle._kwargs = kwargs
        # Slots a queued job does not need yet stay unset; JobHandle reads
        # them with defaults. Fewer stores here is measurably faster.
        self._submitted += 1
        handle.id = self._submitted
        handle._queued_at = self._now()
        self._queued += 1
        self._backlog += 1
        self._job_queue.append(handle)
        if self._idle_count:
            self._wakeup.set()
        return handle

    # -------------------------------------------------------------- routing

    def _route(self) -> None:
        """The routing rule: hand the oldest waiting job to the longest-idle worker.

        Repeats while both exist. Synchronous on purpose: this method and
        `_next_job_for`, its special case, are where every scheduling
        decision is made.
        """
        idle = self._idle_inboxes
        while self._idle_count:
            handle = self._pop_job()
            if handle is None:
                return
            self._idle_count -= 1
            idle.get_nowait().put_nowait(handle)

    def _next_job_for(self, inbox: Inbox) -> JobHandle[Any] | None:
        """A worker is free: give it a job to start now, or register it as idle.

        If jobs wait and no other worker is idle, the routing rule would pick
        this worker; it gets the oldest job directly, instead of parking its
        inbox in the idle queue only to have it taken out again. This direct
        handoff is what keeps a busy pool from paying queue round trips and
        wake-ups per job. Otherwise the inbox is registered and `_route` runs.
        Returns None when the worker must wait on its inbox (or stop, if the
        dispatcher is stopping).
        """
        if self._stopping:
            return None
        if self._job_queue and not self._idle_count:
            handle = self._pop_job()
            if handle is not None:
                return handle
        self._idle_count += 1
        self._idle_inboxes.put_nowait(inbox)
        if self._job_queue:
            self._route()
        return None

    def _pop_job(self) -> JobHandle[Any] | None:
        """Take the oldest live job off the job queue, freeing its room."""
        jobs = self._job_queue
        while jobs:
            handle = jobs.popleft()
            if handle._job_state is _QUEUED:
                handle._handed_over = True
                self._backlog -= 1
                if self._putters:
                    self._wake_putters()
                return handle
            self._dead -= 1  # cancelled while it waited
        return None

    async def _dispatch_loop(self) -> None:
        """Sleep until a job waits while a worker is idle; then route."""
        wakeup = self._wakeup
        while True:
            await wakeup.wait()
            wakeup.clear()
            if self._stopping:
                return
            self._route()

    # ------------------------------------------------------------ job states

    def _job_started(self, handle: JobHandle[Any], task: asyncio.Task[Any]) -> None:
        handle._job_state = _RUNNING
        handle._worker_task = task
        handle._cancel_requested = False
        handle._attempts = 1  # a job starts once (retries, when they come, count on from here)
        handle._started_at = self._now()
        self._queued -= 1
        self._busy += 1

    def _finish_succeeded(self, handle: JobHandle[Any], result: Any) -> None:
        handle._job_state = _SUCCEEDED
        handle._finished_at = self._now()
        self._busy -= 1
        self._succeeded += 1
        _future_set_result(handle, result)
        if handle.id <= self._join_horizon:
            self._count_for_joins(handle)

    def _finish_failed(self, handle: JobHandle[Any], exc: BaseException, *, fatal: bool) -> None:
        handle._job_state = _FAILED
        handle._finished_at = self._now()
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
            if handle._how == CORO_OBJECT:
                handle._fn.close()  # it will never run: no "never awaited" warning
        else:
            self._busy -= 1
        handle._job_state = _CANCELLED
        handle._finished_at = self._now()
        self._cancelled += 1
        _future_cancel(handle, msg)
        if handle.id <= self._join_horizon:
            self._count_for_joins(handle)

    def _cancel_queued(self, handle: JobHandle[Any], msg: Any) -> None:
        """`handle.cancel()` on a job that has not started."""
        in_queue = not handle._was_handed_over()
        self._finish_cancelled(handle, msg)
        if in_queue:
            # Left in the job queue for _route to skip; its room is free now.
            self._backlog -= 1
            self._dead += 1
            if self._dead > 64 and self._dead * 2 > len(self._job_queue):
                self._job_queue = deque(h for h in self._job_queue if h._job_state is _QUEUED)
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
