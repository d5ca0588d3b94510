"""A worker: one coroutine with its own inbox, running one job at a time.

This is the seed's `Worker`: it registers its inbox with the dispatcher's
idle-worker queue, waits for a job on the inbox, runs it, and registers
again, whatever the job did. A lost registration would shrink the pool for
good, so the loop has exactly one place where it registers, at its top.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread

from ._errors import JobTimeout
from ._handle import JobHandle
from ._job import CORO_OBJECT, IN_PROCESS, IN_THREAD, JOB_ON_LOOP, ON_LOOP, OPTIONED, JobState

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher

__all__ = ("Inbox", "LeanQueue", "Worker", "running_worker", "wait_through_cancellation")

T = TypeVar("T")

running_worker: contextvars.ContextVar[Worker | None] = contextvars.ContextVar(
    "asyncpool_running_worker", default=None
)
"""The worker that runs the current code (its jobs, and tasks they start).

Set once per worker task (no cost per job); tasks a job creates inherit it
with the context.
"""

_QUEUED = JobState.QUEUED
_RUNNING = JobState.RUNNING

# Phases of a call handed to a worker thread (see Worker._run_in_thread).
_PENDING = "pending"
_CALLED = "called"
_ABANDONED = "abandoned"

# Stands for the outcome of a job whose handle close() already made final.
_ALREADY_FINAL = RuntimeError("the job's handle is final already")


class LeanQueue(asyncio.Queue[T]):
    """An unbounded `asyncio.Queue` whose no-wait calls skip what the dispatcher never uses.

    The inboxes and the idle-worker queue are private to the dispatcher:
    nobody calls `join()` or `task_done()` on them, and they have no
    `maxsize`, so nobody waits in `put()`. `put_nowait` and `get_nowait`,
    which the routing rule calls for every job handed to an idle worker, skip
    that bookkeeping (three or four Python calls each) and wake a waiting `get()`
    the way `asyncio.Queue` does. `get()`, `empty()` and `qsize()` are
    asyncio's own.
    """

    _queue: deque[T]
    _getters: deque[asyncio.Future[None]]

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


Inbox = LeanQueue[JobHandle[Any] | None]
"""A worker's inbox. `None` tells the worker to stop."""


class Worker:
    """One worker of a dispatcher: an inbox and the coroutine that serves it."""

    __slots__ = ("current", "dispatcher", "inbox", "index", "task")

    def __init__(self, dispatcher: Dispatcher, index: int) -> None:
        self.dispatcher = dispatcher
        self.index = index
        self.inbox: Inbox = LeanQueue()
        self.current: JobHandle[Any] | None = None
        """The job this worker is running, if any."""
        self.task: asyncio.Task[None] | None = None
        """The worker's task, once it runs."""

    async def run(self) -> None:
        """Serve the inbox until told to stop.

        Raises:
            KeyboardInterrupt, SystemExit: raised by a job; they tear the
                dispatcher down, as in `asyncio.TaskGroup`.
            asyncio.CancelledError: the worker itself was cancelled (its task
                group is shutting down).
        """
        dispatcher = self.dispatcher
        inbox = self.inbox
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        running_worker.set(self)
        cancelling = task.cancelling  # bound once: a method call on a task is slow to look up
        now = dispatcher._now
        # When this worker last became free: the start time of a job it takes
        # in the same step (one clock read per job fewer on the busy path).
        free_at = now()
        try:
            while True:
                handle = dispatcher._next_job_for(inbox)
                if handle is None:
                    if dispatcher._stopping:
                        return
                    handle = await inbox.get()
                    if handle is None:
                        return
                    free_at = now()
                    if handle._job_state is not _QUEUED:
                        continue  # cancelled after it was handed over
                if dispatcher._cancelling:
                    dispatcher._cancel_unstarted(handle)
                    continue
                self.current = handle
                # The job starts (Dispatcher._job_started, inlined: it is per job).
                handle._job_state = _RUNNING
                handle._worker_task = task
                handle._cancel_requested = False
                handle._started_at = free_at
                dispatcher._queued -= 1
                dispatcher._busy += 1
                try:
                    how = handle._how
                    if how == ON_LOOP:
                        kwargs = handle._kwargs
                        if kwargs:
                            result = await handle._fn(*handle._args, **kwargs)
                        else:
                            result = await handle._fn(*handle._args)
                    elif how == JOB_ON_LOOP:
                        result = await handle._fn.process()
                    elif how == CORO_OBJECT:
                        result = await handle._fn
                    elif how == IN_THREAD:
                        result = await self._run_in_thread(handle)
                    elif how == IN_PROCESS:
                        result = await self._run_in_process(handle)
                    else:
                        result = await self._run_with_options(handle, how - OPTIONED)
                except (KeyboardInterrupt, SystemExit) as exc:
                    self.current = None
                    dispatcher._finish_failed(handle, exc, fatal=True)
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
                    task.uncancel()
                    if getattr(task, "_must_cancel", False):
                        # The job cancelled its own handle and never awaited
                        # again, so the request is still pending on this task:
                        # take delivery here, or the worker's next await gets
                        # it. Like a task that cancels itself and returns, the
                        # job ends cancelled.
                        with contextlib.suppress(asyncio.CancelledError):
                            await asyncio.sleep(0)
                        if error is None:
                            error = asyncio.CancelledError()
                    if handle.done():  # close() abandoned it: it is final already
                        dispatcher._abandoned_job_ended(handle, error)
                        error = _ALREADY_FINAL
                if error is None:
                    free_at = dispatcher._finish_succeeded(handle, result)
                else:
                    if isinstance(error, asyncio.CancelledError):
                        dispatcher._finish_cancelled(handle, error.args[0] if error.args else None)
                    elif error is not _ALREADY_FINAL:
                        dispatcher._finish_failed(handle, error, fatal=False)
                    free_at = now()
                # Drop the job's data before waiting: an idle worker must not
                # keep the last result, error or arguments (and their frames) alive.
                handle = result = error = None
                if cancelling():
                    if dispatcher._workers_cancelled():
                        # The worker itself is being cancelled (its group is
                        # shutting down), whether or not the job noticed.
                        raise asyncio.CancelledError
                    # A job cancelled its own task and never balanced it (old
                    # timeout libraries do that); the request was the job's.
                    while task.cancelling():
                        task.uncancel()
        finally:
            self._release_inbox()

    async def _run_with_options(self, handle: JobHandle[Any], how: int) -> Any:
        """Run a job that has per-job options: count the try, and keep its time limit."""
        opts = handle._opts
        opts.tries += 1
        handle._attempts = opts.tries
        timeout = opts.timeout
        if timeout is None:
            return await self._call(handle, how)
        try:
            async with asyncio.timeout(timeout) as scope:
                return await self._call(handle, how)
        except TimeoutError as exc:
            if not scope.expired():
                raise  # the job's own TimeoutError
            self.dispatcher._timed_out += 1
            raise JobTimeout(
                f"job {handle.id} ({_name(handle.fn)}) ran longer than its timeout of "
                f"{timeout:g} s and was cancelled (try {handle.attempts})"
            ) from exc

    async def _call(self, handle: JobHandle[Any], how: int) -> Any:
        if how == ON_LOOP:
            return await handle._fn(*handle._args, **(handle._kwargs or {}))
        if how == JOB_ON_LOOP:  # not made with options today; kept so it never runs elsewhere
            return await handle._fn.process()
        if how == CORO_OBJECT:
            return await handle._fn
        if how == IN_THREAD:
            return await self._run_in_thread(handle)
        return await self._run_in_process(handle)

    def _release_inbox(self) -> None:
        # Jobs handed over but never started when the worker stops (it was
        # cancelled) must still end in a final state: nothing is lost.
        inbox = self.inbox
        while not inbox.empty():
            handle = inbox.get_nowait()
            if handle is not None and handle._job_state is _QUEUED:
                self.dispatcher._cancel_unstarted(handle)

    async def _run_in_thread(self, handle: JobHandle[Any]) -> Any:
        """Run a blocking job in a worker thread and wait for it.

        A thread cannot be interrupted. When the job is cancelled, this still
        waits for the thread to return, so that a worker never has more than
        one thread and no thread outlives the dispatcher; then it re-raises
        the cancellation, and the thread's outcome is discarded.
        """
        loop = asyncio.get_running_loop()
        returned = loop.create_future()
        fn: Callable[..., Any] = handle._fn
        args = handle._args
        kwargs = handle._kwargs or {}
        # Whether the thread has begun the call. The thread and this task
        # decide under the lock, so a job cancelled before its thread picks
        # it up is never called, and one already running is waited for.
        lock = threading.Lock()
        phase = [_PENDING]

        def call() -> Any:
            with lock:
                if phase[0] is _ABANDONED:
                    return None
                phase[0] = _CALLED
            try:
                return fn(*args, **kwargs)
            finally:
                loop.call_soon_threadsafe(_resolve, returned)

        try:
            result = await anyio.to_thread.run_sync(call, limiter=self.dispatcher._thread_limiter)
        except asyncio.CancelledError:
            with lock:
                if phase[0] is _PENDING:
                    phase[0] = _ABANDONED
            if phase[0] is _CALLED:
                await wait_through_cancellation(returned)
            raise
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            if asyncio.iscoroutine(result):
                result.close()
            raise TypeError(
                f"{_name(fn)} is not a coroutine function, so it ran in a worker "
                "thread, but it returned an awaitable; declare it 'async def'"
            )
        return result

    async def _run_in_process(self, handle: JobHandle[Any]) -> Any:
        """Run a blocking job in the dispatcher's process pool and wait for it.

        As with threads, a job that is already running in a process cannot be
        interrupted: a cancelled job is waited for, then the cancellation is
        re-raised. A job still waiting in the pool is withdrawn.
        """
        dispatcher = self.dispatcher
        pool = dispatcher._process_pool
        assert pool is not None
        kwargs = handle._kwargs or {}
        call = functools.partial(handle._fn, *handle._args, **kwargs)
        done = pool.submit(call)
        try:
            return await asyncio.wrap_future(done)
        except asyncio.CancelledError:
            # wrap_future passed the cancellation on: it withdraws a call still
            # waiting in the pool, and cannot stop one already running.
            if not done.cancelled():
                await wait_through_cancellation(asyncio.wrap_future(done))
            raise
        except BrokenProcessPool:
            dispatcher._renew_process_pool(pool)
            raise


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def wait_through_cancellation(future: asyncio.Future[Any]) -> None:
    """Wait for `future` to finish, through any number of cancellations.

    The caller re-raises the cancellation afterwards; further cancel requests
    stay counted on the task (`Task.cancelling()`) for whoever cares.
    """
    while not future.done():
        try:
            await asyncio.wait((future,))  # never cancels `future`, never raises its error
        except asyncio.CancelledError:
            continue
    if not future.cancelled():
        future.exception()  # retrieved: the outcome is discarded on purpose


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
