"""A dispatcher's life: start, join, close, abandon, fail_fast, and the shutdown report.

A dispatcher runs once: NEW, then RUNNING (it accepts jobs), then CLOSING
(it does not; what is left finishes or is cancelled), then CLOSED (no task
of it runs, every handle is final). `Lifecycle` owns the moves between
those states and the task that hosts the workers' `asyncio.TaskGroup` (the
seed's WaitGroup); the core does the work each move asks for.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, Any

from ._classify import Classifier
from ._core import Core
from ._errors import DispatcherClosed
from ._executors import Executors
from ._reporting import logger
from ._stats import ShutdownReport
from ._waits import wait_through_cancellation

if TYPE_CHECKING:
    from ._handle import JobHandle

__all__ = ("Lifecycle", "State")

_MIN_GRACE = 0.1  # seconds close(timeout=...) waits at least for cancelled jobs to stop


class State(enum.Enum):
    """Where a dispatcher is in its one life; the value is how messages say it."""

    NEW = "not started"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


def _by_id(handle: JobHandle[Any]) -> int:
    return handle.id


class Lifecycle:
    """Starts and stops one dispatcher's tasks, and says what state it is in."""

    __slots__ = (
        "state",
        "shutdown_report",
        "_core",
        "_classifier",
        "_executors",
        "_label",
        "_fail_fast",
        "_runner",
        "_body_task",
        "_body_cancel_requested",
        "_errors_raised",
    )

    def __init__(
        self,
        core: Core,
        classifier: Classifier,
        executors: Executors,
        *,
        label: str,
        fail_fast: bool,
    ) -> None:
        self.state = State.NEW
        self.shutdown_report: ShutdownReport | None = None
        """The report of the last close(); None before."""
        self._core = core
        self._classifier = classifier
        self._executors = executors
        self._label = label
        self._fail_fast = fail_fast
        self._runner: asyncio.Task[None] | None = None
        self._body_task: asyncio.Task[Any] | None = None
        self._body_cancel_requested = False
        self._errors_raised = False
        core.on_fail_fast = self.abort

    # ------------------------------------------------------------ messages

    def closed_error(self) -> DispatcherClosed:
        """The error for a submit now that the dispatcher does not accept jobs."""
        state = self.state
        if state is State.NEW:
            hint = ": use 'async with Dispatcher(...)' or 'await dispatcher.start()' first"
        elif self._core.errors:
            hint = ": a job failed and fail_fast=True stopped it"
        else:
            hint = ""
        return DispatcherClosed(f"cannot submit: {self._label} is {state.value}{hint}")

    def refuse_from_own_job(self, method: str) -> None:
        """A job (or a task it started) waiting for every job would wait for itself: refuse."""
        if self._core.called_from_own_job():
            raise RuntimeError(
                f"{method}() called from a job of {self._label} (or a task one of its jobs "
                f"started): it would wait for that job itself, for ever; call {method}() "
                "from outside the dispatcher's jobs"
            )

    # ------------------------------------------------------------ starting

    async def start(self) -> None:
        """Start the workers and the dispatcher loop; return when jobs are accepted."""
        if self.state is not State.NEW:
            if self.state is State.RUNNING:
                raise RuntimeError(f"{self._label} is already running")
            raise DispatcherClosed(
                f"{self._label} is {self.state.value}; a dispatcher runs once: make a new one"
            )
        loop = asyncio.get_running_loop()
        self._executors.start()
        self._core.start(loop)
        ready: asyncio.Future[None] = loop.create_future()
        self.state = State.RUNNING
        self._classifier.start_accepting()
        self._runner = loop.create_task(self._run(ready), name=f"{self._label} runner")
        try:
            await ready
        except asyncio.CancelledError:
            self._runner.cancel()
            raise

    def entered(self) -> None:
        """`async with` began: the current task is the body fail_fast may cancel."""
        self._body_task = asyncio.current_task()

    async def _run(self, ready: asyncio.Future[None]) -> None:
        # The runner task hosts the TaskGroup, so that start() and close()
        # may be called from different tasks (frameworks do that).
        runner = asyncio.current_task()
        assert runner is not None
        try:
            async with asyncio.TaskGroup() as group:
                self._core.spawn_all(group, runner, self._label)
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
            # Whatever way the runner ended, every handle ends final and
            # nobody is left waiting on the dispatcher.
            self._core.tear_down()
            self._leave_running(State.CLOSED)
            # Every job is final, so the processes are idle: wait for them to
            # exit, so that none outlives the dispatcher.
            await self._executors.shutdown()

    # ------------------------------------------------------------ stopping

    def _leave_running(self, state: State) -> None:
        """Enter a state after RUNNING; submit's fast paths stop matching, so the
        next submit is refused, and whoever waits for room or for free workers
        is woken to be told."""
        self.state = state
        self._classifier.stop_accepting()
        self._core.stop_accepting()

    def stop_accepting(self) -> None:
        if self.state is State.RUNNING:
            self._leave_running(State.CLOSING)

    def cancel_all(self) -> None:
        """Cancel every queued and running job (the running ones are asked to stop)."""
        core = self._core
        core.begin_cancelling()
        core.cancel_queued_jobs()
        for _, handle in core.running():
            if not handle._cancel_requested:
                core.casualties.interrupted.append(handle)
                handle.cancel()

    def abort(self) -> None:
        """fail_fast: stop accepting, cancel every job, and cancel the body."""
        self.stop_accepting()
        self.cancel_all()
        body = self._body_task
        if body is not None and not body.done() and not self._body_cancel_requested:
            self._body_cancel_requested = True
            body.cancel()

    async def join(self) -> None:
        """Wait until every job submitted so far has finished."""
        self.refuse_from_own_job("join")
        await self._join()

    async def _join(self) -> None:
        submitted, finished, unfinished = self._core.counts()
        if submitted == finished:
            return
        await self._core.join_waiters().wait(submitted, unfinished)

    async def close(self, *, cancel: bool, timeout: float | None) -> ShutdownReport:
        """`Dispatcher.close`, its arguments checked."""
        self.refuse_from_own_job("close")
        report = await self._close(cancel=cancel, timeout=timeout)
        errors = self._core.errors
        if errors and not self._errors_raised:
            self._errors_raised = True
            raise BaseExceptionGroup(f"{self._label} stopped on job failure", errors)
        return report

    async def _close(self, *, cancel: bool, timeout: float | None = None) -> ShutdownReport:
        if self._core.casualties.abandoned:
            # An earlier close() gave up on a job that does not stop; waiting
            # for the runner now would wait for that job after all.
            return self.shutdown_report or self._make_report()
        if self.state is State.NEW:
            self.state = State.CLOSED
        runner = self._runner
        if runner is None:
            return self._make_report()
        self.stop_accepting()
        core = self._core
        try:
            if cancel:
                self.cancel_all()
            elif timeout is None:
                await self._join()
            else:
                try:
                    async with asyncio.timeout(timeout):
                        await self._join()
                except TimeoutError:
                    self.cancel_all()
            core.stop_workers()
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
            self.cancel_all()
            core.stop_workers()
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
        core = self._core
        for task, _ in core.running():
            task.cancel()
        done, _ = await asyncio.wait((runner,), timeout=grace / 2)
        stuck = [handle for _, handle in core.running()]
        if done or not stuck:
            return True  # only the teardown is left to wait for
        casualties = core.casualties
        for handle in stuck:
            if not handle.done():
                # close() stops waiting for a running job that ignores cancellation.
                casualties.abandoned.append(handle)
                if handle not in casualties.interrupted:  # the user had cancelled it already
                    casualties.interrupted.append(handle)
                core.finish_cancelled(
                    handle, "abandoned by close(): the job did not stop when cancelled"
                )
        abandoned = casualties.abandoned
        logger.error(
            "%s: close(timeout=%g) gave up on %d job(s) that did not stop when cancelled "
            "(they run on, unowned): %s",
            self._label,
            timeout,
            len(abandoned),
            ", ".join(repr(h) for h in abandoned),
        )
        self._leave_running(State.CLOSED)
        return False

    def _make_report(self) -> ShutdownReport:
        casualties = self._core.casualties
        report = ShutdownReport(
            never_started=tuple(sorted(casualties.never_started, key=_by_id)),
            # A job that swallowed its cancellation and finished was not interrupted.
            interrupted=tuple(
                sorted((h for h in casualties.interrupted if h.cancelled()), key=_by_id)
            ),
            abandoned=tuple(sorted(casualties.abandoned, key=_by_id)),
            undelivered=tuple(sorted(casualties.undelivered, key=_by_id)),
        )
        self.shutdown_report = report
        return report

    # ------------------------------------------------------------ async with

    async def exit(self, exc_type: type[BaseException] | None, exc: BaseException | None) -> None:
        """`async with` exit: join and close, or cancel everything (see `Dispatcher`)."""
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
            self.stop_accepting()
            self.cancel_all()
        while True:
            try:
                await self._close(cancel=False)
                break
            except asyncio.CancelledError as cancelled:
                propagate_cancel = cancelled
                self.abort()
        if self._body_cancel_requested:
            self._body_cancel_requested = False
            assert self._body_task is not None
            if self._body_task.uncancel() == 0:
                propagate_cancel = None
        # Failures that close() already raised (a framework closed the
        # dispatcher from another task) are not raised a second time.
        errors = [] if self._errors_raised else list(self._core.errors)
        for error in errors:
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise error
        if propagate_cancel is not None and not errors:
            raise propagate_cancel
        if exc is not None and exc_type is not asyncio.CancelledError:
            errors.append(exc)
        if errors:
            self._errors_raised = True
            raise BaseExceptionGroup(f"unhandled errors in {self._label}", errors) from None
