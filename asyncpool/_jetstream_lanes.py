"""The lanes of a JetStream broker: one durable pull consumer each, and what it delivers.

A `Lane` pulls without waiting (a key lane: one job, with a short
expiring request) and reads its inbox through a queue of its own;
`JetStreamDelivery` is one pulled job message with the worker's four answers
(ack, nak, extend). The transport (`_jetstream_transport`) decides when to
pull which lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ("CODEC_HEADER", "JetStreamDelivery", "Lane")

CODEC_HEADER: Final = "Asyncpool-Codec"
_NO_MORE: Final = frozenset({"404", "408", "409"})
_SERIAL_LINGER: Final = 0.02
"""How long a pull request to a key lane waits for its one job (seconds)."""


class JetStreamDelivery:
    """One job message pulled from a lane's consumer."""

    __slots__ = ("_msg", "_lane", "attempt")

    def __init__(self, msg: Msg, lane: Lane) -> None:
        self._msg = msg
        self._lane = lane
        self.attempt: int = msg.metadata.num_delivered

    @property
    def data(self) -> bytes:
        return self._msg.data

    @property
    def codec_name(self) -> str | None:
        headers = self._msg.headers
        return headers.get(CODEC_HEADER) if headers else None

    @property
    def message_id(self) -> str:
        return self.job_id or f"stream-seq-{self._msg.metadata.sequence.stream}"

    @property
    def job_id(self) -> str | None:
        headers = self._msg.headers
        return headers.get("Nats-Msg-Id") if headers else None

    @property
    def subject(self) -> str:
        return self._msg.subject

    @property
    def lane(self) -> str:
        """The lane's name: "high", "normal", "low", or "keys" for every key lane."""
        name = self._msg.subject.rsplit(".jobs.", 1)[-1]
        return "keys" if name.startswith("key.") else name

    @property
    def stream_seq(self) -> int:
        """Where the message sits in the stream: the same for each of its deliveries."""
        return int(self._msg.metadata.sequence.stream)

    async def ack(self) -> None:
        await self._msg.ack()
        # A key lane lets its next job out now.
        self._lane.ring()

    async def nak(self, delay: float) -> None:
        await self._msg.nak(delay=delay or None)
        self._lane.ring(delay)

    async def extend(self) -> None:
        await self._msg.in_progress()


class Lane:
    """One durable pull consumer, fetched without waiting."""

    __slots__ = (
        "name",
        "subject",
        "serial",
        "_nc",
        "_next",
        "_inbox",
        "_sub",
        "_arrived",
        "ready",
        "rung",
        "_bell",
    )

    def __init__(
        self,
        nc: Client,
        stream: str,
        consumer: str,
        subject: str,
        bell: asyncio.Event,
        *,
        serial: bool,
    ) -> None:
        self.name = consumer
        self.serial = serial
        """A key lane: one job out at a time (`max_ack_pending=1`)."""
        self._bell = bell
        self.subject = subject
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._arrived: asyncio.Queue[Msg] = asyncio.Queue()
        """What the server sent to this lane's inbox: jobs, and the ends of requests."""
        self.ready = True
        """Worth a pull: it may hold jobs."""
        self.rung = False
        """A job was published on it since its last pull."""

    async def open(self) -> None:
        arrived = self._arrived

        async def arrive(msg: Msg) -> None:
            arrived.put_nowait(msg)

        # A callback into a queue of our own, read with one timeout per
        # pull: nats-py's next_msg() starts a task per message.
        self._sub = await self._nc.subscribe(self._inbox, cb=arrive)

    def ring(self, delay: float = 0.0) -> None:
        """The lane may hold a job again (now, or after `delay` seconds): look."""
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.ring)
            return
        self.ready = True
        self._bell.set()

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def pull(self, most: int) -> list[Msg]:
        """Up to `most` messages that are ready now (a no-wait pull request)."""
        self.rung = False
        if self.serial:
            most = 1
        assert self._sub is not None
        arrived = self._arrived
        got: list[Msg] = []
        # Messages of an earlier request that arrived after it gave up: take
        # them first, within this grant.
        while len(got) < most and not arrived.empty():
            msg = arrived.get_nowait()
            if not _status(msg):
                got.append(msg)
        if len(got) >= most:
            return got
        wanted: dict[str, Any] = {"batch": most - len(got)}
        if self.serial:
            # While its one job is out, the server keeps a request to a key
            # lane waiting, even a no-wait one, and would hand the next job to
            # it later, to nobody. So: one job, and a request that expires.
            wanted = {"batch": 1, "expires": int(_SERIAL_LINGER * 1e9)}
        else:
            wanted["no_wait"] = True
        await self._nc.publish(self._next, json.dumps(wanted).encode(), reply=self._inbox)
        try:
            async with asyncio.timeout(5.0):
                while len(got) < most:
                    msg = arrived.get_nowait() if not arrived.empty() else await arrived.get()
                    status = _status(msg)
                    if status is None:
                        got.append(msg)
                    elif status in _NO_MORE:
                        break
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            # Stopped mid-pull: what arrived is handed back now, not after its lease.
            for msg in got:
                await msg.nak()
            raise
        # A bell that rang while the request was out stands: the job it
        # announced may have been stored after the server answered.
        if self.serial:
            self.ready = self.rung and not got
        else:
            self.ready = self.rung or len(got) >= most
        return got

    async def hand_back_strays(self) -> int:
        """Hand back messages that arrived after their request gave up; return how many."""
        # Let the subscription pass on what it has buffered (its callback
        # runs in a task of nats-py's); bounded, as the buffer only drains.
        for _ in range(100):
            if self._sub is None or not self._sub.pending_msgs:
                break
            await asyncio.sleep(0)
        count = 0
        arrived = self._arrived
        while not arrived.empty():
            msg = arrived.get_nowait()
            if not _status(msg):
                await msg.nak()
                count += 1
        return count


def _status(msg: Msg) -> str | None:
    headers = msg.headers
    if headers and "Status" in headers:
        return str(headers["Status"])
    return None
