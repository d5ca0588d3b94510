"""Where failures nobody waits for go: the `on_error` hook, or the `"asyncpool"` logger.

No failure is silent and none is reported twice: the core hands a failure
here only when nobody was waiting on the job's handle when it failed, and
`map` and `as_completed` hand over the failures they took responsibility
for and their consumer never looked at.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._handle import JobHandle

__all__ = ("Reporter", "logger")

logger = logging.getLogger("asyncpool")

OnError = Callable[["JobHandle[Any]", BaseException], object]


class Reporter:
    """Reports a dispatcher's failures: through `on_error`, or to the log."""

    __slots__ = ("label", "_on_error")

    def __init__(self, label: str, on_error: OnError | None) -> None:
        self.label = label
        """How log lines name the dispatcher: `Dispatcher 'name'`."""
        self._on_error = on_error

    def report(self, handle: JobHandle[Any], exc: BaseException) -> None:
        """Report a job's failure that nobody else will see."""
        hook = self._on_error
        if hook is None:
            logger.error("%s: job %r failed", self.label, handle, exc_info=exc)
            return
        try:
            hook(handle, exc)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as hook_exc:
            # The hook must not kill a worker (not even with a stray
            # CancelledError), and the job's failure must not vanish with it:
            # log both.
            logger.error("%s: job %r failed", self.label, handle, exc_info=exc)
            logger.error("%s: on_error hook %r raised", self.label, hook, exc_info=hook_exc)

    def abandoned_job_ended(self, handle: JobHandle[Any], error: BaseException | None) -> None:
        """A job that close() gave up on has ended at last: say how, since nobody can await it."""
        if error is None or isinstance(error, asyncio.CancelledError):
            logger.warning("%s: abandoned job %r has stopped", self.label, handle)
        else:
            logger.error(
                "%s: abandoned job %r has stopped with an error",
                self.label,
                handle,
                exc_info=error,
            )
