"""The narrow interfaces between asyncpool's parts, as `Protocol`s.

Each says what one collaborator may call on another, and nothing more:

* `HandleOwner`: what a `JobHandle` may ask of the core that owns its job
  (cancel it while it is queued; say that a task waits for it while it is
  queued; name the dispatcher);
* `MapHost`: what `map` and `as_completed` may ask of a dispatcher (two of
  its calls are private to the package, hence their underscores);
* `JobObserver`: what a job source (a broker consumer) is told about each
  job it fed in: when a try starts, and when the job has ended.

This module imports nothing of asyncpool at run time, so every layer may
depend on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher
    from ._errors import DispatcherClosed
    from ._handle import JobHandle

__all__ = ("HandleOwner", "JobObserver", "MapHost")


class HandleOwner(Protocol):
    """The core, as a `JobHandle` sees it."""

    @property
    def dispatcher(self) -> Dispatcher:
        """The public dispatcher the job was submitted to."""
        ...

    def cancel_queued(self, handle: JobHandle[Any], msg: Any) -> None:
        """Cancel a job that has not started (or waits to be retried): it never runs."""
        ...

    def waiting_on_queued(self, handle: JobHandle[Any]) -> None:
        """The current task starts waiting for `handle`, a job that has not started."""
        ...


class MapHost(Protocol):
    """A dispatcher, as `map` sees it."""

    @property
    def running(self) -> bool: ...

    @property
    def workers(self) -> int: ...

    async def submit(self, target: Any, /, *args: Any, **kwargs: Any) -> JobHandle[Any]: ...

    def _closed_error(self) -> DispatcherClosed:
        """The error `submit` raises now that the dispatcher does not accept jobs."""
        ...

    def _cut_short(self, handle: JobHandle[Any]) -> None:
        """A map cut short by a cancellation drops `handle`: list it in the next report."""
        ...

    def _cut_short_unsubmitted(
        self, fn: Callable[[Any], Any], item: Any, job_options: dict[str, Any]
    ) -> None:
        """A map cut short while `fn(item)` waited for room: list it as never started."""
        ...

    def _report(self, handle: JobHandle[Any], exc: BaseException) -> None:
        """Report a failure nobody will see otherwise (`on_error`, or the log)."""
        ...


class JobObserver(Protocol):
    """Told what becomes of the jobs a job source feeds into a dispatcher.

    A broker consumer implements it to extend a job's lease while it runs,
    and to acknowledge it, retry it, or hand it back when it has ended. Both
    calls are made on the event loop and must not block or raise.
    """

    def job_started(self, handle: JobHandle[Any]) -> None:
        """A try of the job starts now (`handle.attempts` counts it)."""
        ...

    def job_ended(self, handle: JobHandle[Any]) -> None:
        """The job is final: succeeded, failed or cancelled (`handle.state` says which;
        `handle.attempts == 0` means it never started)."""
        ...
