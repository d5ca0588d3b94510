"""What a broker engine provides, as `Protocol`s: the line between neutral layer and engine.

The neutral layer (`_broker`, `_serve`) decides everything: what a job is,
which code runs it, when it is retried, what its terminal record says. An
engine only moves bytes and keeps the durable state:

* `Transport`: publish a job durably (a retried publish never enqueues
  twice), fetch up to n deliveries without waiting, wait until work may be
  ready, keep terminal records (create-once, with a TTL) and deliver them
  to a watcher, keep cancellation requests, keep dead letters.
* `Delivery`: one delivered job message, with its delivery count and the
  four answers a worker gives a broker: done (`ack`), hand it back
  (`nak`, maybe after a delay), still working on it (`extend`), never again
  (`term`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

from ._envelope import Envelope
from ._lanes_info import LaneInfo

__all__ = ("STATUS_TTL_MAX", "Delivery", "Transport", "check_status_ttl", "check_worker")

STATUS_TTL_MAX: Final = 3600.0
"""The longest a worker's status may live without being put again (seconds).

The same on every engine. JetStream needs a bound: its oldest supported
server (2.9) has no expiry per message, only per bucket, so the statuses'
bucket keeps every message at most this long, and the shorter TTL of each
status is applied as it is read.
"""


def check_status_ttl(ttl: object) -> float:
    """A status's TTL: a number of seconds, above 0 and at most `STATUS_TTL_MAX`.

    Raises:
        TypeError: `ttl` is not a number.
        ValueError: it is out of that range.
    """
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be a number of seconds, got {ttl!r}")
    if not 0 < ttl <= STATUS_TTL_MAX:  # NaN too: it compares false
        raise ValueError(f"ttl must be above 0 and at most {STATUS_TTL_MAX:g} s, got {ttl!r}")
    return float(ttl)


def check_worker(worker: object) -> str:
    """A worker's name, as statuses are kept under: a non-empty str ("host:1234").

    Raises:
        TypeError: `worker` is not a str.
        ValueError: it is empty.
    """
    if not isinstance(worker, str):
        raise TypeError(f"worker must be a str (such as 'host:1234'), got {worker!r}")
    if not worker:
        raise ValueError("worker must not be empty")
    return worker


class Delivery(Protocol):
    """One job message held by this worker."""

    @property
    def lane(self) -> str:
        """The name of the lane it came from ("high", "normal", "low", or a key lane's)."""
        ...

    @property
    def data(self) -> bytes:
        """The message's payload: an encoded envelope (or garbage: it is checked)."""
        ...

    @property
    def codec_name(self) -> str | None:
        """The codec the publisher named beside the payload, if any."""
        ...

    @property
    def attempt(self) -> int:
        """The broker's delivery count: 1 on the first delivery."""
        ...

    @property
    def message_id(self) -> str:
        """The engine's id of the message (to name a dead letter that has no job id)."""
        ...

    @property
    def job_id(self) -> str | None:
        """The job id the publisher named beside the payload, if any.

        For a payload that cannot be read: its terminal record still goes
        where the submitter's handle waits for it.
        """
        ...

    async def ack(self) -> None:
        """Done: the broker forgets the message."""
        ...

    async def nak(self, delay: float) -> None:
        """Hand it back, to be delivered again (to anyone) after `delay` seconds."""
        ...

    async def extend(self) -> None:
        """Still working on it: restart its lease."""
        ...


class Transport(Protocol):
    """What the neutral layer asks of a broker engine."""

    @property
    def recheck_interval(self) -> float:
        """How often an idle worker looks for redeliveries, which nobody announces."""
        ...

    @property
    def lease_period(self) -> float:
        """How often a worker extends the leases of the jobs it holds."""
        ...

    async def publish(self, envelope: Envelope, data: bytes, codec_name: str) -> None:
        """Store a job durably; return only once it is stored. Deduplicated by job id."""
        ...

    async def fetch(self, most: int) -> list[Delivery]:
        """Take up to `most` ready jobs without waiting (higher lanes first)."""
        ...

    async def hand_back_strays(self) -> None:
        """Hand back deliveries that arrived after their fetch was stopped."""
        ...

    async def wait_for_work(self, timeout: float) -> None:
        """Return when jobs may be ready, or after `timeout` seconds."""
        ...

    async def create_outcome(self, job_id: str, data: bytes) -> bool:
        """Write a job's terminal record if it has none; return whether this call wrote it."""
        ...

    async def finish(self, delivery: Any, job_id: str, record: bytes | None) -> None:
        """A job's usual end: write its record (unless it has one, or `record` is None), then ack.

        One step where the engine can (one round trip instead of two).
        """
        ...

    async def read_outcome(self, job_id: str) -> bytes | None:
        """A job's terminal record, if it has one."""
        ...

    async def watch_outcome(self, job_id: str, deliver: Callable[[str, bytes], None]) -> None:
        """Make sure `deliver(job_id, record)` is called when the job's record is written."""
        ...

    async def request_cancel(self, job_id: str) -> None:
        """Tell every worker that `job_id` is cancelled."""
        ...

    async def watch_cancels(
        self, cancelled: Callable[[str], None], caught_up: Callable[[], None]
    ) -> None:
        """Call `cancelled(job_id)` for each cancellation, past and future, until cancelled.

        `caught_up()` is called once, when every cancellation made before the
        watch began has been passed on: a worker takes no job before that.
        """
        ...

    async def dead_letter(self, delivery: Any, letter: dict[str, Any]) -> None:
        """Store a dead letter (the neutral fields in `letter`; the engine adds where it was)."""
        ...

    async def lane_counts(self) -> list[LaneInfo]:
        """How many jobs each lane holds: waiting, running, delayed (see `LaneInfo`).

        The priority lanes ("high", "normal", "low"), then one row for every
        key lane together ("keys").
        """
        ...

    async def put_status(self, worker: str, data: bytes, ttl: float) -> None:
        """Store `data` as the status of `worker` (replacing its last), for `ttl` seconds.

        A status not put again within `ttl` seconds of its last put is gone
        (a worker that was killed drops out by itself).

        Raises:
            TypeError, ValueError: `worker` is not a non-empty str, or `ttl`
                is not a number above 0 and at most `STATUS_TTL_MAX`.
        """
        ...

    async def statuses(self) -> list[bytes]:
        """The status of every worker whose status has not expired, in no particular order."""
        ...

    async def drop_status(self, worker: str) -> None:
        """Remove `worker`'s status now (a worker that stops cleanly); none is no error."""
        ...
