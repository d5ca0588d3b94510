"""The seam for job sources: jobs that come from somewhere other than `submit`.

A job source (a broker consumer, a database queue poller) feeds a running
dispatcher through an `Intake`:

* **where jobs come from**: `await intake.capacity()` waits until the
  dispatcher has free workers (workers no running or queued job accounts
  for) and grants the source that many places; `intake.put(...)` uses one
  place per job. So a source never holds more undelivered work than the
  dispatcher can start.
* **what happens when a job ends**: each job carries a `JobObserver`, told
  when each try starts (to extend a lease while it runs) and when the job
  is final (to acknowledge it, or to hand it back when it never started).

The hot path does not know about sources: a fed job carries per-job options
(its observer is one), so it takes the options path, which tells the
observer; the end is a done callback on its handle; and a waiting source
turns on the core's detour, which wakes it when a worker frees up.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._classify import close_if_coroutine
from ._core import Core
from ._errors import DispatcherClosed
from ._handle import JobHandle
from ._job import JobState
from ._options import JobOptions
from ._ports import JobObserver

if TYPE_CHECKING:
    from ._telemetry import Instrument, Origin

__all__ = ("Intake",)

Prepare = Callable[[object, tuple[Any, ...], dict[str, Any]], tuple[int, Any, JobOptions | None]]


class Intake:
    """A job source's way into one running dispatcher (`Dispatcher.intake()`).

    Use it as an async context manager: on exit, the jobs it fed that have
    not started are cancelled at once (their observers see them end with
    `attempts == 0`, so a broker hands them back), while running ones go on.

    ```python
    async with dispatcher.intake() as intake:
        while True:
            free = await intake.capacity()
            for message in await fetch(free):
                intake.put(run_task, message.data, observer=Lease(message))
    ```
    """

    __slots__ = ("_core", "_prepare", "_closed_error", "_running", "_granted", "_unfinished")

    def __init__(
        self,
        core: Core,
        prepare: Prepare,
        closed_error: Callable[[], DispatcherClosed],
        running: Callable[[], bool],
    ) -> None:
        self._core = core
        self._prepare = prepare
        self._closed_error = closed_error
        self._running = running
        self._granted = 0
        self._unfinished: set[JobHandle[Any]] = set()

    async def __aenter__(self) -> Intake:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.withdraw()

    @property
    def unfinished(self) -> frozenset[JobHandle[Any]]:
        """The jobs this intake fed that have not ended yet."""
        return frozenset(self._unfinished)

    async def capacity(self) -> int:
        """Wait until the dispatcher has free workers; grant and return how many.

        The grant replaces any earlier one: it is the number of `put` calls
        allowed until the next `capacity()`.

        Raises:
            DispatcherClosed: the dispatcher stopped accepting jobs (before
                or while waiting).
        """
        core = self._core
        while True:
            if not self._running():
                self._granted = 0
                raise self._closed_error()
            free = core.free_slots()
            if free > 0:
                self._granted = free
                return free
            await core.wait_for_free_slots()

    def put(
        self,
        target: Any,
        /,
        *args: Any,
        observer: JobObserver,
        origin: Origin | None = None,
        carrier: dict[str, str] | None = None,
        instruments: tuple[Instrument, ...] = (),
        **kwargs: Any,
    ) -> JobHandle[Any]:
        """Queue one job from the source, using one granted place; never waits.

        Takes what `submit` takes (per-job options included). The job is
        queued even if the job queue is full: the place was granted by
        `capacity()`, from the dispatcher's free workers.

        A remote job names itself to instruments by its `origin` (job id,
        task, lane, arguments as sent); its `carrier` is what its submitter captured (the
        dispatcher's instruments do not capture again), and `instruments`
        are told about it besides the dispatcher's own.

        Raises:
            RuntimeError: no place is granted (call `await capacity()` first).
            TypeError, ValueError: as `submit` raises them.
            DispatcherClosed: the dispatcher does not accept jobs.
        """
        if self._granted <= 0:
            close_if_coroutine(target)
            raise RuntimeError(
                "Intake.put() without a granted place: await intake.capacity() first, "
                "and put at most as many jobs as it returned"
            )
        mode, fn, opts = self._prepare(target, args, kwargs)
        if opts is None:
            opts = JobOptions(None, None, 0, None)  # the observer rides in the options
        opts.observer = observer
        if origin is not None:
            opts.origin = origin
            opts.carrier = carrier
            extra = tuple(i for i in instruments if i not in opts.instruments)
            opts.instruments += extra
        handle = self._core.enqueue(mode, fn, args, kwargs, opts, False)
        assert handle is not None
        self._granted -= 1
        self._unfinished.add(handle)
        handle.add_done_callback(self._ended)
        return handle

    def _ended(self, handle: JobHandle[Any]) -> None:
        self._unfinished.discard(handle)
        opts = handle._opts
        assert opts is not None
        assert opts.observer is not None
        opts.observer.job_ended(handle)

    def withdraw(self) -> list[JobHandle[Any]]:
        """Cancel the fed jobs that have not started; return them (oldest first).

        Their observers are told they ended with `attempts == 0`. Jobs
        running, or waiting to be retried, go on.
        """
        self._granted = 0
        unstarted = sorted(
            (h for h in self._unfinished if h.state is JobState.QUEUED and h.attempts == 0),
            key=lambda h: h.id,
        )
        for handle in unstarted:
            handle.cancel("handed back by its job source")
        return unstarted
