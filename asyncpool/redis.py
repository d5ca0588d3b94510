"""`RedisBroker`: asyncpool's jobs across processes and machines, on Redis Streams.

```python
from asyncpool import Dispatcher
from asyncpool.redis import RedisBroker

broker = RedisBroker("redis://127.0.0.1:6379/0")

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

Needs the `redis` extra (redis-py's `redis.asyncio`) and Redis 6.2 or newer.
The same API and guarantees as `asyncpool.jetstream.JetStreamBroker`; how
they are kept on Redis (all keys named `{<name>}:...`):

* a stream per priority lane and `key_partitions` key lanes, one consumer
  group; a worker reads (`XREADGROUP`) only as many jobs as it has free
  workers, and an acked entry is deleted, so streams hold only what is
  queued or running;
* the lease: an entry whose holder has not extended it for `ack_wait`
  seconds is claimed by another worker (`XAUTOCLAIM`, atomic: two
  reclaimers never both get it); a live worker extends its jobs' leases
  every `ack_wait / 3` by claiming its own entries again, so a long job is
  never taken from it; delivery counts come from the pending entries list;
* a retry waits out its backoff in a sorted set and is moved back into its
  lane atomically (a Lua script) once due;
* a key lane lets one job out at a time: its pending entry is the lock, and
  a holder that dies loses it when its lease runs out;
* terminal records are keys with a TTL (`result_ttl`), written once, and
  pushed to the submitting process over pub/sub (which, after a lost
  connection, reads the records of every job it still awaits);
* cancellation requests are a stream, dead letters another;
* the workers' statuses (`transport.put_status()` / `statuses()`) are keys
  with a TTL, found through a sorted set of worker names.

Redis must keep what it is given: run it with persistence (`appendonly
yes`; `appendfsync always` for no loss at all when it restarts) and
`maxmemory-policy noeviction`. A Redis that keeps nothing on disk loses
every queued job when it restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

try:
    import redis.asyncio
    import redis.exceptions
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff, NoBackoff
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "asyncpool.redis needs redis-py: pip install 'asyncpool-dispatch[redis]'"
    ) from exc

from ._broker import Broker
from ._codecs import Codec
from ._keeps_dead_letters import DeadLetterStore, KeepsDeadLetters
from ._redis_transport import LOST, RedisTransport
from ._telemetry import Instrument

__all__ = ("RedisBroker",)

_log = logging.getLogger("asyncpool")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_OLDEST: tuple[int, int] = (6, 2)
"""The oldest Redis with what the broker needs (`XAUTOCLAIM`)."""
_COMMAND_RETRIES = 20
"""How often a command is tried again on a lost connection (about 10 s in all)."""


def _seconds(name: str, value: object) -> float:
    """A finite number of seconds >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not (1 <= value < 10**9):
        raise ValueError(f"{name} must be from 1 to 10**9 seconds, got {value!r}")
    return float(value)


def _redacted(url: str) -> str:
    """The URL without its password, to name the server in messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


class RedisBroker(Broker, KeepsDeadLetters):
    """Submit jobs to Redis Streams, and serve them on any number of worker processes.

    Args:
        url: The Redis server, as `redis.asyncio.Redis.from_url` takes it
            (`redis://[[user]:password@]host[:port][/db]`, `rediss://`,
            `unix://`).
        name: Names every key the broker keeps (letters, digits, `_` and
            `-`, at most 32). Brokers with the same name share jobs.
        ack_wait: The lease, in seconds: a job held by a worker that stops
            answering (it died, or its machine did) is delivered again this
            long after its last sign of life. A live worker extends the
            lease every `ack_wait / 3` while the job runs, so a job may run
            far longer than this. Every broker of one name must use the
            same value.
        result_ttl: How long terminal records and cancellations are kept, in
            seconds.
        key_partitions: How many key lanes there are (jobs of different keys
            in one lane wait for each other). Every broker of one name must
            use the same value.
        codec: "json" (default), "msgpack", or a `Codec` such as
            `asyncpool.brokers.PickleCodec(secret=...)`.
        retry: The retry policy of tasks that set none (default: none).
        max_deliver: The default most deliveries of a job.
        connect_options: Passed to `redis.asyncio.Redis.from_url`
            (credentials, TLS, timeouts, ...); they win over the broker's
            defaults (`socket_connect_timeout=5`, and commands tried again
            for about 10 s on a lost connection).
        instruments: `Instrument`s (`asyncpool.metrics.PrometheusMetrics`,
            `asyncpool.tracing.OpenTelemetryTracing`, ...): told about every
            job `serve()` runs and what it does with each delivery; a
            tracing instrument's trace context travels with each job
            `submit()` sends.

    Raises:
        TypeError, ValueError: a wrong argument; the message names it.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        name: str = "asyncpool",
        ack_wait: float = 30.0,
        result_ttl: float = 86_400.0,
        key_partitions: int = 8,
        codec: str | Codec = "json",
        retry: Any = None,
        max_deliver: int = 5,
        connect_options: dict[str, Any] | None = None,
        instruments: Sequence[Instrument] = (),
    ) -> None:
        super().__init__(codec=codec, retry=retry, max_deliver=max_deliver, instruments=instruments)
        if not isinstance(url, str) or not url:
            raise TypeError(f"url must be a Redis URL (redis://host:port/db), got {url!r}")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"name must be 1 to 32 letters, digits, '_' or '-' (it names keys), got {name!r}"
            )
        ack = _seconds("ack_wait", ack_wait)
        ttl = _seconds("result_ttl", result_ttl)
        if (
            isinstance(key_partitions, bool)
            or not isinstance(key_partitions, int)
            or not 1 <= key_partitions <= 256
        ):
            raise ValueError(f"key_partitions must be an int from 1 to 256, got {key_partitions!r}")
        if connect_options is not None and not isinstance(connect_options, dict):
            raise TypeError(f"connect_options must be a dict, got {connect_options!r}")
        self.url = url
        self.name = name
        self.ack_wait = ack
        self.result_ttl = ttl
        self.key_partitions = key_partitions
        self._connect_options = dict(connect_options or {})
        self._clients: tuple[redis.asyncio.Redis, redis.asyncio.Redis] | None = None
        self._transport: RedisTransport | None = None

    @property
    def transport(self) -> RedisTransport:
        if self._transport is None:
            raise RuntimeError(f"{self!r} is not open: use `async with broker:` first")
        return self._transport

    def _client(self, *, retries: int) -> redis.asyncio.Redis:
        options: dict[str, Any] = {
            "socket_connect_timeout": 5,
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), retries)
            if retries
            else Retry(NoBackoff(), 0),
            "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
            **self._connect_options,
        }
        client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(self.url, **options)
        return client

    async def _open(self) -> None:
        """Connect (within the connect timeout), check the server, set up the lanes.

        Raises:
            ConnectionError: no server answered within the connect timeout
                (`socket_connect_timeout`, 5 s unless `connect_options` say
                otherwise), or it refused the credentials.
            RuntimeError: the server is older than Redis 6.2.
        """
        client = self._client(retries=_COMMAND_RETRIES)
        listener = self._client(retries=0)
        limit = float(self._connect_options.get("socket_connect_timeout") or 5)
        where = _redacted(self.url)
        try:
            try:
                async with asyncio.timeout(limit):
                    info = await client.info("server")
            except (*LOST, redis.exceptions.AuthenticationError) as exc:
                raise ConnectionError(
                    f"cannot connect to Redis at {where} (within {limit:g} s): "
                    f"{str(exc) or type(exc).__name__}"
                ) from exc
            version = str(info.get("redis_version", "0"))
            if tuple(int(part) for part in version.split(".")[:2]) < _OLDEST:
                raise RuntimeError(
                    f"the Redis at {where} is version {version}; asyncpool.redis needs "
                    f"6.2 or newer (XAUTOCLAIM)"
                )
            await self._check_memory_policy(client, where)
            transport = RedisTransport(
                self,
                client,
                listener,
                origin=self._origin,
                where=where,
                deliver=self._outcome_arrived,
                awaited=lambda: list(self._waiting),
            )
            await transport.open()
        except BaseException:
            with contextlib.suppress(Exception):
                await listener.aclose()
                await client.aclose()
            raise
        self._clients = (client, listener)
        self._transport = transport

    async def _check_memory_policy(self, client: redis.asyncio.Redis, where: str) -> None:
        with contextlib.suppress(redis.exceptions.ResponseError):
            memory = await client.info("memory")
            policy = memory.get("maxmemory_policy", "noeviction")
            if policy != "noeviction" and int(memory.get("maxmemory", 0) or 0):
                _log.warning(
                    "asyncpool: the Redis at %s may evict keys (maxmemory-policy %s): "
                    "queued jobs and results can vanish when it is full; set "
                    "maxmemory-policy noeviction",
                    where,
                    policy,
                )

    async def _shut(self) -> None:
        """Stop listening, leave the group if holding nothing, close the connections.

        Raises:
            ConnectionError: the server did not answer as the broker closed:
                what failed to reach it since it was lost (acks, results, jobs
                handed back) was reported to its callers, and the jobs this
                process held are redelivered once their lease runs out.
        """
        transport, clients = self._transport, self._clients
        self._transport = self._clients = None
        if transport is not None:
            await transport.close()
        if clients is None:
            return
        listener = clients[1]
        answered = True
        try:
            async with asyncio.timeout(1.0):
                await listener.ping()
        except (*LOST, redis.exceptions.RedisError):
            answered = False
        for each in clients:
            with contextlib.suppress(Exception):
                await each.aclose()
        if not answered:
            raise ConnectionError(
                f"broker {self.name!r} closed while its Redis server ({_redacted(self.url)}) "
                "did not answer: what it sent since the connection was lost (acks, results, "
                "jobs handed back) may not have reached the server"
            )

    def lane_for(self, *, priority: int = 0, key: str | int | None = None) -> str:
        """The stream (key) jobs of this priority and key are added to."""
        return self.transport.lane_for(priority, key)

    @property
    def _dead_letter_store(self) -> DeadLetterStore:
        return self.transport

    async def destroy(self) -> None:
        """Delete every key this broker keeps (jobs, records, dead letters, statuses).

        Its listener stops first; after this the broker is good only for
        closing. Workers still serving the name elsewhere are not told: stop
        them first.
        """
        self._check_open()
        transport = self.transport
        await transport.close()
        await transport.destroy()

    def __repr__(self) -> str:
        state = "open" if self._transport is not None else "closed"
        return f"<RedisBroker {self.name!r} {state} url={_redacted(self.url)}>"
