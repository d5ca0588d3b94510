"""`JobHandle`: the future a submitter gets back, with the job's facts on top."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import Context
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._job import JOB_ON_LOOP, JobState

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher
    from ._options import JobOptions
    from ._ports import HandleOwner

__all__ = ("JobHandle",)

T = TypeVar("T")

_future_add_done_callback = asyncio.Future.add_done_callback
_QUEUED = JobState.QUEUED


class JobHandle(asyncio.Future[T], Generic[T]):
    """The handle of one submitted job: an `asyncio.Future` of its result.

    Being a real future, a handle goes straight into `asyncio.wait`,
    `asyncio.wait_for`, `asyncio.gather`, `asyncio.shield` and
    `asyncio.as_completed`. Awaiting it behaves like awaiting an
    `asyncio.Task`: it returns the job's result, raises the job's exception,
    or raises `asyncio.CancelledError` if the job was cancelled. Like a task,
    a handle awaited by a task that gets cancelled is cancelled with it; wrap
    it in `asyncio.shield` to keep the job running.

    Handles are made by `Dispatcher.submit`; their results are set by the
    dispatcher only (`set_result` and `set_exception` raise `RuntimeError`).

    Attributes:
        id: The job's number: 1 for the first job a dispatcher accepts, then
            2, 3, ... in submission order.
    """

    # Slots keep the per-job cost down: a handle is made for every job. The
    # core sets them (asyncpool/_core.py); each is set before it is read in
    # the states where it is read (`_started_at` from the first start on, or
    # when the job is cancelled unstarted), so no fact is encoded by whether
    # a slot is set: the state says which slots mean something.
    __slots__ = (
        "_owner",
        "_job_state",
        "_mode",
        "_fn",
        "_args",
        "_kwargs",
        "_worker_task",
        "_cancel_requested",
        "_handed_over",
        "_queued_at",
        "_started_at",
        "_finished_at",
        "_opts",
        "id",
    )

    _owner: HandleOwner
    _job_state: JobState
    _mode: int  # a run mode of asyncpool._job
    _fn: Any
    _args: tuple[Any, ...]
    _kwargs: dict[str, Any] | None
    _worker_task: asyncio.Task[Any] | None  # set when a try starts
    _cancel_requested: bool  # set when a try starts
    _handed_over: bool  # in a worker's inbox, not started yet
    _queued_at: float
    _started_at: float | None  # the latest try's start (None once cancelled unstarted)
    _finished_at: float  # set on reaching a final state
    _opts: JobOptions | None  # None for a job without per-job options
    id: int

    @property
    def state(self) -> JobState:
        """The job's current `JobState` (QUEUED, RUNNING, or a final state)."""
        return self._job_state

    @property
    def attempts(self) -> int:
        """How many times the job has been started: 0 before its first try, then 1,
        and one more for each retry."""
        opts = self._opts
        if opts is not None:
            return opts.tries  # jobs with options may be retried: they count their tries
        if self._job_state is JobState.QUEUED:
            return 0
        return 0 if self._started_at is None else 1  # a job without options runs once

    @property
    def queued_at(self) -> float:
        """When the dispatcher accepted the job, on the event loop's clock (`loop.time()`)."""
        return self._queued_at

    @property
    def started_at(self) -> float | None:
        """When a worker started the job (its latest try), on the loop's clock; None before that."""
        return self._started_at if self.attempts else None

    @property
    def finished_at(self) -> float | None:
        """When the job reached a final state, on the loop's clock; None before that."""
        return self._finished_at if self._job_state.is_final else None

    @property
    def fn(self) -> Any:
        """What the worker calls: the function, or a `Job`'s bound `process` method.

        For a job submitted as a coroutine object, the coroutine object. With
        `args` and `kwargs`, enough to submit the job again, for example from
        a `ShutdownReport`: `dispatcher.submit(handle.fn, *handle.args,
        **handle.kwargs)` (a coroutine object cannot be run twice).
        """
        fn = self._fn
        if self._mode == JOB_ON_LOOP:
            # The handle keeps the Job itself (see `Dispatcher.submit`).
            return getattr(fn, "process", fn)
        return fn

    @property
    def args(self) -> tuple[Any, ...]:
        """The positional arguments the job was submitted with."""
        return self._args

    @property
    def kwargs(self) -> dict[str, Any]:
        """A copy of the keyword arguments the job was submitted with (options excluded)."""
        return dict(self._kwargs or {})

    @property
    def options(self) -> dict[str, Any]:
        """The per-job options the job runs with: `timeout`, `retry`, `priority`, `key`.

        Only those that are set (a dispatcher's default counts), so that
        `submit(handle.fn, *handle.args, **handle.kwargs, **handle.options)`
        submits the same job again. A default the job turned off shows as
        `timeout: None` or `retry: None`, so that it stays off. Empty for a
        job without options.
        """
        opts = self._opts
        if opts is None:
            return {}
        found: dict[str, Any] = {}
        if opts.timeout is not None or opts.timeout_off:
            found["timeout"] = opts.timeout
        if opts.retry is not None or opts.retry_off:
            found["retry"] = opts.retry
        if opts.priority:
            found["priority"] = opts.priority
        if opts.key is not None:
            found["key"] = opts.key
        return found

    def _was_handed_over(self) -> bool:
        return self._handed_over

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher that owns this job."""
        return self._owner.dispatcher

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel the job.

        A queued job is removed: it never runs, and the handle is cancelled at
        once. A running job's coroutine sees `asyncio.CancelledError` at its
        next `await`, and the handle is cancelled when the job has stopped (a
        job that swallows the cancellation finishes normally, as a task would).
        A job running in a thread cannot be interrupted: its handle is
        cancelled when the thread returns, and its result is discarded. The
        worker survives either way and takes the next job.

        Returns:
            False if the job had already finished; True otherwise.
        """
        if self.done():
            return False
        if self._job_state is JobState.QUEUED:
            # Not started yet (or waiting to be retried): it never runs.
            self._owner.cancel_queued(self, msg)
            return True
        if not self._cancel_requested:
            self._cancel_requested = True
            task = self._worker_task
            assert task is not None  # a running job has its worker's task
            task.cancel(msg)
        return True

    def add_done_callback(
        self, fn: Callable[[JobHandle[T]], object], /, *, context: Context | None = None
    ) -> None:
        """As for any future; also how a job that waits for a job of its own dispatcher is seen.

        A task awaiting a handle that is not done registers its wake-up here.
        When that task is a worker running a job, and this job has not
        started yet, the dispatcher counts the worker as waiting for its own
        pool: if every worker waits so, the pool lends a spare worker, so
        that fork/join jobs (a job awaiting the jobs it submitted) never
        deadlock the pool. Done handles never get here when awaited.
        """
        _future_add_done_callback(self, fn, context=context)
        if self._job_state is _QUEUED:
            self._owner.waiting_on_queued(self)

    def set_result(self, result: Any, /) -> None:
        """Not for users: the dispatcher sets a handle's outcome.

        Raises:
            RuntimeError: always.
        """
        raise RuntimeError("JobHandle results are set by the dispatcher, not by callers")

    def set_exception(self, exception: Any, /) -> None:
        """Not for users: the dispatcher sets a handle's outcome.

        Raises:
            RuntimeError: always.
        """
        raise RuntimeError("JobHandle outcomes are set by the dispatcher, not by callers")

    def __repr__(self) -> str:
        fn = self._fn
        if self._mode == JOB_ON_LOOP:
            name = f"{type(fn).__qualname__}.process"  # no lookup on the Job: repr never raises
        else:
            name = getattr(fn, "__qualname__", None) or type(fn).__name__
        return f"<JobHandle id={self.id} {self._job_state.name} {name}>"
