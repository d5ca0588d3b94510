"""Waiting that a cancellation cannot cut short.

Structured concurrency means a task that started something waits for it to
end, even while the task itself is being cancelled: the worker waits for
its thread, `close()` waits for the dispatcher's tasks. This is the one
helper for that wait.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ("wait_through_cancellation",)


async def wait_through_cancellation(future: asyncio.Future[Any]) -> None:
    """Wait for `future` to finish, through any number of cancellations.

    The caller re-raises the cancellation afterwards; further cancel requests
    stay counted on the task (`Task.cancelling()`) for whoever cares.
    """
    while not future.done():
        try:
            await asyncio.wait((future,))  # never cancels `future`, never raises its error
        except asyncio.CancelledError:
            continue
    if not future.cancelled():
        future.exception()  # retrieved: the outcome is discarded on purpose
