"""`asyncpool._transport.Transport` on Redis Streams: what a Redis broker keeps.

Every key is named from the broker's name inside braces (a Redis Cluster
hash tag: all of one broker's keys live in one slot, so its scripts may
touch any of them):

* `{name}:lane:high|normal|low`: the priority lanes, and
  `{name}:key:<i>`: the key lanes; streams with one consumer group,
  `workers`, whose pending entries list is who holds what, since when, and
  how often it was delivered;
* `{name}:delayed`: a sorted set of retries waiting out their backoff,
  moved into their lanes by the next worker that fetches once they are due;
* `{name}:parked`: a hash of key lanes whose one job was handed back with a
  delay (it keeps its place and the lane's lock until due);
* `{name}:seen:<job id>`: a submitted id, kept `DEDUP_WINDOW` seconds, so a
  retried publish adds nothing;
* `{name}:result:<job id>`: a terminal record, with the broker's result
  TTL; written once, and published on the channel `{name}:done:<origin>`
  of the process that submitted the job (job ids are `<origin>.<n>`);
* `{name}:cancels`: a stream of cancellation requests, trimmed to the
  result TTL; `{name}:dead`: the dead letters (`_redis_deadletters`);
* `{name}:status:<worker>` and `{name}:statuses`: the workers' statuses
  (`_redis_statuses`);
* the channel `{name}:bell`: rung when a job enters a lane.

The atomic steps are Lua scripts (`_redis_scripts`); this module calls them,
keeps the listening connection (records and the bell) and the cancellation
watch, and turns what a fetch returns into deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

import redis.asyncio
import redis.exceptions
from redis.asyncio.client import PubSub

from . import _redis_scripts as scripts
from ._deadletters import DeadLetter
from ._envelope import Envelope, partition_of
from ._lanes_info import LaneInfo
from ._redis_calls import Pipeliner, Script, connection_errors
from ._redis_deadletters import RedisDeadLetters
from ._redis_delivery import GROUP, RedisDelivery
from ._redis_statuses import RedisStatuses
from ._transport import Delivery

if TYPE_CHECKING:
    from .redis import RedisBroker

__all__ = ("RedisDelivery", "RedisTransport")

_log = logging.getLogger("asyncpool")

DEDUP_WINDOW: Final = 30
"""How long a submitted job id is remembered, so that a retried publish adds nothing (s).

A publish is sent again only by the client's retries after a lost
connection (about 10 s in all); each id costs a small key this long.
"""
PRUNE_EVERY: Final = 60.0
"""How often a serving worker removes the group's long-idle, empty consumers (s)."""
_LANES: Final = ("high", "normal", "low")
_CANCEL_BATCH: Final = 1000
_WATCH_BLOCK_MS: Final = 1000
_BACKOFF_MAX: Final = 1.0

LOST: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
"""What a lost or unreachable server raises."""


class RedisTransport:
    """`asyncpool._transport.Transport` on a `redis.asyncio` client."""

    def __init__(
        self,
        broker: RedisBroker,
        client: redis.asyncio.Redis,
        listener: redis.asyncio.Redis,
        *,
        origin: str,
        where: str,
        deliver: Callable[[str, bytes], None],
        awaited: Callable[[], Iterable[str]],
    ) -> None:
        self._broker = broker
        self._redis = client
        self._listener = listener
        self.consumer = origin
        self._where = where
        self._deliver = deliver
        self._awaited = awaited
        p = f"{{{broker.name}}}"
        self.prefix = p
        self.lanes = [f"{p}:lane:{lane}" for lane in _LANES]
        self.key_lanes = [f"{p}:key:{i}" for i in range(broker.key_partitions)]
        high, normal, low = self.lanes
        self.busy_key = f"{p}:keyed"
        self._fetch_keys = [
            f"{p}:delayed",
            f"{p}:parked",
            self.busy_key,
            high,
            *self.key_lanes,
            normal,
            low,
        ]
        self._turn = 0
        self._strays: list[asyncio.Future[Any]] = []
        self._lane_by_index = self._fetch_keys[3:]
        self._keyed_lanes = frozenset(self.key_lanes)
        self.delayed_key = f"{p}:delayed"
        self.parked_key = f"{p}:parked"
        self.cancels_key = f"{p}:cancels"
        self.bell_channel = f"{p}:bell"
        self._done_prefix = f"{p}:done:"
        self.recheck_interval = min(0.5, broker.ack_wait / 4)
        self.lease_period = broker.ack_wait / 3
        self._lease_ms = str(round(broker.ack_wait * 1000))
        self._last_reclaim = 0.0
        self._bell = asyncio.Event()
        self._fetched = False
        # Channels listened to, each with the event set once subscribed.
        self._channels: dict[str, asyncio.Event] = {}
        self._pubsub: PubSub | None = None
        self._listening: asyncio.Task[None] | None = None
        self._lost = False
        pipeliner = Pipeliner(client, where, self._groups_lost)
        self.scripts_publish = Script(pipeliner, scripts.PUBLISH_JOB)
        self.scripts_fetch = Script(pipeliner, scripts.FETCH)
        self.scripts_ack = Script(pipeliner, scripts.ACK)
        self.scripts_finish = Script(pipeliner, scripts.FINISH)
        self.scripts_extend = Script(pipeliner, scripts.EXTEND)
        self.scripts_nak = Script(pipeliner, scripts.NAK)
        self._create_outcome = Script(pipeliner, scripts.CREATE_OUTCOME)
        self._prune = Script(pipeliner, scripts.PRUNE)
        self._count_lanes = Script(pipeliner, scripts.LANES)
        self._statuses = RedisStatuses(client, pipeliner, p, where)
        self._dead_letters = RedisDeadLetters(
            client,
            pipeliner,
            p,
            where,
            dedup_window=DEDUP_WINDOW,
            normal_lane=normal,
            keyed_lanes=self._keyed_lanes,
            busy_key=self.busy_key,
            bell_channel=self.bell_channel,
            record_key=self._record_key,
        )
        self._last_prune = time.monotonic()

    # -- set up --------------------------------------------------------

    async def open(self) -> None:
        """Create the lanes' consumer group where missing; listen for this process's records."""
        await self._make_groups()
        await self._listen_to(f"{self._done_prefix}{self.consumer}")

    async def _groups_lost(self) -> None:
        """A lane has no consumer group: the server lost what it kept. Say so; make them again."""
        _log.warning(
            "asyncpool: broker %r: the Redis at %s has lost the broker's consumer groups "
            "(it restarted without persistence, or its keys were deleted): the jobs it "
            "held are gone; making the groups again",
            self._broker.name,
            self._where,
        )
        await self._make_groups()

    async def _make_groups(self) -> None:
        for lane in self.lanes + self.key_lanes:
            try:
                with connection_errors(self._where):
                    await self._redis.xgroup_create(lane, GROUP, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def close(self) -> None:
        listening, self._listening = self._listening, None
        if listening is not None:
            listening.cancel()
            with contextlib.suppress(BaseException):
                await listening
        if self._fetched:
            # A worker that holds nothing leaves the group (one that holds
            # jobs stays: its entries are reclaimed once their lease ends).
            with contextlib.suppress(*LOST, redis.exceptions.ResponseError):
                for lane in self.lanes + self.key_lanes:
                    mine = await self._redis.xpending_range(
                        lane, GROUP, min="-", max="+", count=1, consumername=self.consumer
                    )
                    if not mine:
                        await self._redis.xgroup_delconsumer(lane, GROUP, self.consumer)

    # -- listening: records and the bell -------------------------------

    async def _listen_to(self, channel: str) -> None:
        """Subscribe (once) to `channel`; return when the server has confirmed it."""
        subscribed = self._channels.get(channel)
        if subscribed is None:
            subscribed = self._channels[channel] = asyncio.Event()
            if self._listening is None:
                self._listening = asyncio.get_running_loop().create_task(
                    self._listen(), name=f"asyncpool-redis-listen-{self._broker.name}"
                )
            elif self._pubsub is not None:
                with contextlib.suppress(*LOST):
                    await self._pubsub.subscribe(channel)
        async with asyncio.timeout(10):
            await subscribed.wait()

    async def _listen(self) -> None:
        """Read the subscribed channels; after a lost connection, subscribe again and catch up."""
        delay = 0.05
        while True:
            pubsub = self._listener.pubsub()
            self._pubsub = pubsub
            try:
                pending = set(self._channels)
                await pubsub.subscribe(*pending)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    kind = message["type"]
                    channel = message["channel"].decode()
                    if kind == "message":
                        self._arrived(channel, message["data"])
                    elif kind == "subscribe":
                        pending.discard(channel)
                        if not pending:
                            # Records written while nobody listened: read them.
                            await self._catch_up()
                            delay = 0.05
                            if self._lost:
                                self._lost = False
                                _log.warning(
                                    "asyncpool: broker %r reconnected to Redis (%s)",
                                    self._broker.name,
                                    self._where,
                                )
                        event = self._channels.get(channel)
                        if event is not None:
                            event.set()
            except (*LOST, redis.exceptions.RedisError) as exc:
                if not isinstance(exc, LOST):
                    # Not the connection's doing (a server refusing a
                    # command?): keep listening, but say what it was.
                    _log.error(
                        "asyncpool: broker %r: Redis listener failed",
                        self._broker.name,
                        exc_info=exc,
                    )
                elif not self._lost:
                    self._lost = True
                    _log.warning(
                        "asyncpool: broker %r lost its connection to Redis (%s): %s; reconnecting",
                        self._broker.name,
                        self._where,
                        exc,
                    )
                for event in self._channels.values():
                    event.clear()
                self._bell.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
            finally:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _arrived(self, channel: str, data: bytes) -> None:
        if channel == self.bell_channel:
            self._bell.set()
            return
        job_id, _, record = data.partition(b" ")
        self._deliver(job_id.decode(), record)

    async def _catch_up(self) -> None:
        """Deliver the records of awaited jobs that were written before we listened."""
        waiting = list(self._awaited())
        for start in range(0, len(waiting), 500):
            batch = waiting[start : start + 500]
            records = await self._redis.mget([self._record_key(job_id) for job_id in batch])
            for job_id, record in zip(batch, records, strict=True):
                if record is not None:
                    self._deliver(job_id, record)

    # -- jobs ----------------------------------------------------------

    def lane_for(self, priority: int, key: str | int | None) -> str:
        if key is not None:
            return self.key_lanes[partition_of(key, len(self.key_lanes))]
        return self.lanes[0 if priority > 0 else 2 if priority < 0 else 1]

    async def publish(self, envelope: Envelope, data: bytes, codec_name: str) -> None:
        await self.scripts_publish(
            [
                self.lane_for(envelope.priority, envelope.key),
                f"{self.prefix}:seen:{envelope.id}",
                self.busy_key,
            ],
            [
                data,
                codec_name,
                envelope.id,
                self.bell_channel,
                DEDUP_WINDOW,
                int(envelope.key is not None),
            ],
        )

    async def fetch(self, most: int) -> list[Delivery]:
        if not self._fetched:
            self._fetched = True
            await self._listen_to(self.bell_channel)
        # Cleared before looking: a bell that rings while the lanes are read
        # must still wake the wait that follows.
        self._bell.clear()
        now = time.monotonic()
        self._turn += 1
        reclaim = now - self._last_reclaim >= self.recheck_interval
        if reclaim:
            self._last_reclaim = now
            if now - self._last_prune >= PRUNE_EVERY:
                self._last_prune = now
                await self.prune()
        reply = self.scripts_fetch(
            self._fetch_keys,
            [
                GROUP,
                self.consumer,
                most,
                self._lease_ms,
                "1" if reclaim else "0",
                self.bell_channel,
                self._turn,
            ],
        )
        try:
            flat = await asyncio.shield(reply)
        except asyncio.CancelledError:
            # Stopped while the script ran: what it took is handed back by
            # hand_back_strays(), not left to wait out its lease.
            self._strays.append(reply)
            raise
        except LOST:
            # The listener says so in one line; serving resumes when it is back.
            return []
        return self._deliveries(flat)

    def _deliveries(self, flat: list[Any]) -> list[Delivery]:
        got: list[Delivery] = []
        lanes = self._lane_by_index
        keyed = self._keyed_lanes
        for j in range(0, len(flat), 7):
            lane = lanes[flat[j] - 1]
            got.append(
                RedisDelivery(
                    self,
                    lane,
                    lane in keyed,
                    flat[j + 1].decode(),
                    flat[j + 2] + flat[j + 6],
                    flat[j + 3],
                    flat[j + 4].decode(),
                    flat[j + 5].decode(),
                )
            )
        return got

    async def prune(self, older_than: float | None = None) -> int:
        """Remove consumers that hold nothing and have not read for `older_than` seconds.

        By default 10 leases, at least 60 s: a live worker reads at least
        every `recheck_interval`, so only gone ones are that quiet.
        """
        if older_than is None:
            older_than = max(60.0, 10 * self._broker.ack_wait)
        idle_ms = round(older_than * 1000)
        with contextlib.suppress(*LOST):
            removed: int = await self._prune(self.lanes + self.key_lanes, [GROUP, idle_ms])
            return removed
        return 0

    async def hand_back_strays(self) -> None:
        """Hand back what fetches that were stopped midway took."""
        strays, self._strays = self._strays, []
        for reply in strays:
            try:
                flat = await reply
            except Exception:
                continue  # it took nothing, or the server is gone (then: the lease)
            for delivery in self._deliveries(flat):
                with contextlib.suppress(Exception):
                    await delivery.nak(0)

    def ring(self, delay: float = 0.0) -> None:
        """Look at the lanes again (now, or after `delay` seconds)."""
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._bell.set)
        else:
            self._bell.set()

    async def wait_for_work(self, timeout: float) -> None:
        """Until a job enters a lane, or `timeout` (a lease running out rings no bell)."""
        # Not wait_for: on 3.11 it may swallow a cancellation that comes as
        # the bell rings, and serve would never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout if not self._lost else _BACKOFF_MAX):
                await self._bell.wait()

    async def lane_counts(self) -> list[LaneInfo]:
        """Each lane's counts in one step: stream length, pending entries, delayed retries.

        A retry waiting out its backoff is `delayed`: in the delayed set, or
        (on a key lane, where it keeps its place) a parked pending entry.
        """
        flat = await self._count_lanes(
            [self.delayed_key, self.parked_key, *self.lanes, *self.key_lanes], [GROUP]
        )
        counts = [tuple(flat[j : j + 3]) for j in range(0, len(flat), 3)]
        rows = [
            LaneInfo(name, waiting, running, delayed)
            for name, (waiting, running, delayed) in zip(_LANES, counts[: len(_LANES)], strict=True)
        ]
        keyed = counts[len(_LANES) :]
        rows.append(
            LaneInfo(
                "keys",
                sum(count[0] for count in keyed),
                sum(count[1] for count in keyed),
                sum(count[2] for count in keyed),
            )
        )
        return rows

    # -- records -------------------------------------------------------

    def _record_key(self, job_id: str) -> str:
        return f"{self.prefix}:result:{job_id}"

    async def create_outcome(self, job_id: str, data: bytes) -> bool:
        origin = job_id.split(".", 1)[0]
        created = await self._create_outcome(
            [self._record_key(job_id)],
            [data, round(self._broker.result_ttl), f"{self._done_prefix}{origin}", job_id],
        )
        return bool(created)

    async def finish(self, delivery: Any, job_id: str, record: bytes | None) -> None:
        origin = job_id.split(".", 1)[0]
        await self.scripts_finish(
            [delivery.stream, self._record_key(job_id)],
            [
                GROUP,
                delivery.entry_id,
                self.consumer,
                self.bell_channel,
                int(delivery.keyed),
                record if record is not None else b"",
                round(self._broker.result_ttl),
                f"{self._done_prefix}{origin}",
                job_id,
            ],
        )

    async def read_outcome(self, job_id: str) -> bytes | None:
        with connection_errors(self._where):
            record: bytes | None = await self._redis.get(self._record_key(job_id))
        return record

    async def watch_outcome(self, job_id: str, deliver: Callable[[str, bytes], None]) -> None:
        # Records are published to the submitting process's channel: listen
        # there too (the broker ignores records of jobs nobody here awaits).
        origin = job_id.split(".", 1)[0]
        await self._listen_to(f"{self._done_prefix}{origin}")

    async def request_cancel(self, job_id: str) -> None:
        oldest = int((time.time() - self._broker.result_ttl) * 1000)
        with connection_errors(self._where):
            await self._redis.xadd(
                self.cancels_key, {"i": job_id}, minid=max(oldest, 0), approximate=True
            )

    async def watch_cancels(
        self, cancelled: Callable[[str], None], caught_up: Callable[[], None]
    ) -> None:
        last = "0-0"
        told = False
        delay = 0.05
        while True:
            try:
                block = None if not told else _WATCH_BLOCK_MS
                got = await self._redis.xread(
                    {self.cancels_key: last}, count=_CANCEL_BATCH, block=block
                )
                delay = 0.05
            except LOST:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            entries = got[0][1] if got else []
            for entry_id, entry in entries:
                last = entry_id.decode()
                job_id = entry.get(b"i")
                if job_id:
                    cancelled(job_id.decode())
            if not told and len(entries) < _CANCEL_BATCH:
                told = True
                caught_up()

    # -- workers' statuses: `_redis_statuses` -------------------------

    async def put_status(self, worker: str, data: bytes, ttl: float) -> None:
        await self._statuses.put(worker, data, ttl)

    async def statuses(self) -> list[bytes]:
        return await self._statuses.read()

    async def drop_status(self, worker: str) -> None:
        await self._statuses.drop(worker)

    # -- dead letters: `_redis_deadletters` ---------------------------

    async def dead_letter(self, delivery: Any, letter: dict[str, Any]) -> None:
        await self._dead_letters.dead_letter(delivery, letter)

    async def dead_letters(self) -> list[DeadLetter]:
        return await self._dead_letters.dead_letters()

    async def requeue(self, letter: DeadLetter) -> None:
        """Send the dead letter's job back to its lane, and remove the letter (one step).

        Raises:
            LookupError: the letter is gone (deleted or requeued already).
        """
        await self._dead_letters.requeue(letter)

    async def delete_dead_letter(self, letter: DeadLetter) -> None:
        """Remove a dead letter from its stream.

        Raises:
            LookupError: it is not there (deleted or requeued already).
        """
        await self._dead_letters.delete(letter)

    async def destroy(self) -> None:
        """Delete every key of this broker."""
        with connection_errors(self._where):
            async for key in self._redis.scan_iter(match=f"{self.prefix}:*", count=500):
                await self._redis.unlink(key)
