"""`Heartbeat`: a broker worker's status, written every second while it serves.

What a status holds is `asyncpool._status.WorkerStatus`; this module builds
it from the worker's parts (its dispatcher's counters, its `serve()`
counters, the jobs it holds, its `JobLog`) and keeps it fresh in the broker,
which forgets it `STATUS_TTL` seconds after the last write.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from ._joblog import JobLog, JobRecord
from ._status import STATUS_PERIOD, STATUS_TTL, WorkerStatus

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher
    from ._transport import Transport

__all__ = ("RECENT", "Heartbeat")

logger = logging.getLogger("asyncpool")

RECENT = 50
"""How many finished jobs a worker's status lists."""

STATUS_BYTES = 256 * 1024
"""The most bytes a status may take (NATS refuses messages over its `max_payload`, 1 MiB
by default). A larger one is cut: tracebacks first, then arguments and results, then
the oldest of the recent jobs, then running jobs past what fits."""

_BRIEF = 200

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
        held: Callable[[], Collection[str]],
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
        log = self._log
        running = [r for r in map(log.find, held) if r is not None]
        # The newest jobs first; those held are listed as running.
        records = log.records(limit=RECENT + len(running))
        return WorkerStatus(
            worker=self._worker,
            at=time.time(),
            started_at=self._started_at,
            dispatcher=self._dispatcher.name or "",
            stats={name: getattr(stats, name) for name in _COUNTERS},
            serve=self._served(),
            running=running,
            recent=[r for r in records if r.id not in held][:RECENT],
        )

    def encoded(self) -> bytes:
        """This worker now, as it is written: at most `STATUS_BYTES` bytes."""
        status = self.status()
        data = status.encode()
        if len(data) <= STATUS_BYTES:
            return data
        status = dataclasses.replace(
            status,
            running=[_brief(r) for r in status.running],
            recent=[_brief(r) for r in status.recent],
        )
        data = status.encode()
        while len(data) > STATUS_BYTES and (status.recent or status.running):
            if status.recent:
                status = dataclasses.replace(
                    status, recent=status.recent[: len(status.recent) // 2]
                )
            else:
                status = dataclasses.replace(
                    status, running=status.running[: len(status.running) // 2]
                )
            data = status.encode()
        return data

    async def run(self, until: asyncio.Event) -> None:
        """Write the status every `STATUS_PERIOD` seconds, until cancelled or `until` is set.

        `until` ends it even if a cancellation is lost in a client library's
        wait (Python 3.11's `wait_for` can drop one that arrives as it ends).
        """
        failing = False
        while not until.is_set():
            try:
                await self._transport.put_status(self._worker, self.encoded(), STATUS_TTL)
            except Exception as exc:
                # The dashboard misses a beat; serving goes on. Said once
                # per spell of failures, not every second.
                if not failing:
                    logger.warning("asyncpool: could not write the worker status: %s", exc)
                failing = True
            else:
                failing = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STATUS_PERIOD):
                    await until.wait()

    async def stop(self) -> None:
        """Take this worker off the dashboard as it stops (else its status expires)."""
        try:
            await self._transport.drop_status(self._worker)
        except Exception as exc:
            logger.warning("asyncpool: could not remove the worker status: %s", exc)


def _brief(record: JobRecord) -> JobRecord:
    """`record` with its arguments and result cut short and no traceback (a status too large)."""

    def cut(text: str | None) -> str | None:
        if text is None or len(text) <= _BRIEF:
            return text
        return f"{text[:_BRIEF]}… (cut to fit the worker's status)"

    error = record.error
    if error is not None:
        error = {**error, "traceback": "(left out to fit the worker's status)"}
    return dataclasses.replace(
        record, args=cut(record.args) or "", result=cut(record.result), error=error
    )
