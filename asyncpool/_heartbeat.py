"""`Heartbeat`: a broker worker's status, written every second while it serves.

What a status holds is `asyncpool._status.WorkerStatus`; this module builds
it from the worker's parts (its dispatcher's counters, its `serve()`
counters, the jobs it holds, its `JobLog`) and keeps it fresh in the broker,
which forgets it `STATUS_TTL` seconds after the last write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Container
from typing import TYPE_CHECKING

from ._joblog import JobLog
from ._status import STATUS_PERIOD, STATUS_TTL, WorkerStatus

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher
    from ._transport import Transport

__all__ = ("RECENT", "Heartbeat")

logger = logging.getLogger("asyncpool")

RECENT = 50
"""How many finished jobs a worker's status lists."""

_COUNTERS = (
    "workers",
    "idle",
    "busy",
    "queued",
    "submitted",
    "succeeded",
    "failed",
    "cancelled",
    "retried",
    "timed_out",
)


class Heartbeat:
    """Writes one worker's status while it serves, and removes it when it stops."""

    def __init__(
        self,
        transport: Transport,
        worker: str,
        dispatcher: Dispatcher,
        log: JobLog,
        served: Callable[[], dict[str, int]],
        held: Callable[[], Container[str]],
    ) -> None:
        self._transport = transport
        self._worker = worker
        self._dispatcher = dispatcher
        self._log = log
        self._served = served
        self._held = held
        self._started_at = time.time()

    def status(self) -> WorkerStatus:
        """This worker now."""
        stats = self._dispatcher.stats()
        held = self._held()
        records = self._log.records(limit=RECENT * 4)
        return WorkerStatus(
            worker=self._worker,
            at=time.time(),
            started_at=self._started_at,
            dispatcher=self._dispatcher.name or "",
            stats={name: getattr(stats, name) for name in _COUNTERS},
            serve=self._served(),
            running=[r for r in records if r.id in held],
            recent=[r for r in records if r.id not in held][:RECENT],
        )

    async def run(self) -> None:
        """Write the status every `STATUS_PERIOD` seconds, until cancelled."""
        failing = False
        while True:
            try:
                await self._transport.put_status(self._worker, self.status().encode(), STATUS_TTL)
            except Exception as exc:
                # The dashboard misses a beat; serving goes on. Said once
                # per spell of failures, not every second.
                if not failing:
                    logger.warning("asyncpool: could not write the worker status: %s", exc)
                failing = True
            else:
                failing = False
            await asyncio.sleep(STATUS_PERIOD)

    async def stop(self) -> None:
        """Take this worker off the dashboard as it stops (else its status expires)."""
        try:
            await self._transport.drop_status(self._worker)
        except Exception as exc:
            logger.warning("asyncpool: could not remove the worker status: %s", exc)
