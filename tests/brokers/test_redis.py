"""What only the Redis engine does, against a real Redis: how it keeps its guarantees there.

The guarantees themselves are in test_conformance.py and test_chaos.py, for
both engines. These tests look at the mechanism where it differs from
JetStream's: streams emptied by acks, leases kept by re-claiming one's own
entries, reclaiming that never hands one entry to two workers, retries in a
sorted set, key lanes locked by their pending entry, records caught up after a
lost listener. A "dead worker" here is a consumer that read an entry and
never answered again: a real state of a real server, made with plain
commands.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from asyncpool import Dispatcher, Retry
from asyncpool._redis_delivery import RedisDelivery
from asyncpool.brokers import Outcome, current_job
from asyncpool.redis import RedisBroker

from .conftest import PrivateRedis

pytestmark = pytest.mark.timeout(60)

GROUP = "workers"


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def keys_of(name: str, lane: str = "lane:normal") -> str:
    return f"{{{name}}}:{lane}"


async def serving(broker: RedisBroker, workers: int = 4) -> tuple[asyncio.Event, asyncio.Task[Any]]:
    stop = asyncio.Event()
    dispatcher = Dispatcher(workers=workers)
    await dispatcher.__aenter__()

    async def run() -> Any:
        try:
            return await broker.serve(dispatcher, stop=stop)
        finally:
            await dispatcher.__aexit__(None, None, None)

    return stop, asyncio.create_task(run())


async def test_acked_jobs_leave_nothing_behind(
    redis_url: str, broker_name: str, raw: redis.asyncio.Redis
) -> None:
    """After every job ended, the lanes are empty and nothing is pending: streams do not grow."""
    broker = RedisBroker(redis_url, name=broker_name)
    add = broker.task(name="add")(_add)
    async with broker:
        stop, task = await serving(broker)
        handles = [await broker.submit(add, i, 1) for i in range(40)]
        handles += [await broker.submit(add, i, 1, key=f"k{i % 3}") for i in range(20)]
        assert sorted(await asyncio.gather(*handles)) == sorted(
            [i + 1 for i in range(40)] + [i + 1 for i in range(20)]
        )
        stop.set()
        await task
        lanes = broker.transport.lanes + broker.transport.key_lanes
        for lane in lanes:
            assert await raw.xlen(lane) == 0, lane
            assert (await raw.xpending(lane, GROUP))["pending"] == 0, lane
    # The worker held nothing when it closed: it left the group.
    for lane in lanes:
        assert await raw.xinfo_consumers(lane, GROUP) == []


async def _add(x: int, y: int) -> int:
    return x + y


async def test_entry_of_a_dead_worker_is_reclaimed_after_the_lease_as_attempt_2(
    redis_url: str, broker_name: str, raw: redis.asyncio.Redis
) -> None:
    """A consumer that read a job and went silent loses it once the lease ran out."""
    broker = RedisBroker(redis_url, name=broker_name, ack_wait=1)
    seen: list[int] = []

    @broker.task(name="job")
    async def job() -> int:
        seen.append(current_job().attempt)
        return current_job().attempt

    async with broker:
        handle = await broker.submit(job)
        # The dead worker: reads the entry, never acks or extends it.
        got = await raw.xreadgroup(GROUP, "dead-worker", {keys_of(broker_name): ">"}, count=1)
        assert len(got[0][1]) == 1
        stop, task = await serving(broker)
        assert await handle == 2
        stop.set()
        await task
    assert seen == [2]


async def test_concurrent_reclaimers_never_take_one_entry_twice(
    redis_url: str, broker_name: str, raw: redis.asyncio.Redis
) -> None:
    """Two workers reclaiming the same expired entries at once split them, never share one."""
    first = RedisBroker(redis_url, name=broker_name, ack_wait=1)
    second = RedisBroker(redis_url, name=broker_name, ack_wait=1)
    job = first.task(name="job")(_add)
    second.task(name="job")(_add)
    async with first, second:
        for i in range(60):
            await first.submit(job, i, 0, result=False)
        lane = keys_of(broker_name)
        got = await raw.xreadgroup(GROUP, "dead-worker", {lane: ">"}, count=100)
        ids = [entry_id for entry_id, _ in got[0][1]]
        assert len(ids) == 60
        # Make them look long dead (idle far past the lease).
        await raw.xclaim(lane, GROUP, "dead-worker", 0, ids, idle=60_000, justid=True)

        async def drain(broker: RedisBroker) -> list[str]:
            taken: list[str] = []
            while True:
                deliveries = await broker.transport.fetch(7)
                if not deliveries:
                    return taken
                taken += [d.entry_id for d in deliveries]  # type: ignore[attr-defined]
                broker.transport._last_reclaim = 0.0  # reclaim on every fetch

        one, two = await asyncio.gather(drain(first), drain(second))
    assert not set(one) & set(two)
    assert sorted(one + two) == sorted(i.decode() for i in ids)


async def test_lease_is_kept_by_reclaiming_own_entry_and_a_lost_one_is_not_taken_back(
    redis_url: str, broker_name: str, raw: redis.asyncio.Redis
) -> None:
    """extend() restarts one's own entry's idle time; once another worker holds it, it cannot."""
    owner = RedisBroker(redis_url, name=broker_name, ack_wait=1)
    other = RedisBroker(redis_url, name=broker_name, ack_wait=1)
    job = owner.task(name="job")(_add)
    other.task(name="job")(_add)
    async with owner, other:
        await owner.submit(job, 1, 2, result=False)
        (delivery,) = await owner.transport.fetch(1)
        assert isinstance(delivery, RedisDelivery)
        lane = keys_of(broker_name)
        # Old enough to be reclaimed...
        await raw.xclaim(
            lane, GROUP, owner.transport.consumer, 0, [delivery.entry_id], idle=5_000, justid=True
        )
        # ...but its holder extends the lease first: nobody else may take it.
        await delivery.extend()
        other.transport._last_reclaim = 0.0
        assert await other.transport.fetch(1) == []
        (pending,) = await raw.xpending_range(lane, GROUP, min="-", max="+", count=10)
        assert pending["consumer"].decode() == owner.transport.consumer
        assert pending["time_since_delivered"] < 1_000
        # Now it goes quiet for longer than the lease: the other worker takes it,
        # with the next attempt number.
        await raw.xclaim(
            lane, GROUP, owner.transport.consumer, 0, [delivery.entry_id], idle=5_000, justid=True
        )
        other.transport._last_reclaim = 0.0
        (taken,) = await other.transport.fetch(1)
        assert taken.attempt == 2
        # The old holder's extend, ack and nak no longer touch it.
        await delivery.extend()
        await delivery.ack()
        await delivery.nak(0)
        (pending,) = await raw.xpending_range(lane, GROUP, min="-", max="+", count=10)
        assert pending["consumer"].decode() == other.transport.consumer
        assert await raw.xlen(lane) == 1
        await taken.ack()
        assert await raw.xlen(lane) == 0


async def test_retry_waits_in_the_sorted_set_then_returns_to_its_lane(
    redis_url: str, broker_name: str, raw: redis.asyncio.Redis
) -> None:
    """nak(delay) moves the entry to the delayed set; a fetch after its time moves it back."""
    broker = RedisBroker(redis_url, name=broker_name)
    job = broker.task(name="job")(_add)
    async with broker:
        await broker.submit(job, 1, 2, result=False)
        (delivery,) = await broker.transport.fetch(1)
        await delivery.nak(0.4)
        lane = keys_of(broker_name)
        assert await raw.xlen(lane) == 0
        assert await raw.zcard(keys_of(broker_name, "delayed")) == 1
        # Not due yet: nothing to fetch, and it stays where it is.
        assert await broker.transport.fetch(1) == []
        assert await raw.zcard(keys_of(broker_name, "delayed")) == 1
        # The transport rings its own bell when the delay is over.
        await broker.transport.wait_for_work(5.0)
        (again,) = await broker.transport.fetch(1)
        assert again.attempt == 2
        assert again.data == delivery.data
        assert await raw.zcard(keys_of(broker_name, "delayed")) == 0
        await again.ack()


async def test_retried_keyed_job_keeps_its_place_ahead_of_the_next_of_its_key(
    redis_url: str, broker_name: str
) -> None:
    """A keyed job that fails and is retried later still runs before the next job of its key."""
    broker = RedisBroker(redis_url, name=broker_name, key_partitions=1)
    order: list[str] = []
    failed = False

    @broker.task(name="step", retry=Retry(attempts=2, backoff=0.3))
    async def step(label: str) -> None:
        nonlocal failed
        order.append(label)
        if label == "a" and not failed:
            failed = True
            raise ValueError("once")

    async with broker:
        stop, task = await serving(broker, workers=4)
        handles = [await broker.submit(step, label, key="k") for label in "abc"]
        await asyncio.gather(*handles)
        stop.set()
        await task
    assert order == ["a", "a", "b", "c"]


async def test_key_lane_held_by_a_dead_worker_is_freed_by_the_lease_in_order(
    redis_url: str, broker_name: str, raw: redis.asyncio.Redis
) -> None:
    """A key lane's lock is its pending entry: a dead holder keeps it for one lease, no longer."""
    broker = RedisBroker(redis_url, name=broker_name, ack_wait=1, key_partitions=1)
    order: list[tuple[int, int]] = []

    @broker.task(name="step")
    async def step(seq: int) -> None:
        order.append((seq, current_job().attempt))

    async with broker:
        handles = [await broker.submit(step, seq, key="k") for seq in range(3)]
        lane = keys_of(broker_name, "key:0")
        got = await raw.xreadgroup(GROUP, "dead-worker", {lane: ">"}, count=1)
        assert len(got[0][1]) == 1
        # While the dead holder's lease runs, nothing of the lane comes out.
        assert await broker.transport.fetch(4) == []
        stop, task = await serving(broker)
        await asyncio.gather(*handles)
        stop.set()
        await task
    assert order == [(0, 2), (1, 1), (2, 1)]


async def test_record_written_while_the_listener_was_away_still_ends_the_handle(
    private_redis: PrivateRedis, broker_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Pub/sub keeps nothing: after a lost connection, the records of awaited jobs are read."""
    server = private_redis()
    broker = RedisBroker(server.url, name=broker_name)
    job = broker.task(name="job")(_add)
    caplog.set_level(logging.WARNING, logger="asyncpool")
    async with broker:
        handle = await broker.submit(job, 1, 2)
        raw = redis.asyncio.Redis.from_url(server.url)
        try:
            # The record is written with no notice at all (as if the notice
            # was published while the listener was disconnected)...
            worker = RedisBroker(server.url, name=broker_name)
            async with worker:
                (delivery,) = await worker.transport.fetch(1)
                record = Outcome("succeeded", value=3, attempts=1).encode(broker.codec)
                await raw.set(keys_of(broker_name, f"result:{handle.id}"), record)
                await delivery.ack()
            assert not handle.done()
            # ...then the listener's connection breaks: it comes back and reads it.
            await raw.client_kill_filter(_type="pubsub")
            assert await asyncio.wait_for(handle, 10) == 3
        finally:
            await raw.aclose()
    assert await handle == 3
    assert "lost its connection to Redis" in caplog.text
    assert "reconnected to Redis" in caplog.text


async def test_destroy_deletes_every_key_of_the_broker(
    redis_url: str, broker_name: str, raw: redis.asyncio.Redis
) -> None:
    broker = RedisBroker(redis_url, name=broker_name)
    job = broker.task(name="job")(_add)
    bad = broker.task(name="bad")(_fail)
    async with broker:
        stop, task = await serving(broker)
        assert await (await broker.submit(job, 1, 2)) == 3
        with pytest.raises(Exception, match="nope"):
            await (await broker.submit(bad))
        await (await broker.submit(job, 1, 2, key="k")).cancel()
        stop.set()
        await task
        assert [key async for key in raw.scan_iter(match=f"*{{{broker_name}}}*")]
        await broker.destroy()
    assert [key async for key in raw.scan_iter(match=f"*{{{broker_name}}}*")] == []


async def _fail() -> None:
    raise RuntimeError("nope")


async def test_password_never_appears_in_messages() -> None:
    broker = RedisBroker(
        "redis://:hunter2secret@127.0.0.1:1/0", connect_options={"socket_connect_timeout": 0.5}
    )
    assert "hunter2secret" not in repr(broker)
    with pytest.raises(ConnectionError) as caught:
        async with broker:
            pass  # pragma: no cover - it does not open
    assert "hunter2secret" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)


async def test_eviction_policy_that_can_drop_jobs_is_warned_about(
    private_redis: PrivateRedis, broker_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = private_redis()
    raw = redis.asyncio.Redis.from_url(server.url)
    try:
        await raw.config_set("maxmemory", "100mb")
        await raw.config_set("maxmemory-policy", "allkeys-lru")
    finally:
        await raw.aclose()
    caplog.set_level(logging.WARNING, logger="asyncpool")
    async with RedisBroker(server.url, name=broker_name):
        pass
    assert "maxmemory-policy allkeys-lru" in caplog.text


async def test_consumers_of_gone_workers_that_hold_nothing_are_pruned(
    redis_url: str, broker_name: str, raw: redis.asyncio.Redis
) -> None:
    """A long-quiet consumer that holds nothing leaves the group; a holder or a recent one stays."""
    broker = RedisBroker(redis_url, name=broker_name)
    job = broker.task(name="job")(_add)
    lane = keys_of(broker_name)

    async def read(consumer: str, *, ack: bool) -> None:
        got = await raw.xreadgroup(GROUP, consumer, {lane: ">"}, count=1)
        if ack:
            await raw.xack(lane, GROUP, got[0][1][0][0])

    async with broker:
        for i in range(3):
            await broker.submit(job, i, 0, result=False)
        await read("gone-empty", ack=True)
        await read("gone-holding", ack=False)
        # Quiet for longer than the limit below (a consumer's idle time only grows).
        await asyncio.sleep(1.2)
        await read("recent-empty", ack=True)
        assert await broker.transport.prune(older_than=1.0) == 1
        names = {c["name"].decode() for c in await raw.xinfo_consumers(lane, GROUP)}
    assert names == {"gone-holding", "recent-empty"}


async def test_scripts_called_together_go_as_one_pipeline_and_fail_alone(
    redis_url: str, broker_name: str, raw: redis.asyncio.Redis
) -> None:
    """Calls made in one turn of the loop share a connection and a round trip; errors stay apart."""
    broker = RedisBroker(redis_url, name=broker_name, connect_options={"client_name": broker_name})
    job = broker.task(name="job")(_add)
    async with broker:
        await raw.set(keys_of(broker_name, "lane:nowhere"), b"not a stream")
        results = await asyncio.gather(
            *(broker.submit(job, i, 0, result=False) for i in range(50)),
            # A lane that is not a stream: this script fails on the server.
            broker.transport.scripts_publish(
                [keys_of(broker_name, "lane:nowhere"), keys_of(broker_name, "seen:x"), "k"],
                [b"{}", "json", "x", "bell", 30, 0],
            ),
            return_exceptions=True,
        )
        assert all(not isinstance(r, BaseException) for r in results[:50])
        assert isinstance(results[50], redis.exceptions.ResponseError)
        assert await raw.xlen(keys_of(broker_name)) == 50
        # One connection for the 51 calls (one call each would have opened
        # ~51), besides the listener's and the one that opened the broker.
        clients = [c for c in await raw.client_list() if c["name"] == broker_name]
        assert len(clients) <= 3, clients


async def test_scripts_still_run_after_the_server_forgot_them(
    private_redis: PrivateRedis, broker_name: str
) -> None:
    """A restarted server knows no scripts: each is sent whole again, once."""
    server = private_redis()
    broker = RedisBroker(server.url, name=broker_name)
    job = broker.task(name="job")(_add)
    async with broker:
        stop, task = await serving(broker)
        assert await (await broker.submit(job, 1, 2)) == 3
        raw = redis.asyncio.Redis.from_url(server.url)
        try:
            await raw.script_flush()
        finally:
            await raw.aclose()
        handles = await asyncio.gather(*(broker.submit(job, i, 1) for i in range(20)))
        assert sorted(await asyncio.gather(*handles)) == list(range(1, 21))
        stop.set()
        await task


async def test_lanes_that_lost_their_groups_are_set_up_again_and_serving_goes_on(
    redis_url: str, broker_name: str, raw: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that forgot everything (restarted with nothing kept): a warning, not a crash."""
    broker = RedisBroker(redis_url, name=broker_name)
    job = broker.task(name="job")(_add)
    caplog.set_level(logging.WARNING, logger="asyncpool")
    async with broker:
        stop, task = await serving(broker)
        assert await (await broker.submit(job, 1, 2)) == 3
        await raw.delete(*broker.transport.lanes, *broker.transport.key_lanes)
        assert await (await broker.submit(job, 2, 2)) == 4
        assert await (await broker.submit(job, 3, 2, key="k")) == 5
        stop.set()
        report = await task
    assert report.succeeded == 3
    assert "has lost the broker's consumer groups" in caplog.text


async def test_close_with_the_server_gone_raises_connection_error(
    private_redis: PrivateRedis, broker_name: str
) -> None:
    """As for JetStream: a broker that closes with its server gone says so."""
    server = private_redis()
    broker = RedisBroker(server.url, name=broker_name)
    with pytest.raises(ConnectionError, match="did not answer"):
        async with broker:
            server.kill()
    assert "closed" in repr(broker)


async def test_fetch_stopped_midway_hands_back_what_it_took(
    redis_url: str, broker_name: str, raw: redis.asyncio.Redis
) -> None:
    """A fetch cancelled while its script runs: what it took goes back now, not after a lease."""
    broker = RedisBroker(redis_url, name=broker_name)
    job = broker.task(name="job")(_add)
    async with broker:
        for i in range(3):
            await broker.submit(job, i, 0, result=False)
        transport = broker.transport
        await transport.fetch(0)  # subscribed to the bell: the next fetch goes straight out
        fetching = asyncio.create_task(transport.fetch(3))
        await asyncio.sleep(0)  # the script is on its way
        fetching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetching
        await transport.hand_back_strays()
        lane = keys_of(broker_name)
        assert (await raw.xpending(lane, GROUP))["pending"] == 0
        again = await transport.fetch(3)
        assert sorted(d.attempt for d in again) == [2, 2, 2]
        for delivery in again:
            await delivery.ack()
