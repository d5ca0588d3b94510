"""The exceptions asyncpool raises: one module, one hierarchy under AsyncPoolError."""

from __future__ import annotations

__all__ = ("AsyncPoolError", "DispatcherClosed", "JobTimeout", "QueueFull")


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
