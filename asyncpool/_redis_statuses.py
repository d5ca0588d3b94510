"""The workers' statuses of a Redis broker: a key per worker, and a sorted set to find them.

* `{name}:status:<worker>`: a worker's status, with its TTL;
* `{name}:statuses`: a sorted set of the worker names scored by when their
  status expires (server time, ms), to find them without scanning keys.

The atomic steps are Lua scripts (`PUT_STATUS`, `STATUSES`, `DROP_STATUS` in
`_redis_scripts`). The transport (`_redis_transport`) makes one
`RedisStatuses` and hands it its `put_status`, `statuses` and `drop_status`.
"""

from __future__ import annotations

import math

import redis.asyncio

from . import _redis_scripts as scripts
from ._redis_calls import Pipeliner, Script, connection_errors
from ._transport import check_status_ttl, check_worker

__all__ = ("RedisStatuses",)


class RedisStatuses:
    """The workers' statuses of one broker, under its key prefix `{name}`."""

    __slots__ = ("_redis", "_where", "_prefix", "key", "_put", "_live", "_drop")

    def __init__(
        self, client: redis.asyncio.Redis, pipeliner: Pipeliner, prefix: str, where: str
    ) -> None:
        self._redis = client
        self._where = where
        self._prefix = prefix
        # The sorted set of worker names, scored by when their status expires.
        self.key = f"{prefix}:statuses"
        self._put = Script(pipeliner, scripts.PUT_STATUS)
        self._live = Script(pipeliner, scripts.STATUSES)
        self._drop = Script(pipeliner, scripts.DROP_STATUS)

    def _status_key(self, worker: str) -> str:
        return f"{self._prefix}:status:{worker}"

    async def put(self, worker: str, data: bytes, ttl: float) -> None:
        """Set the worker's key with its TTL, and its expiry in the set (server time)."""
        worker = check_worker(worker)
        ttl_ms = max(1, math.ceil(check_status_ttl(ttl) * 1000))
        await self._put([self._status_key(worker), self.key], [worker, data, ttl_ms])

    async def read(self) -> list[bytes]:
        """Prune the set, then read the keys of the names left (a key may expire in between)."""
        workers: list[bytes] = await self._live([self.key], [])
        if not workers:
            return []
        with connection_errors(self._where):
            found: list[bytes | None] = await self._redis.mget(
                [self._status_key(worker.decode()) for worker in workers]
            )
        return [data for data in found if data is not None]

    async def drop(self, worker: str) -> None:
        """Remove `worker`'s key and its name in the set."""
        worker = check_worker(worker)
        await self._drop([self._status_key(worker), self.key], [worker])
