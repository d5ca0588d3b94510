"""`JetStreamBroker`: asyncpool's jobs across processes and machines, on NATS JetStream.

```python
from asyncpool import Dispatcher
from asyncpool.jetstream import JetStreamBroker

broker = JetStreamBroker("nats://127.0.0.1:4222")

@broker.task
async def resize(path: str) -> int: ...

# a producer (a web app):
async with broker:
    handle = await broker.submit(resize, "a.png")
    print(await handle)

# a worker (or: python -m asyncpool worker app:broker --workers 16):
async with broker, Dispatcher(workers=16) as dispatcher:
    await broker.serve(dispatcher)
```

Needs the `jetstream` extra (nats-py) and a NATS server 2.9 or newer with
JetStream on. What the broker keeps on the server, all named from `name`:

* the work-queue stream `<name>_jobs`, subjects `<name>.jobs.<lane>`:
  three priority lanes (`high`, `normal`, `low`, by the sign of the job's
  priority) and `key_partitions` key lanes (`key.0`, `key.1`, ...); a
  durable pull consumer per lane. A key lane lets one job out at a time
  (`max_ack_pending=1`), so jobs of one key never overlap and run in
  submission order, on any number of machines;
* the KV bucket `<name>_results` (terminal records, kept `result_ttl`
  seconds) and `<name>_cancels` (cancellation requests, as long);
* the stream `<name>_dead`: dead letters.

The server owns the lease (`ack_wait`), its extension (`in_progress`),
delayed redelivery (`nak(delay)`) and delivery counts; a publish carries
`Nats-Msg-Id` (the job id), so a retried publish never enqueues twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
from collections.abc import Callable
from typing import Any, Final

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js import JetStreamContext, api
    from nats.js.kv import KeyValue
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "asyncpool.jetstream needs nats-py: pip install 'asyncpool-dispatch[jetstream]'"
    ) from exc

from ._broker import Broker
from ._codecs import Codec
from ._deadletters import DeadLetter
from ._envelope import Envelope, partition_of
from ._transport import Delivery

__all__ = ("JetStreamBroker",)

CODEC_HEADER: Final = "Asyncpool-Codec"
_log = logging.getLogger("asyncpool")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_LANES: Final = ("high", "normal", "low")
_NO_MORE: Final = frozenset({"404", "408", "409"})
_SUSPECT_RECHECK: Final = 0.005
"""How soon a lane whose bell rang but that was found empty is looked at again (seconds)."""
_SERIAL_LINGER: Final = 0.02
"""How long a pull request to a key lane waits for its one job (seconds)."""


class JetStreamDelivery:
    """One job message pulled from a lane's consumer."""

    __slots__ = ("_msg", "_lane", "attempt")

    def __init__(self, msg: Msg, lane: _Lane) -> None:
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


class _Lane:
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


class _JetStreamTransport:
    """`asyncpool._transport.Transport` on a NATS connection."""

    def __init__(self, broker: JetStreamBroker, nc: Client, js: JetStreamContext) -> None:
        self._broker = broker
        self._nc = nc
        self._js = js
        self._lanes: list[_Lane] = []
        self._key_lanes: list[_Lane] = []
        self._bell = asyncio.Event()
        self._suspects: list[_Lane] = []
        self._results: KeyValue | None = None
        self._cancels: KeyValue | None = None
        self._watched: set[str] = set()
        self._subs: list[Subscription] = []
        self._set_lease(broker.ack_wait)

    def _set_lease(self, ack_wait: float) -> None:
        self.recheck_interval = min(0.5, ack_wait / 4)
        self.lease_period = ack_wait / 3

    # -- set up --------------------------------------------------------

    async def open(self) -> None:
        b = self._broker
        js = self._js
        await _ensure_stream(
            js,
            api.StreamConfig(
                name=b.stream,
                subjects=[f"{b.name}.jobs.>"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                duplicate_window=120.0,
            ),
        )
        await _ensure_stream(
            js,
            api.StreamConfig(
                name=b.dead_stream,
                subjects=[f"{b.name}.dead"],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                duplicate_window=120.0,
            ),
        )
        self._results = await _ensure_bucket(js, f"{b.name}_results", b.result_ttl)
        self._cancels = await _ensure_bucket(js, f"{b.name}_cancels", b.result_ttl)
        lanes = [(f"{b.name}_{lane}", f"{b.name}.jobs.{lane}", -1) for lane in _LANES]
        keyed = [
            (f"{b.name}_key_{i}", f"{b.name}.jobs.key.{i}", 1) for i in range(b.key_partitions)
        ]
        leases: set[float] = set()
        for consumer, subject, max_ack_pending in lanes + keyed:
            lease = await _ensure_consumer(
                js,
                b.stream,
                api.ConsumerConfig(
                    durable_name=consumer,
                    filter_subject=subject,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    deliver_policy=api.DeliverPolicy.ALL,
                    ack_wait=b.ack_wait,
                    max_deliver=-1,
                    max_ack_pending=max_ack_pending,
                    max_waiting=4096,
                ),
            )
            leases.add(lease)
            lane = _Lane(
                self._nc, b.stream, consumer, subject, self._bell, serial=max_ack_pending == 1
            )
            (self._key_lanes if max_ack_pending == 1 else self._lanes).append(lane)
        if leases != {b.ack_wait}:
            # The lease lives on the server, set by whoever created the
            # consumers: extend leases often enough for the shortest of them.
            _log.warning(
                "asyncpool: JetStreamBroker %r asked for ack_wait=%g s, but its consumers "
                "on the server keep %s s (set when they were created): leases are extended "
                "for the shortest; to change it, destroy() the broker's streams or edit "
                "the consumers",
                b.name,
                b.ack_wait,
                ", ".join(f"{lease:g}" for lease in sorted(leases)),
            )
            self._set_lease(min(leases | {b.ack_wait}))
        # Records of this process's jobs, pushed as they are stored. A
        # consumer of the bucket's stream, not a plain subscription to its
        # subjects: that would also see a write the stream refused (a second
        # record for a job that has one).
        self._subs.append(await self._watch_records(f"{b._origin}.>", api.DeliverPolicy.NEW))

    async def close(self) -> None:
        for lane in self._lanes + self._key_lanes:
            await lane.close()
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _watch_records(self, keys: str, deliver: api.DeliverPolicy) -> Subscription:
        bucket = f"{self._broker.name}_results"
        return await self._js.subscribe(
            f"$KV.{bucket}.{keys}",
            stream=f"KV_{bucket}",
            cb=self._record_arrived,
            ordered_consumer=True,
            # Missed heartbeats are how it notices a restarted server and
            # resumes where it was: within seconds, not the default 15.
            idle_heartbeat=1.0,
            deliver_policy=deliver,
        )

    async def _record_arrived(self, msg: Msg) -> None:
        headers = msg.headers or {}
        if headers.get("KV-Operation") in ("DEL", "PURGE"):
            return
        job_id = msg.subject.split(".", 2)[2]
        self._broker._outcome_arrived(job_id, msg.data)

    # -- jobs ----------------------------------------------------------

    def subject_for(self, priority: int, key: str | int | None) -> str:
        b = self._broker
        if key is not None:
            return f"{b.name}.jobs.key.{partition_of(key, b.key_partitions)}"
        lane = "high" if priority > 0 else "low" if priority < 0 else "normal"
        return f"{b.name}.jobs.{lane}"

    async def publish(self, envelope: Envelope, data: bytes, codec_name: str) -> None:
        await self._js.publish(
            self.subject_for(envelope.priority, envelope.key),
            data,
            headers={"Nats-Msg-Id": envelope.id, CODEC_HEADER: codec_name},
        )

    async def fetch(self, most: int) -> list[Delivery]:
        if not self._lanes[0]._sub:
            for lane in self._lanes + self._key_lanes:
                await lane.open()
            await self._start_bell()
        # Cleared before looking, not when about to wait: a bell that rings
        # while the lanes are pulled must still wake the wait that follows.
        self._bell.clear()
        got: list[Delivery] = []
        # High first; then the key lanes, before normal and low: a steady
        # flow of unkeyed jobs must not hold keyed ones back for ever (a key
        # lane gives at most one job at a time anyway).
        high, *rest = self._lanes
        for lane in [high, *self._key_lanes, *rest]:
            if len(got) >= most:
                break
            if lane.ready:
                rung = lane.rung
                pulled = await lane.pull(most - len(got))
                if not pulled and rung:
                    # Rung, yet empty: the job was taken already (the bell
                    # came late), or the stream has not stored it yet (the
                    # server rings the bell and stores at once): look again soon.
                    self._suspects.append(lane)
                got.extend(JetStreamDelivery(m, lane) for m in pulled)
        return got

    async def hand_back_strays(self) -> None:
        """Hand back what arrived for a pull that was stopped (serve is ending)."""
        with contextlib.suppress(Exception):
            await self._nc.flush(timeout=2)
        for lane in self._lanes + self._key_lanes:
            await lane.hand_back_strays()

    async def _start_bell(self) -> None:
        by_subject = {lane.subject: lane for lane in self._lanes + self._key_lanes}

        async def ring(msg: Msg) -> None:
            lane = by_subject.get(msg.subject)
            if lane is not None:
                lane.ready = lane.rung = True
            self._bell.set()

        self._subs.append(await self._nc.subscribe(f"{self._broker.name}.jobs.>", cb=ring))

    async def wait_for_work(self, timeout: float) -> None:
        """Until a job is published, or `timeout` (redeliveries are not announced)."""
        suspects, self._suspects = self._suspects, []
        if suspects:
            timeout = min(timeout, _SUSPECT_RECHECK)
        try:
            # Not wait_for: on 3.11 it may swallow a cancellation that comes
            # as the bell rings, and serve would never stop.
            async with asyncio.timeout(timeout):
                await self._bell.wait()
        except TimeoutError:
            if suspects:
                for lane in suspects:
                    lane.ready = True
                return
            # A redelivery (a dead worker's lease ran out, a retry's delay
            # ended) rings no bell: look in every lane.
            for lane in self._lanes + self._key_lanes:
                lane.ready = True

    # -- records -------------------------------------------------------

    async def create_outcome(self, job_id: str, data: bytes) -> bool:
        assert self._results is not None
        try:
            await self._results.create(job_id, data)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def read_outcome(self, job_id: str) -> bytes | None:
        assert self._results is not None
        try:
            entry = await self._results.get(job_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        return entry.value

    async def delete_outcome(self, job_id: str) -> None:
        assert self._results is not None
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            await self._results.purge(job_id)

    async def watch_outcome(self, job_id: str, deliver: Callable[[str, bytes], None]) -> None:
        b = self._broker
        if job_id.startswith(f"{b._origin}.") or job_id in self._watched:
            return
        self._watched.add(job_id)
        # Its record if it has one already, and any written later.
        self._subs.append(await self._watch_records(job_id, api.DeliverPolicy.LAST_PER_SUBJECT))

    async def request_cancel(self, job_id: str) -> None:
        assert self._cancels is not None
        await self._cancels.put(job_id, b"1")

    async def watch_cancels(
        self, cancelled: Callable[[str], None], caught_up: Callable[[], None]
    ) -> None:
        assert self._cancels is not None
        watcher = await self._cancels.watchall(ignore_deletes=True)
        told = False
        try:
            async for entry in watcher:
                if entry is None:
                    # nats-py's marker: the entries that existed are all in.
                    if not told:
                        told = True
                        caught_up()
                elif entry.key:
                    cancelled(entry.key)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    # -- dead letters --------------------------------------------------

    async def dead_letter(self, delivery: Any, letter: dict[str, Any]) -> None:
        letter = dict(letter, subject=delivery.subject)
        await self._js.publish(
            f"{self._broker.name}.dead",
            json.dumps(letter).encode(),
            # One dead letter per job message, however often its death is
            # written (a worker may die between this and its ack).
            headers={"Nats-Msg-Id": f"dead:{letter['id']}:{delivery.stream_seq}"},
        )

    async def dead_letters(self) -> list[DeadLetter]:
        b = self._broker
        info = await self._js.stream_info(b.dead_stream)
        letters: list[DeadLetter] = []
        if info.state.messages == 0:
            return letters
        seq = info.state.first_seq
        while seq <= info.state.last_seq:
            try:
                msg = await self._js.get_msg(b.dead_stream, seq)
            except nats.js.errors.NotFoundError:
                seq += 1
                continue
            raw = json.loads(msg.data or b"{}")
            letters.append(
                DeadLetter(
                    id=str(raw.get("id")),
                    task=raw.get("task"),
                    reason=str(raw.get("reason")),
                    error=raw.get("error"),
                    attempts=int(raw.get("attempts") or 0),
                    payload=base64.b64decode(raw.get("payload") or ""),
                    codec=raw.get("codec"),
                    subject=str(raw.get("subject") or ""),
                    dead_at=float(raw.get("at") or 0.0),
                    seq=seq,
                )
            )
            seq += 1
        return letters

    async def requeue(self, letter: DeadLetter) -> None:
        b = self._broker
        headers = {"Nats-Msg-Id": f"{letter.id}:requeued:{letter.seq}"}
        if letter.codec:
            headers[CODEC_HEADER] = letter.codec
        subject = letter.subject or f"{b.name}.jobs.normal"
        await self.delete_outcome(letter.id)
        await self._js.publish(subject, letter.payload, headers=headers)
        await self._js.delete_msg(b.dead_stream, letter.seq)


def _seconds(name: str, value: object) -> float:
    """A finite number of seconds >= 1 (NATS keeps durations in whole nanoseconds)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not (1 <= value < 10**9):
        raise ValueError(f"{name} must be from 1 to 10**9 seconds, got {value!r}")
    return float(value)


async def _ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        assert config.name is not None
        info = await js.stream_info(config.name)
        if info.config.retention != config.retention or info.config.subjects != config.subjects:
            raise RuntimeError(
                f"a JetStream stream named {config.name!r} exists with another setup "
                f"(subjects {info.config.subjects}, retention {info.config.retention}): "
                f"choose another broker name= or delete it ({exc})"
            ) from exc


async def _ensure_bucket(js: JetStreamContext, bucket: str, ttl: float) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    with contextlib.suppress(nats.js.errors.BadRequestError):
        await js.create_key_value(bucket=bucket, ttl=ttl, history=1)
    return await js.key_value(bucket)


async def _ensure_consumer(js: JetStreamContext, stream: str, config: api.ConsumerConfig) -> float:
    """Create the lane's consumer unless it exists; return its lease (ack wait) in seconds.

    An existing consumer is left as it is: adding it again would update its
    ack wait to this broker's, and shorten the lease under workers that
    extend it for a longer one.
    """
    assert config.durable_name is not None
    try:
        info = await js.consumer_info(stream, config.durable_name)
    except nats.js.errors.NotFoundError:
        try:
            info = await js.add_consumer(stream, config)
        except nats.js.errors.BadRequestError:
            # Created by another process in the meantime.
            info = await js.consumer_info(stream, config.durable_name)
    if info.config.filter_subject != config.filter_subject:
        raise RuntimeError(
            f"the consumer {config.durable_name!r} of stream {stream!r} filters "
            f"{info.config.filter_subject!r}, not {config.filter_subject!r}: it is not this "
            f"broker's lane (another program uses the name?)"
        )
    lease = info.config.ack_wait
    return float(lease) if lease else float(config.ack_wait or 30.0)


class JetStreamBroker(Broker):
    """Submit jobs to NATS JetStream, and serve them on any number of worker processes.

    Args:
        servers: The NATS server URL(s).
        name: Names the streams, consumers and buckets (letters, digits,
            `_` and `-`, at most 32). Brokers with the same name share jobs.
        ack_wait: The lease, in seconds: a job held by a worker that stops
            answering (it died, or its machine did) is delivered again this
            long after its last sign of life. A live worker extends the
            lease every `ack_wait / 3` while the job runs, so a job may run
            far longer than this.
        result_ttl: How long terminal records and cancellations are kept, in
            seconds.
        key_partitions: How many key lanes there are (jobs of different keys
            in one lane wait for each other).
        codec: "json" (default), "msgpack", or a `Codec` such as
            `asyncpool.brokers.PickleCodec(secret=...)`.
        retry: The retry policy of tasks that set none (default: none).
        max_deliver: The default most deliveries of a job.
        connect_options: Passed to `nats.connect` (credentials, TLS, ...).

    Raises:
        TypeError, ValueError: a wrong argument; the message names it.
    """

    def __init__(
        self,
        servers: str | list[str] = "nats://127.0.0.1:4222",
        *,
        name: str = "asyncpool",
        ack_wait: float = 30.0,
        result_ttl: float = 86_400.0,
        key_partitions: int = 8,
        codec: str | Codec = "json",
        retry: Any = None,
        max_deliver: int = 5,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(codec=codec, retry=retry, max_deliver=max_deliver)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"name must be 1 to 32 letters, digits, '_' or '-' (it names streams), got {name!r}"
            )
        ack = _seconds("ack_wait", ack_wait)
        ttl = _seconds("result_ttl", result_ttl)
        if (
            isinstance(key_partitions, bool)
            or not isinstance(key_partitions, int)
            or not 1 <= key_partitions <= 256
        ):
            raise ValueError(f"key_partitions must be an int from 1 to 256, got {key_partitions!r}")
        if isinstance(servers, str):
            servers = [servers]
        self.servers = list(servers)
        self.name = name
        self.ack_wait = ack
        self.result_ttl = ttl
        self.key_partitions = key_partitions
        self.stream = f"{name}_jobs"
        self.dead_stream = f"{name}_dead"
        self._connect_options = dict(connect_options or {})
        self._nc: Client | None = None
        self._transport: _JetStreamTransport | None = None

    @property
    def transport(self) -> _JetStreamTransport:
        if self._transport is None:
            raise RuntimeError(f"{self!r} is not open: use `async with broker:` first")
        return self._transport

    async def _open(self) -> None:
        """Connect (within `connect_timeout`), then create or check the streams.

        A first connection that no server accepts within `connect_timeout`
        seconds (5 unless `connect_options` say otherwise) raises
        `ConnectionError`: with reconnecting on (the default), nats-py itself
        would try for ever. Once open, a lost connection is retried for
        ever, and each loss and each return is one WARNING line on the
        `asyncpool` logger (nats-py's default is a traceback per failed
        attempt). `connect_options` win over these defaults, the callbacks
        included.

        Raises:
            ConnectionError: no server answered within `connect_timeout`.
        """
        nc = Client()
        # The last error of a connection attempt: what the ConnectionError says.
        attempt_errors: list[Exception] = []

        async def error_cb(exc: Exception) -> None:
            if not nc.is_connected or isinstance(
                exc, OSError | nats.errors.StaleConnectionError | nats.errors.NoServersError
            ):
                # A failed attempt while the server is away (one every
                # reconnect_time_wait): the disconnect line says it all.
                attempt_errors[:] = [exc]
                _log.debug("asyncpool: NATS connection attempt failed: %r", exc)
            elif isinstance(exc, nats.errors.Error):
                _log.warning("asyncpool: broker %r: NATS error: %s", self.name, exc)
            else:  # raised by a subscription's callback: a bug, keep its traceback
                _log.error("asyncpool: broker %r: a NATS callback failed", self.name, exc_info=exc)

        async def disconnected_cb() -> None:
            # Only while open: _shut forgets the connection before closing it.
            if self._nc is nc:
                _log.warning(
                    "asyncpool: broker %r lost its connection to NATS (%s); %s",
                    self.name,
                    ", ".join(self.servers),
                    "reconnecting" if nc.is_reconnecting else "not reconnecting",
                )

        async def reconnected_cb() -> None:
            if self._nc is nc:
                _log.warning(
                    "asyncpool: broker %r reconnected to NATS (%s)",
                    self.name,
                    nc.connected_url.geturl() if nc.connected_url else ", ".join(self.servers),
                )

        options: dict[str, Any] = {
            "connect_timeout": 5,
            "max_reconnect_attempts": -1,
            "error_cb": error_cb,
            "disconnected_cb": disconnected_cb,
            "reconnected_cb": reconnected_cb,
            **self._connect_options,
        }
        limit = options["connect_timeout"]
        try:
            async with asyncio.timeout(limit):
                await nc.connect(servers=self.servers, **options)
        except (OSError, nats.errors.Error) as exc:  # a TimeoutError is an OSError
            with contextlib.suppress(Exception):
                await nc.close()
            reason = attempt_errors[-1] if attempt_errors else exc
            raise ConnectionError(
                f"cannot connect to NATS at {', '.join(self.servers)} "
                f"(tried for {limit} s): {str(reason) or type(reason).__name__}"
            ) from exc
        except BaseException:
            # Cancelled, or refused its arguments: a client that may never
            # have started cannot always close cleanly; what matters is the error.
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        try:
            transport = _JetStreamTransport(self, nc, nc.jetstream())
            await transport.open()
        except BaseException:
            await nc.close()
            raise
        self._nc = nc
        self._transport = transport

    async def _shut(self) -> None:
        """Close the connection, after what was sent is flushed.

        Raises:
            ConnectionError: the server was unreachable (the client was
                reconnecting, or had given up): what was sent since the
                connection was lost never reached it.
        """
        transport, nc = self._transport, self._nc
        self._transport = self._nc = None
        if transport is not None:
            await transport.close()
        if nc is None:
            return
        if nc.is_connected:
            await nc.drain()
            return
        # drain() would refuse (ConnectionReconnectingError); close() stops
        # the reconnecting. It may fail writing what was buffered: that is
        # lost either way, and the error below says so.
        with contextlib.suppress(Exception):
            await nc.close()
        raise ConnectionError(
            f"broker {self.name!r} closed while its NATS server ({', '.join(self.servers)}) "
            "was unreachable: what it sent since the connection was lost (acks, results, "
            "jobs handed back) never reached the server"
        )

    def subject_for(self, *, priority: int = 0, key: str | int | None = None) -> str:
        """The subject jobs of this priority and key are published on."""
        return self.transport.subject_for(priority, key)

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter, oldest first."""
        self._check_open()
        return await self.transport.dead_letters()

    async def requeue(self, letter: DeadLetter | str) -> None:
        """Send a dead letter's job back to its queue (its old terminal record is removed).

        Raises:
            LookupError: no dead letter has that id.
        """
        self._check_open()
        if isinstance(letter, str):
            matches = [d for d in await self.dead_letters() if d.id == letter]
            if not matches:
                raise LookupError(f"no dead letter has the id {letter!r}")
            letter = matches[-1]
        await self.transport.requeue(letter)

    async def destroy(self) -> None:
        """Delete everything this broker keeps on the server (jobs, records, dead letters).

        Its watches stop first (they would look for the deleted streams every
        second); after this the broker is good only for closing. Workers still
        serving the name elsewhere are not told: stop them first.
        """
        self._check_open()
        assert self._nc is not None
        await self.transport.close()
        jsm = self._nc.jetstream()
        for stream in (self.stream, self.dead_stream):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await jsm.delete_stream(stream)
        for bucket in (f"{self.name}_results", f"{self.name}_cancels"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await jsm.delete_key_value(bucket)

    def __repr__(self) -> str:
        state = "open" if self._transport is not None else "closed"
        return f"<JetStreamBroker {self.name!r} {state} servers={self.servers}>"
