"""The Redis counterparts of JetStream's engine-specific tests, where the behaviour is the same.

test_jetstream.py has what only JetStreamBroker does and test_redis.py the
Redis engine's own mechanism; these are the promises the two make alike in
their own terms: opening with no server there fails with ConnectionError
naming the URL once the connect timeout has passed (as test_jetstream.py's
test of the same name), and everything the broker keeps is named from its
name (every key contains `{<name>}`, which lets an operator, the broker's
`destroy()` and the tests' cleanup find them all).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from asyncpool import Retry
from asyncpool.brokers import RemoteJobError
from asyncpool.redis import RedisBroker

from ._harness import Gate, register, serving
from ._servers import free_port, redis_client
from .conftest import PrivateRedis

pytestmark = pytest.mark.timeout(30)


async def test_open_without_a_server_raises_connection_error_after_the_connect_timeout() -> None:
    """Nobody at the address: opening raises ConnectionError once the connect timeout has passed."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    broker = RedisBroker(url, name="nobody", connect_options={"socket_connect_timeout": 1})
    started = time.monotonic()
    # Bounded here, so that trying for ever fails this test alone.
    async with asyncio.timeout(10):
        with pytest.raises(ConnectionError) as raised:
            async with broker:
                pass
    # A refused connection is known at once; a silent host takes the timeout.
    assert str(raised.value).startswith(f"cannot connect to Redis at {url} (within 1 s): ")
    assert time.monotonic() - started < 5
    assert repr(broker).startswith("<RedisBroker 'nobody' closed")


async def test_every_key_the_broker_makes_is_named_with_its_name_in_braces(
    private_redis: PrivateRedis, broker_name: str
) -> None:
    """On a server of its own, every key a busy broker leaves contains `{<name>}`."""
    server = private_redis()
    gate = Gate()
    async with RedisBroker(server.url, name=broker_name, ack_wait=5) as broker:
        tasks = register(broker, gate)
        async with serving(broker):
            assert await (await broker.submit(tasks["add"], 1, 2)) == 3
            assert await (await broker.submit(tasks["flaky"], 2)) == 2
            failing = await broker.submit(tasks["flaky"], 5, retry=Retry(attempts=1))
            with pytest.raises(RemoteJobError):
                await failing
            assert await (await broker.submit(tasks["record"], "keyed", key="k")) == "keyed"
        cancelled = await broker.submit(tasks["record"], "cancelled", priority=1)
        assert await cancelled.cancel() is True
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await broker.submit(tasks["record"], "queued", priority=-1, result=False)
        client = redis_client(server.url)
        try:
            keys = sorted([key.decode() async for key in client.scan_iter(count=1000)])
        finally:
            await client.aclose()
    assert keys, "the broker kept nothing on the server"
    assert [key for key in keys if f"{{{broker_name}}}" not in key] == [], keys
