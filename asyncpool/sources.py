"""Feeding a dispatcher from a job source: a broker consumer, a database queue, a socket.

`Dispatcher.submit` is one way in; an `Intake` is the other. A source asks
the dispatcher how many workers are free, fetches that many jobs, and puts
them in, each with a `JobObserver` that is told when the job starts and
when it has ended:

```python
from asyncpool.sources import Intake, JobObserver


class Lease:  # a JobObserver
    def __init__(self, message) -> None:
        self.message = message

    def job_started(self, handle) -> None:
        ...  # extend the message's lease while the job runs

    def job_ended(self, handle) -> None:
        ...  # ack it, or hand it back if handle.attempts == 0


async def consume(dispatcher, queue) -> None:
    async with dispatcher.intake() as intake:
        while True:
            free = await intake.capacity()
            for message in await queue.fetch(free):
                intake.put(handle_message, message.body, observer=Lease(message))
```

This submodule is never imported by `asyncpool` itself.
"""

from __future__ import annotations

from ._intake import Intake
from ._ports import JobObserver

__all__ = ("Intake", "JobObserver")
