"""The exceptions asyncpool raises: one module, one hierarchy under AsyncPoolError."""

from __future__ import annotations

__all__ = ("AsyncPoolError", "DispatcherClosed", "JobTimeout", "QueueFull", "RemoteJobError")


class AsyncPoolError(Exception):
    """Base class of every error that asyncpool itself raises.

    Errors raised *by jobs* are never wrapped: a job's own exception reaches its
    handle unchanged.
    """


class QueueFull(AsyncPoolError):
    """Raised by `Dispatcher.submit_nowait` when the job queue has no room.

    `await Dispatcher.submit(...)` never raises it: it waits for room instead.
    """


class DispatcherClosed(AsyncPoolError):
    """Raised when a dispatcher cannot take the call in its current state.

    `submit`, `submit_nowait` and iterating `map` raise it when the
    dispatcher is not running (not started yet, closing, or closed); the
    message says which. `resize` raises it too. `start`
    raises it for a dispatcher that has already run, since a dispatcher runs
    once.
    """


class JobTimeout(AsyncPoolError, TimeoutError):
    """A job ran longer than its time limit and was cancelled.

    A job's handle fails with it when the job runs longer than its `timeout`
    (per job, or the dispatcher's default); the job was cancelled. It is a
    `TimeoutError` too, so `except TimeoutError` catches it. Its `__cause__`
    is the `TimeoutError` of the time limit, whose cause is the cancellation
    that stopped the job.
    """


class RemoteJobError(AsyncPoolError):
    """A remote job failed on a worker, or could not run there.

    Awaiting a `RemoteHandle` raises it when the job's last attempt failed
    (unless the job's own exception class was registered with
    `broker.register_error`, which rebuilds that exception instead), or when
    the job became a dead letter without running: its task name unknown to
    the worker, its payload undecodable, or every delivery lost to workers
    that died.

    Attributes:
        job_id: The remote job's id.
        type_name: The remote exception's qualified type name, such as
            "builtins.ValueError" (for a refused job it ends in
            "UnknownTask", "PayloadError" or "DeliveriesExhausted").
        message: `str()` of the remote exception.
        traceback: The remote traceback, as text ("" when there is none);
            it is also attached as a note, so it shows when the error is printed.
        attempts: How many times the job started.
        state: "failed" (it ran and failed) or "dead" (it was refused).
    """

    def __init__(
        self,
        job_id: str,
        type_name: str,
        message: str,
        traceback: str = "",
        attempts: int = 0,
        state: str = "failed",
    ) -> None:
        super().__init__(f"{type_name}: {message} (remote job {job_id}, {attempts} attempt(s))")
        self.job_id = job_id
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.attempts = attempts
        self.state = state
        if traceback:
            self.add_note(f"Remote traceback (job {job_id}):\n{traceback.rstrip()}")
