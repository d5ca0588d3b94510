"""Where blocking jobs run: worker threads, or a pool of worker processes.

A worker that runs a blocking job (a sync callable, a sync `process()`)
awaits one of the two calls here. Both keep the rule that nothing outlives
the dispatcher: a cancelled job that is already running in a thread or a
process is waited for (it cannot be interrupted), then the cancellation
goes on; a job not picked up yet is withdrawn and never runs.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import pickle
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal

import anyio
import anyio.to_thread

from ._job import name_of
from ._waits import wait_through_cancellation

__all__ = ("Executors", "check_picklable")

# Phases of a call handed to a worker thread (see Executors.run_in_thread).
_PENDING = "pending"
_CALLED = "called"
_ABANDONED = "abandoned"


def check_picklable(fn: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse, at submit, a job that could not be sent to a worker process.

    Raises:
        TypeError: `fn` or its arguments cannot be pickled.
    """
    try:
        pickle.dumps((fn, args, kwargs))
    except Exception as exc:
        raise TypeError(
            f"submit() cannot send {fn!r} to a worker process (sync_in='process'): "
            f"it or its arguments cannot be pickled: {exc}. Define the function at "
            "module level, or use sync_in='thread'"
        ) from exc


class Executors:
    """A dispatcher's worker threads (one per worker at most) and its process pool."""

    __slots__ = ("_size", "_sync_in", "_limiter", "_pool", "_old_pools")

    def __init__(self, size: int, sync_in: Literal["thread", "process"]) -> None:
        self._size = size
        self._sync_in = sync_in
        self._limiter: anyio.CapacityLimiter | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._old_pools: list[ProcessPoolExecutor] = []  # replaced by resize()

    @property
    def in_processes(self) -> bool:
        """True if blocking jobs run in worker processes (`sync_in="process"`)."""
        return self._sync_in == "process"

    @property
    def thread_limit(self) -> float | None:
        """How many worker threads may run at once (None before `start`)."""
        return None if self._limiter is None else self._limiter.total_tokens

    def start(self) -> None:
        """Make the thread limiter and, with `sync_in="process"`, the process pool."""
        self._limiter = anyio.CapacityLimiter(self._size)
        if self.in_processes:
            self._pool = self._new_pool()

    def resize(self, size: int) -> None:
        """Follow a resize of the dispatcher to `size` workers."""
        grew = size > self._size
        self._size = size
        if self._limiter is not None:
            self._limiter.total_tokens = size
        if grew and self._pool is not None:
            # A process pool cannot grow: jobs already sent to the old one
            # finish there; it is shut down with the dispatcher.
            self._old_pools.append(self._pool)
            self._pool.shutdown(wait=False)
            self._pool = self._new_pool()

    async def shutdown(self) -> None:
        """Wait for every worker process to exit (every job is final, so they are idle)."""
        for pool in (*self._old_pools, self._pool):
            if pool is not None:
                await anyio.to_thread.run_sync(pool.shutdown)

    def _new_pool(self) -> ProcessPoolExecutor:
        # "spawn": forking a process that runs an event loop and threads is
        # unsafe; a spawned child starts clean and imports the job's module.
        return ProcessPoolExecutor(self._size, mp_context=multiprocessing.get_context("spawn"))

    def _renew(self, broken: ProcessPoolExecutor) -> None:
        """A child process died: jobs in that pool fail, later ones get a fresh pool."""
        if self._pool is broken:
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    async def run_in_thread(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run a blocking call in a worker thread and wait for it.

        A thread cannot be interrupted. When the job is cancelled, this still
        waits for the thread to return, so that a worker never has more than
        one thread and no thread outlives the dispatcher; then it re-raises
        the cancellation, and the thread's outcome is discarded.

        Raises:
            TypeError: the call returned an awaitable (it should have been
                declared `async def`).
        """
        loop = asyncio.get_running_loop()
        returned = loop.create_future()
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
            result = await anyio.to_thread.run_sync(call, limiter=self._limiter)
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
                f"{name_of(fn)} is not a coroutine function, so it ran in a worker "
                "thread, but it returned an awaitable; declare it 'async def'"
            )
        return result

    async def run_in_process(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run a blocking call in the process pool and wait for it.

        As with threads, a call that is already running in a process cannot
        be interrupted: a cancelled job is waited for, then the cancellation
        is re-raised. A call still waiting in the pool is withdrawn.
        """
        pool = self._pool
        assert pool is not None
        done = pool.submit(functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.wrap_future(done)
        except asyncio.CancelledError:
            # wrap_future passed the cancellation on: it withdraws a call still
            # waiting in the pool, and cannot stop one already running.
            if not done.cancelled():
                await wait_through_cancellation(asyncio.wrap_future(done))
            raise
        except BrokenProcessPool:
            self._renew(pool)
            raise


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
