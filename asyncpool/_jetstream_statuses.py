"""The workers' statuses of a JetStream broker: a KV bucket `<name>_statuses`, one key per worker.

nats-server 2.9 (the oldest supported) expires messages only by the
bucket's max age, not one by one (per-message TTLs came in 2.11), so: the
bucket keeps every message at most `STATUS_TTL_MAX`, each value starts with
its own TTL, and a status older than that (by the server's timestamp of its
put) is left out as the statuses are read, and deleted then. The one clock
compared with the server's is the reader's (NTP keeps that to milliseconds;
a TTL is seconds).

The transport (`_jetstream_transport`) makes one `JetStreamStatuses` and
hands it its `put_status`, `statuses` and `drop_status`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Final

import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from ._transport import STATUS_TTL_MAX, check_status_ttl, check_worker

__all__ = ("JetStreamStatuses",)

_READ_CONSUMER_TTL: Final = 2.0
"""How long the server keeps the consumer of one read of the statuses after it is left (s)."""
_READ_LIMIT: Final = 10.0
"""How long one read of the statuses may take before it fails (s)."""
_STATUS_TTL: Final = struct.Struct(">d")
"""What a status's value starts with: its own TTL (seconds, a big-endian double)."""


class JetStreamStatuses:
    """The workers' statuses of one broker, in its KV bucket `<name>_statuses`."""

    __slots__ = ("_js", "_name", "_ensure_bucket", "_bucket")

    def __init__(
        self,
        js: JetStreamContext,
        name: str,
        ensure_bucket: Callable[[JetStreamContext, str, float], Awaitable[KeyValue]],
    ) -> None:
        """`name`: the broker's; `ensure_bucket(js, bucket, ttl)` opens (or makes) a bucket."""
        self._js = js
        self._name = f"{name}_statuses"
        self._ensure_bucket = ensure_bucket
        self._bucket: KeyValue | None = None

    async def _status_bucket(self) -> KeyValue:
        if self._bucket is None:
            # Made on first use: brokers that never keep statuses make nothing.
            self._bucket = await self._ensure_bucket(self._js, self._name, STATUS_TTL_MAX)
        return self._bucket

    async def put(self, worker: str, data: bytes, ttl: float) -> None:
        """Store `data` as `worker`'s status, its TTL in front of it."""
        key = _status_key(check_worker(worker))
        value = _STATUS_TTL.pack(check_status_ttl(ttl)) + data
        bucket = await self._status_bucket()
        await bucket.put(key, value)

    async def read(self) -> list[bytes]:
        """Every status that has not expired; the expired ones are deleted as they are found."""
        bucket = await self._status_bucket()
        prefix = f"$KV.{self._name}."
        stored = await self._last_per_key(self._name)
        now = time.time()
        live: list[bytes] = []
        for msg in stored:
            headers = msg.headers or {}
            if headers.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in headers:
                continue  # dropped, or expired and deleted
            value = msg.data or b""
            if len(value) < _STATUS_TTL.size:
                continue  # not written by put_status
            (ttl,) = _STATUS_TTL.unpack_from(value)
            if msg.metadata.timestamp.timestamp() + ttl > now:
                live.append(value[_STATUS_TTL.size :])
                continue
            # Expired: delete it, unless it was put again since it was read
            # (the server refuses the delete then: another revision is last).
            with contextlib.suppress(nats.js.errors.BadRequestError):
                await bucket.delete(msg.subject[len(prefix) :], last=msg.metadata.sequence.stream)
        return live

    async def _last_per_key(self, bucket: str) -> list[Msg]:
        """The last message of every key of a KV bucket, read once (not a watch).

        Not nats-py's `watchall()`: it may say "that is all" before entries
        already on their way have arrived (its check races their delivery),
        and the server keeps its consumer 5 minutes after (a dashboard
        reading every second would pile them up). This ordered consumer is
        read until a message says none is left to deliver, or the server
        says it had nothing; the server deletes it soon after.

        Raises:
            TimeoutError: the server did not send it all within `_READ_LIMIT`.
        """
        arrived: asyncio.Queue[Msg] = asyncio.Queue()

        async def arrive(msg: Msg) -> None:
            arrived.put_nowait(msg)

        sub = await self._js.subscribe(
            f"$KV.{bucket}.>",
            stream=f"KV_{bucket}",
            cb=arrive,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            inactive_threshold=_READ_CONSUMER_TTL,
        )
        last: dict[str, Msg] = {}
        try:
            info = await sub.consumer_info()
            delivered = info.delivered.consumer_seq if info.delivered else 0
            if info.num_pending or delivered:
                async with asyncio.timeout(_READ_LIMIT):
                    while True:
                        msg = await arrived.get()
                        # By subject: an ordered consumer that saw a gap starts again.
                        last[msg.subject] = msg
                        if msg.metadata.num_pending == 0:
                            break
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return list(last.values())

    async def drop(self, worker: str) -> None:
        """Remove `worker`'s status now."""
        bucket = await self._status_bucket()
        await bucket.delete(_status_key(check_worker(worker)))


def _status_key(worker: str) -> str:
    """A worker's key in the statuses bucket: any name, in the letters KV keys allow."""
    # KV keys take letters, digits and `-_=./`; a worker is "host:1234".
    return base64.urlsafe_b64encode(worker.encode()).decode()
