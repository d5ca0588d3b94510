"""`JobHandle`: the future a submitter gets back, with the job's facts on top."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._job import JOB_ON_LOOP, OPTIONED, JobState

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher
    from ._options import JobOptions

__all__ = ("JobHandle",)

T = TypeVar("T")


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

    # Slots keep the per-job cost down: a handle is made for every job.
    __slots__ = (
        "_dispatcher",
        "_job_state",
        "_how",
        "_fn",
        "_args",
        "_kwargs",
        "_worker_task",
        "_cancel_requested",
        "_handed_over",
        "_attempts",
        "_queued_at",
        "_started_at",
        "_finished_at",
        "_opts",
        "id",
    )

    _dispatcher: Dispatcher
    _job_state: JobState
    _how: int
    _fn: Any
    _args: tuple[Any, ...]
    _kwargs: dict[str, Any] | None
    _worker_task: asyncio.Task[Any] | None
    _cancel_requested: bool
    _handed_over: bool
    _attempts: int
    _queued_at: float
    _started_at: float
    _finished_at: float
    _opts: JobOptions  # set only when `_how >= OPTIONED`
    id: int

    @property
    def state(self) -> JobState:
        """The job's current `JobState` (QUEUED, RUNNING, or a final state)."""
        return self._job_state

    @property
    def attempts(self) -> int:
        """How many times the job has been started: 0 before its first try, then 1,
        and one more for each retry."""
        try:
            return self._attempts  # set for jobs with options, which count their tries
        except AttributeError:  # a job without options runs once
            return 1 if hasattr(self, "_started_at") else 0

    @property
    def queued_at(self) -> float:
        """When the dispatcher accepted the job, on the event loop's clock (`loop.time()`)."""
        return self._queued_at

    @property
    def started_at(self) -> float | None:
        """When a worker started the job (its latest try), on the loop's clock; None before that."""
        try:
            return self._started_at
        except AttributeError:
            return None

    @property
    def finished_at(self) -> float | None:
        """When the job reached a final state, on the loop's clock; None before that."""
        try:
            return self._finished_at
        except AttributeError:
            return None

    @property
    def fn(self) -> Any:
        """What the worker calls: the function, or a `Job`'s bound `process` method.

        For a job submitted as a coroutine object, the coroutine object. With
        `args` and `kwargs`, enough to submit the job again, for example from
        a `ShutdownReport`: `dispatcher.submit(handle.fn, *handle.args,
        **handle.kwargs)` (a coroutine object cannot be run twice).
        """
        fn = self._fn
        if self._how == JOB_ON_LOOP:
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
        submits the same job again. Empty for a job without options.
        """
        if self._how < OPTIONED:
            return {}
        opts = self._opts
        found = {
            "timeout": opts.timeout,
            "retry": opts.retry,
            "priority": opts.priority or None,
            "key": opts.key,
        }
        return {name: value for name, value in found.items() if value is not None}

    def _was_handed_over(self) -> bool:
        try:
            return self._handed_over
        except AttributeError:
            return False

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher that owns this job."""
        return self._dispatcher

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
        task: asyncio.Task[Any] | None = getattr(self, "_worker_task", None)
        if task is None:
            # Not started yet: remove it from the queue (lazily) and finish now.
            self._dispatcher._cancel_queued(self, msg)
            return True
        if not self._cancel_requested:
            self._cancel_requested = True
            task.cancel(msg)
        return True

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
        if self._how == JOB_ON_LOOP:
            name = f"{type(fn).__qualname__}.process"  # no lookup on the Job: repr never raises
        else:
            name = getattr(fn, "__qualname__", None) or type(fn).__name__
        return f"<JobHandle id={self.id} {self._job_state.name} {name}>"
