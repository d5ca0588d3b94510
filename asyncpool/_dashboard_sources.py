"""Where the dashboard's data comes from: the `Source` protocol, `LocalSource`, `BrokerSource`.

The pages ask a `Source` only: lanes, workers, jobs, dead letters, and the
three actions (cancel, requeue, delete). `LocalSource` answers for one
running `Dispatcher` from its `JobLog`; `BrokerSource` for an open broker,
from the server (lanes, dead letters) and the workers' heartbeats
(`broker.workers()`: their counters, the jobs they hold and finished
lately). Anything else that implements `Source` can be shown too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from ._codecs import Codec
from ._deadletters import DeadLetter
from ._joblog import JobLog, JobRecord

if TYPE_CHECKING:
    from ._broker import Broker
    from ._dispatcher import Dispatcher
    from ._status import WorkerStatus

__all__ = (
    "FORGET_AFTER",
    "RATE_WINDOW",
    "BrokerSource",
    "LaneRow",
    "LocalSource",
    "Source",
    "WorkerRow",
)

RATE_WINDOW: Final = 10.0
"""The seconds over which a lane's rate is taken."""

# Every open page polls each second; several pages share one read of the
# workers' heartbeats (written once a second anyway).
_STATUS_CACHE: Final = 0.5

FORGET_AFTER: Final = 900.0
"""How long a broker's finished count remembers a worker it no longer sees (seconds).

Longer than the chart's ten minutes, so a worker away for a moment is not
counted from a new baseline when it is back; not forever, so restarts
(each a new "host:pid") do not grow what is remembered without end.
"""


@dataclasses.dataclass(frozen=True, slots=True)
class LaneRow:
    """One lane of work.

    Attributes:
        name: The lane ("local" for a local pool; "high", "normal", "low",
            "keys" for a broker).
        waiting: Jobs not started yet.
        running: Jobs running (for a broker: delivered and not acknowledged).
        delayed: Jobs waiting out a retry's backoff, where that is known.
        rate: Jobs of the lane finished per second lately.
    """

    name: str
    waiting: int
    running: int
    delayed: int
    rate: float


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerRow:
    """One worker process (or the local pool).

    Attributes:
        name: Its name ("host:pid" for a broker worker).
        started_at: Since when it has been serving (seconds since the epoch).
        heartbeat_at: When it last told its state.
        workers: Its pool's size; `busy` and `idle` are of those.
        busy: Jobs running on it.
        idle: Workers not running a job.
        queued: Jobs it holds that have not started.
        succeeded: Jobs that succeeded on it.
        failed: Jobs that failed on it.
        cancelled: Jobs cancelled on it.
    """

    name: str
    started_at: float
    heartbeat_at: float
    workers: int
    busy: int
    idle: int
    queued: int
    succeeded: int
    failed: int
    cancelled: int

    @property
    def finished(self) -> int:
        """Jobs that ended on it, however they ended."""
        return self.succeeded + self.failed + self.cancelled


@runtime_checkable
class Source(Protocol):
    """What the dashboard reads and does; `LocalSource` and `BrokerSource` implement it."""

    @property
    def label(self) -> str:
        """What the pages call the pool (`Dispatcher 'api'`, a broker's repr)."""
        ...

    @property
    def keeps_dead_letters(self) -> bool:
        """Whether there are dead letters to show (a local pool has none)."""
        ...

    @property
    def codec(self) -> Codec | None:
        """The codec dead letters' payloads are decoded with, if any."""
        ...

    async def lanes(self) -> list[LaneRow]:
        """The lanes and how many jobs each holds."""
        ...

    async def workers(self) -> list[WorkerRow]:
        """The live workers."""
        ...

    async def finished(self) -> int:
        """A count of finished jobs that only grows (the throughput chart samples it)."""
        ...

    async def jobs(self, state: str | None = None, limit: int = 100) -> list[JobRecord]:
        """Recent jobs (in `state`, if given), newest first."""
        ...

    async def find_job(self, job_id: str) -> JobRecord | None:
        """What is known of one job, or None."""
        ...

    async def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; True if it now ends cancelled."""
        ...

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter, oldest first (none for a local pool)."""
        ...

    async def requeue(self, letter: DeadLetter) -> None:
        """Send a dead letter's job back to run.

        Raises:
            LookupError: the letter is gone already.
        """
        ...

    async def delete_dead_letter(self, letter: DeadLetter) -> None:
        """Remove a dead letter for good.

        Raises:
            LookupError: the letter is gone already.
        """
        ...


def lane_rate(records: list[JobRecord], lane: str, now: float) -> float:
    """Jobs of `lane` among `records` finished per second over `RATE_WINDOW`.

    A remote job's record names its lane as its delivery did (`Delivery.lane`:
    "high", "normal", "low", or "keys" for every key lane), which is the name
    `broker.lanes()` gives its row: the names are compared as they are.
    """
    since = now - RATE_WINDOW
    count = sum(
        1
        for r in records
        if r.finished_at is not None and r.finished_at >= since and r.lane == lane
    )
    return count / RATE_WINDOW


def _moment(record: JobRecord) -> float:
    """The latest time a record tells of its job (for newest-first order)."""
    return record.finished_at or record.started_at or record.queued_at or 0.0


class LocalSource:
    """A running local `Dispatcher`, with the `JobLog` it was given as an instrument."""

    __slots__ = ("_dispatcher", "_log", "_since")

    def __init__(self, dispatcher: Dispatcher, log: JobLog) -> None:
        self._dispatcher = dispatcher
        self._log = log
        # A Dispatcher does not say when it started: the dashboard tells
        # since when it has been watching it.
        self._since = time.time()

    def __repr__(self) -> str:
        return f"<LocalSource {self._dispatcher!r}>"

    @property
    def label(self) -> str:
        name = self._dispatcher.name
        return f"Dispatcher {name!r}" if name else "Dispatcher"

    @property
    def keeps_dead_letters(self) -> bool:
        return False

    @property
    def codec(self) -> Codec | None:
        return None

    async def lanes(self) -> list[LaneRow]:
        stats = self._dispatcher.stats()
        # Every open page asks this once a second, on the dispatcher's own
        # loop: finish times only, never records (each would repr a job's
        # arguments). Past the log's `keep` jobs per RATE_WINDOW the rate is
        # a lower bound (the chart is exact).
        finished = self._log.finished_times(time.time() - RATE_WINDOW)
        return [LaneRow("local", stats.queued, stats.busy, 0, len(finished) / RATE_WINDOW)]

    async def workers(self) -> list[WorkerRow]:
        stats = self._dispatcher.stats()
        return [
            WorkerRow(
                name=self._dispatcher.name or "local",
                started_at=self._since,
                heartbeat_at=time.time(),
                workers=stats.workers,
                busy=stats.busy,
                idle=stats.idle,
                queued=stats.queued,
                succeeded=stats.succeeded,
                failed=stats.failed,
                cancelled=stats.cancelled,
            )
        ]

    async def finished(self) -> int:
        return self._dispatcher.stats().finished

    async def jobs(self, state: str | None = None, limit: int = 100) -> list[JobRecord]:
        return self._log.records(state, limit)

    async def find_job(self, job_id: str) -> JobRecord | None:
        return self._log.find(job_id)

    async def cancel(self, job_id: str) -> bool:
        return self._log.cancel(job_id)

    async def dead_letters(self) -> list[DeadLetter]:
        return []

    async def requeue(self, letter: DeadLetter) -> None:
        raise LookupError("a local pool keeps no dead letters")

    async def delete_dead_letter(self, letter: DeadLetter) -> None:
        raise LookupError("a local pool keeps no dead letters")


class _DeadLetterBroker(Protocol):
    """The dead-letter methods of a broker engine (not on the neutral base class)."""

    async def dead_letters(self) -> list[DeadLetter]: ...

    async def requeue(self, letter: DeadLetter) -> None: ...

    async def delete_dead_letter(self, letter: DeadLetter) -> None: ...


class BrokerSource:
    """An open broker: lanes and dead letters from its server, the rest from heartbeats.

    Args:
        broker: The broker, open while the dashboard reads it.
        cache_for: Seconds one read of the workers' heartbeats serves
            (every open page polls each second; they are written once a
            second anyway).
        clock: The monotonic clock (seconds) for that cache and for when
            a worker was last seen.
    """

    __slots__ = ("_broker", "_cache_for", "_clock", "_statuses", "_seen", "_finished")

    def __init__(
        self,
        broker: Broker,
        *,
        cache_for: float = _STATUS_CACHE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._broker = broker
        self._cache_for = cache_for
        self._clock = clock
        self._statuses: tuple[float, list[WorkerStatus]] | None = None
        # Each worker's last heartbeat counted (its time, its finished
        # count) and when it was last seen (`clock`): the total grows by
        # what each one finished since, so a worker that leaves (or
        # restarts and counts from 0) never makes it go down. A worker
        # not seen for FORGET_AFTER is forgotten.
        self._seen: dict[str, tuple[float, int, float]] = {}
        self._finished = 0

    def __repr__(self) -> str:
        return f"<BrokerSource {self._broker!r}>"

    @property
    def label(self) -> str:
        return repr(self._broker)

    @property
    def keeps_dead_letters(self) -> bool:
        return callable(getattr(self._broker, "dead_letters", None))

    @property
    def codec(self) -> Codec | None:
        return self._broker.codec

    def _engine(self) -> _DeadLetterBroker:
        if not self.keeps_dead_letters:
            raise LookupError(f"{self._broker!r} keeps no dead letters")
        engine: _DeadLetterBroker = self._broker  # type: ignore[assignment]
        return engine

    async def _heartbeats(self) -> list[WorkerStatus]:
        now = self._clock()
        if self._statuses is not None and now - self._statuses[0] < self._cache_for:
            return self._statuses[1]
        statuses = await self._broker.workers()
        self._statuses = (now, statuses)
        return statuses

    async def lanes(self) -> list[LaneRow]:
        infos = await self._broker.lanes()
        finished = [r for status in await self._heartbeats() for r in status.recent]
        now = time.time()
        rows = []
        for info in infos:
            rate = lane_rate(finished, info.name, now)
            rows.append(LaneRow(info.name, info.waiting, info.running, info.delayed, rate))
        return rows

    async def workers(self) -> list[WorkerRow]:
        return [_worker_row(status) for status in await self._heartbeats()]

    async def finished(self) -> int:
        rows = await self.workers()
        now = self._clock()
        seen = self._seen
        for row in rows:
            before = seen.get(row.name)
            # Two reads that overlap may finish out of order: a heartbeat
            # older than the one already counted is skipped, not counted twice.
            if before is not None and row.heartbeat_at <= before[0]:
                seen[row.name] = (before[0], before[1], now)
                continue
            if before is not None:
                self._finished += max(0, row.finished - before[1])
            seen[row.name] = (row.heartbeat_at, row.finished, now)
        gone = [name for name, (_, _, last) in seen.items() if now - last > FORGET_AFTER]
        for name in gone:
            del seen[name]
        return self._finished

    async def jobs(self, state: str | None = None, limit: int = 100) -> list[JobRecord]:
        # A job may be in two heartbeats (a try failed on one worker, the
        # retry runs on another): the record telling the latest moment wins.
        latest: dict[str, JobRecord] = {}
        for status in await self._heartbeats():
            for record in (*status.running, *status.recent):
                known = latest.get(record.id)
                if known is None or _moment(record) > _moment(known):
                    latest[record.id] = record
        ordered = sorted(latest.values(), key=_moment, reverse=True)
        if state is not None:
            ordered = [r for r in ordered if r.state == state]
        return ordered[:limit]

    async def find_job(self, job_id: str) -> JobRecord | None:
        return await self._broker.find_job(job_id)

    async def cancel(self, job_id: str) -> bool:
        return await self._broker.handle(job_id).cancel()

    async def dead_letters(self) -> list[DeadLetter]:
        if not self.keeps_dead_letters:
            return []
        return await self._engine().dead_letters()

    async def requeue(self, letter: DeadLetter) -> None:
        await self._engine().requeue(letter)

    async def delete_dead_letter(self, letter: DeadLetter) -> None:
        await self._engine().delete_dead_letter(letter)


def _worker_row(status: WorkerStatus) -> WorkerRow:
    stats: dict[str, Any] = status.stats
    return WorkerRow(
        name=status.worker,
        started_at=status.started_at,
        heartbeat_at=status.at,
        workers=int(stats.get("workers", 0)),
        busy=int(stats.get("busy", 0)),
        idle=int(stats.get("idle", 0)),
        queued=int(stats.get("queued", 0)),
        succeeded=int(stats.get("succeeded", 0)),
        failed=int(stats.get("failed", 0)),
        cancelled=int(stats.get("cancelled", 0)),
    )
