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
from typing import Any, Protocol

from ._envelope import Envelope

__all__ = ("Delivery", "Transport")


class Delivery(Protocol):
    """One job message held by this worker."""

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
