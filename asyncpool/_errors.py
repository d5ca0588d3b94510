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

    `submit` and `submit_nowait` raise it when the dispatcher is not running
    (not started yet, closing, or closed); the message says which. `start`
    raises it for a dispatcher that has already run, since a dispatcher runs
    once.
    """


class JobTimeout(AsyncPoolError, TimeoutError):
    """A job ran longer than its time limit and was cancelled.

    It is a `TimeoutError` too, so `except TimeoutError` catches it. Reserved
    for the per-job `timeout` option.
    """
