"""Remote handles and the facts a running remote job can read about itself.

`RemoteHandle[T]` is what `broker.submit` returns: awaitable for the job's
result (or its error, or `CancelledError`), wherever the job runs. Its
broker resolves it when the job's terminal record appears (a watch, not a
poll). `broker.handle(job_id)` re-attaches one from any process.

`current_job()` tells a job that runs on a worker which job and which
attempt it is: at-least-once delivery means a job may run again after its
worker died, and it should be able to tell.

Errors travel as plain records (`error_record`), and come back as the job's
own exception class when that class was registered as safe to rebuild
(`ErrorTypes`), or as `RemoteJobError` otherwise.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import traceback
from collections.abc import Generator
from typing import Any, Generic, Protocol, TypeVar

from ._envelope import Outcome
from ._errors import RemoteJobError
from ._job import JobState

__all__ = ("ErrorTypes", "JobInfo", "RemoteHandle", "current_job", "error_record")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class JobInfo:
    """Which remote job is running, and which attempt this is.

    Attributes:
        id: The job id (the same in every attempt).
        task: The registered task name.
        attempt: 1 on the first delivery; more after a retry or after the
            worker that held it died (the broker's delivery count).
        max_deliver: The most deliveries the job may have.
    """

    id: str
    task: str
    attempt: int
    max_deliver: int


_current: contextvars.ContextVar[JobInfo | None] = contextvars.ContextVar(
    "asyncpool_remote_job", default=None
)


def current_job() -> JobInfo:
    """The remote job this code runs in.

    Raises:
        LookupError: not called from inside a job a broker delivered.
    """
    info = _current.get()
    if info is None:
        raise LookupError("current_job() is only known inside a job a broker delivered")
    return info


def set_current_job(info: JobInfo) -> None:
    """Mark the running context as `info`'s (called as a remote job starts)."""
    _current.set(info)


def error_record(exc: BaseException, codec_safe_args: bool = True) -> dict[str, Any]:
    """An exception as a plain record: type name, message, traceback text, arguments."""
    kind = type(exc)
    args = [a for a in exc.args if isinstance(a, (str, int, float, bool, type(None)))]
    return {
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
        "args": args if codec_safe_args and len(args) == len(exc.args) else None,
    }


class ErrorTypes:
    """Exception classes registered as safe to rebuild from a remote failure."""

    __slots__ = ("_types",)

    def __init__(self) -> None:
        self._types: dict[str, type[BaseException]] = {}

    def add(self, cls: type[BaseException]) -> None:
        """Rebuild `cls` (by its qualified name) from remote failures.

        Raises:
            TypeError: `cls` is not an exception class.
        """
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            raise TypeError(f"register_error() takes an Exception subclass, got {cls!r}")
        self._types[f"{cls.__module__}.{cls.__qualname__}"] = cls

    def rebuild(self, job_id: str, outcome: Outcome) -> BaseException:
        """The exception a failed or dead job's awaiter gets."""
        error = outcome.error or {}
        type_name = str(error.get("type", "Error"))
        message = str(error.get("message", ""))
        text = str(error.get("traceback", ""))
        remote = RemoteJobError(job_id, type_name, message, text, outcome.attempts, outcome.state)
        cls = self._types.get(type_name)
        args = error.get("args")
        if cls is not None and isinstance(args, list):
            try:
                rebuilt = cls(*args)
            except Exception:
                return remote
            rebuilt.__cause__ = remote
            return rebuilt
        return remote


class OutcomeSource(Protocol):
    """What a `RemoteHandle` asks of its broker."""

    async def _cancel_remote(self, job_id: str) -> bool: ...

    async def _attach(self, job_id: str) -> None: ...

    def _rebuild_error(self, job_id: str, outcome: Outcome) -> BaseException: ...


class RemoteHandle(Generic[T]):
    """A job submitted to a broker, wherever it runs: await it for its result.

    ```python
    handle = await broker.submit(resize, "a.png")
    size = await handle          # the result, the job's error, or CancelledError
    ```

    Attributes:
        id: The job id: pass it to `broker.handle(id)` in another process to
            wait for the same job there.
    """

    __slots__ = ("id", "_source", "_future")

    def __init__(self, job_id: str, source: OutcomeSource, future: asyncio.Future[Outcome]) -> None:
        self.id = job_id
        self._source = source
        self._future = future

    @property
    def outcome(self) -> Outcome | None:
        """The job's terminal record, once it is known."""
        future = self._future
        if future.done() and not future.cancelled() and future.exception() is None:
            return future.result()
        return None

    @property
    def _outcome(self) -> Outcome | None:
        return self.outcome

    @property
    def state(self) -> JobState:
        """`QUEUED` until the job's end is known (it may be running on a worker), then its end."""
        outcome = self._outcome
        if outcome is None:
            return JobState.QUEUED
        if outcome.state == "succeeded":
            return JobState.SUCCEEDED
        if outcome.state == "cancelled":
            return JobState.CANCELLED
        return JobState.FAILED

    @property
    def attempts(self) -> int:
        """How many times the job started (0 until its end is known)."""
        return 0 if self._outcome is None else self._outcome.attempts

    def done(self) -> bool:
        """Whether the job's end is known."""
        return self._outcome is not None

    async def cancel(self) -> bool:
        """Cancel the job: a queued one never runs, a running one is cancelled on its worker.

        Returns:
            True if the job now ends cancelled; False if it had already
            ended (its record was written first).
        """
        if self._outcome is not None:
            return self._outcome.state == "cancelled"
        return await self._source._cancel_remote(self.id)

    def result(self) -> T:
        """The result of a finished job (raises as awaiting would).

        Raises:
            asyncio.InvalidStateError: the job's end is not known yet.
        """
        outcome = self._outcome
        if outcome is None:
            raise asyncio.InvalidStateError(f"remote job {self.id} has not finished")
        if outcome.state == "succeeded":
            value: T = outcome.value
            return value
        if outcome.state == "cancelled":
            raise asyncio.CancelledError(f"remote job {self.id} was cancelled")
        raise self._source._rebuild_error(self.id, outcome)

    def __await__(self) -> Generator[Any, None, T]:
        yield from self._source._attach(self.id).__await__()
        # Shielded: one awaiter giving up must not cancel the others' wait.
        yield from asyncio.shield(self._future).__await__()
        return self.result()

    def __repr__(self) -> str:
        return f"<RemoteHandle {self.id} {self.state.name.lower()}>"
