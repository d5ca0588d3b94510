"""`RedisDelivery`: one job entry a Redis worker read from a lane, and what it may do with it.

It acks, hands back (with a delay) and extends its lease through the
transport's scripts, each of which checks that this worker still owns the
entry: a worker that lost it (its lease ran out and another took it) can no
longer touch it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._redis_transport import RedisTransport

__all__ = ("GROUP", "RedisDelivery")

GROUP: Final = "workers"
"""The one consumer group of every lane."""


class RedisDelivery:
    """One job entry read from a lane by this worker."""

    __slots__ = ("_transport", "_lane", "_keyed", "entry_id", "attempt", "data", "_codec", "_id")

    def __init__(
        self,
        transport: RedisTransport,
        lane: str,
        keyed: bool,
        entry_id: str,
        attempt: int,
        data: bytes,
        codec: str,
        job_id: str,
    ) -> None:
        self._transport = transport
        self._lane = lane
        self._keyed = keyed
        self.entry_id = entry_id
        self.attempt = attempt
        self.data = data
        self._codec = codec
        self._id = job_id

    @property
    def codec_name(self) -> str | None:
        return self._codec or None

    @property
    def job_id(self) -> str | None:
        return self._id or None

    @property
    def message_id(self) -> str:
        return self._id or f"entry-{self.entry_id}"

    @property
    def keyed(self) -> bool:
        """Read from a key lane."""
        return self._keyed

    @property
    def stream(self) -> str:
        """The key of the stream it was read from."""
        return self._lane

    @property
    def lane(self) -> str:
        """The lane's name: "high", "normal", "low", or "keys" for every key lane."""
        return "keys" if self._keyed else self._lane.rsplit(":", 1)[1]

    async def ack(self) -> None:
        t = self._transport
        await t.scripts_ack(
            [self._lane], [GROUP, self.entry_id, t.consumer, t.bell_channel, int(self._keyed)]
        )

    async def nak(self, delay: float) -> None:
        t = self._transport
        await t.scripts_nak(
            [self._lane, t.delayed_key, t.parked_key],
            [
                GROUP,
                self.entry_id,
                t.consumer,
                max(0, round(delay * 1000)),
                int(self._keyed),
                t.bell_channel,
            ],
        )
        if delay > 0:
            # Be the one to look when it is due (any idle worker will, within
            # its recheck interval, too).
            t.ring(delay)

    async def extend(self) -> None:
        t = self._transport
        await t.scripts_extend([self._lane], [GROUP, self.entry_id, t.consumer])
