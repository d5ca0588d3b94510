"""`asyncpool._transport.Transport` on a NATS connection: what a JetStream broker keeps.

Sets up (or checks) the streams, consumers and buckets, pulls the lanes in
their order, rings idle workers when a job is published, keeps the terminal
records and cancellation requests, and the dead letters; counts what the
lanes hold (from their consumers); the workers' statuses are kept by
`_jetstream_statuses` (a KV bucket, made on first use).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from ._deadletters import DeadLetter
from ._envelope import Envelope, partition_of
from ._jetstream_lanes import CODEC_HEADER, JetStreamDelivery, Lane
from ._jetstream_statuses import JetStreamStatuses
from ._lanes_info import LaneInfo
from ._transport import Delivery

if TYPE_CHECKING:
    from .jetstream import JetStreamBroker

__all__ = ("JetStreamTransport",)

_log = logging.getLogger("asyncpool")
_LANES: Final = ("high", "normal", "low")
_SUSPECT_RECHECK: Final = 0.005
"""How soon a lane whose bell rang but that was found empty is looked at again (seconds)."""


class JetStreamTransport:
    """`asyncpool._transport.Transport` on a NATS connection."""

    def __init__(self, broker: JetStreamBroker, nc: Client, js: JetStreamContext) -> None:
        self._broker = broker
        self._nc = nc
        self._js = js
        self._lanes: list[Lane] = []
        self._key_lanes: list[Lane] = []
        self._bell = asyncio.Event()
        self._suspects: list[Lane] = []
        self._results: KeyValue | None = None
        self._cancels: KeyValue | None = None
        self._statuses = JetStreamStatuses(js, broker.name, _ensure_bucket)
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
            lane = Lane(
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

    async def lane_counts(self) -> list[LaneInfo]:
        """Each lane's counts, from its consumer: undelivered (`num_pending`) and unacked.

        A job handed back with a delay (a retry waiting out its backoff)
        stays delivered-and-unacked on the server until it is delivered
        again: it counts as running, and `delayed` is 0. So does a job held
        by a worker that died, until its lease runs out.
        """
        b = self._broker
        # All at once (one round trip's wait, not one per key lane); gather
        # raises the first error as it is, and cancels the rest if cancelled.
        infos = await asyncio.gather(
            *(self._js.consumer_info(b.stream, lane.name) for lane in self._lanes + self._key_lanes)
        )
        rows = [
            LaneInfo(name, info.num_pending or 0, info.num_ack_pending or 0)
            for name, info in zip(_LANES, infos[: len(_LANES)], strict=True)
        ]
        keyed = infos[len(_LANES) :]
        rows.append(
            LaneInfo(
                "keys",
                sum(info.num_pending or 0 for info in keyed),
                sum(info.num_ack_pending or 0 for info in keyed),
            )
        )
        return rows

    # -- records -------------------------------------------------------

    async def create_outcome(self, job_id: str, data: bytes) -> bool:
        assert self._results is not None
        try:
            await self._results.create(job_id, data)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def finish(self, delivery: Any, job_id: str, record: bytes | None) -> None:
        if record is not None:
            await self.create_outcome(job_id, record)
        await delivery.ack()

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

    # -- workers' statuses: `_jetstream_statuses` ----------------------

    async def put_status(self, worker: str, data: bytes, ttl: float) -> None:
        await self._statuses.put(worker, data, ttl)

    async def statuses(self) -> list[bytes]:
        return await self._statuses.read()

    async def drop_status(self, worker: str) -> None:
        await self._statuses.drop(worker)

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
        """Publish the dead letter's job again, then remove the letter.

        Raises:
            LookupError: the letter is gone (deleted or requeued already).
        """
        b = self._broker
        try:
            await self._js.get_msg(b.dead_stream, int(letter.seq))
        except nats.js.errors.NotFoundError as exc:
            raise LookupError(f"no dead letter of {letter.id!r} at sequence {letter.seq}") from exc
        # Two requeues of one letter at once publish one job: the id is the letter's.
        headers = {"Nats-Msg-Id": f"{letter.id}:requeued:{letter.seq}"}
        if letter.codec:
            headers[CODEC_HEADER] = letter.codec
        subject = letter.subject or f"{b.name}.jobs.normal"
        await self.delete_outcome(letter.id)
        await self._js.publish(subject, letter.payload, headers=headers)
        with contextlib.suppress(LookupError):  # the other requeue removed it
            await self.delete_dead_letter(letter)

    async def delete_dead_letter(self, letter: DeadLetter) -> None:
        """Remove a dead letter from its stream.

        Raises:
            LookupError: it is not there (deleted or requeued already).
        """
        stream = self._broker.dead_stream
        try:
            await self._js.delete_msg(stream, int(letter.seq))
        except nats.js.errors.APIError as exc:
            # For a message that is gone the server answers by where the
            # sequence was (inside the stream: "not found"; past its end:
            # "store EOF", a server error): ask it plainly.
            try:
                await self._js.get_msg(stream, int(letter.seq))
            except nats.js.errors.NotFoundError:
                raise LookupError(
                    f"no dead letter of {letter.id!r} at sequence {letter.seq}"
                ) from exc
            raise


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
