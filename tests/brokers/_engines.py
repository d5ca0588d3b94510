"""The broker engines the conformance tests run on, and what a test does on their servers directly.

An `Engine` is one engine on one server: its `kind` ("jetstream" or
"redis"), the server's `url`, and the `id` test names show
(`jetstream-2.9`, `jetstream-bundled`, `redis`). `engine.broker(name,
**options)` builds that engine's broker; `build_broker` does the same from a
kind and a URL (chaos_tasks.py builds the workers' broker with it), and
`engine.worker_env()` is what a worker process needs to build the same.

The rest of an `Engine` speaks to its server past the broker under test:
to put there what no broker would write (`publish_raw`), or to look at what a
broker keeps without trusting it (`stored_jobs`, `lane_counts`,
`jobs_stored`, `leftovers`, `terminal_records`). This module is the one
place of the tests that knows where each engine keeps things:

* JetStream: the stream `<name>_jobs`, subjects `<name>.jobs.<lane>`, the job
  id in the header `Nats-Msg-Id` and the codec in `Asyncpool-Codec`; a
  durable consumer `<name>_<lane>` per lane; streams `<name>_dead` and
  `KV_<name>_results`, `KV_<name>_cancels`.
* Redis: a stream per lane, `{<name>}:lane:<lane>` (and `{<name>}:key:<i>`
  for the key lanes), whose entries have the fields `d` (the payload), `c`
  (the codec) and `i` (the job id), read through one consumer group; every
  key the broker makes contains `{<name>}`.

Each engine's module is imported only when one of its brokers is built: the
tests of one engine run while the other's module is missing or broken.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from ._servers import ENV_ENGINE, ENV_REDIS_URL, ENV_URL, redis_client, stream_names
from ._servers import terminal_records as jetstream_terminal_records

if TYPE_CHECKING:
    from asyncpool.jetstream import JetStreamBroker
    from asyncpool.redis import RedisBroker

    AnyBroker: TypeAlias = JetStreamBroker | RedisBroker

KINDS: Final = ("jetstream", "redis")
"""The engines, as `kind`s (and as the ids of tests parametrized over the kind alone)."""

_CODEC_HEADER: Final = "Asyncpool-Codec"


def build_broker(kind: str, url: str, name: str, **options: Any) -> AnyBroker:
    """A broker of engine `kind` on the server at `url`, named `name`."""
    if kind == "jetstream":
        from asyncpool.jetstream import JetStreamBroker

        return JetStreamBroker(url, name=name, **options)
    if kind == "redis":
        from asyncpool.redis import RedisBroker

        return RedisBroker(url, name=name, **options)
    raise ValueError(f"no broker engine {kind!r}; the engines are {KINDS}")


def broker_class(kind: str) -> type[AnyBroker]:
    """The broker class of engine `kind` (for tests that need no server)."""
    if kind == "jetstream":
        from asyncpool.jetstream import JetStreamBroker

        return JetStreamBroker
    if kind == "redis":
        from asyncpool.redis import RedisBroker

        return RedisBroker
    raise ValueError(f"no broker engine {kind!r}; the engines are {KINDS}")


@dataclass(frozen=True)
class RawJob:
    """A job message as it is stored: its bytes and what was written beside them."""

    data: bytes
    codec: str | None
    job_id: str | None


@contextlib.asynccontextmanager
async def _nats(url: str) -> AsyncIterator[Client]:
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        yield nc
    finally:
        await nc.close()


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


@dataclass(frozen=True)
class Engine:
    """One broker engine on one server, as a parametrized test receives it."""

    kind: str
    url: str
    id: str

    def broker(self, name: str, **options: Any) -> AnyBroker:
        """This engine's broker on this server, named `name`."""
        return build_broker(self.kind, self.url, name, **options)

    def worker_env(self) -> dict[str, str]:
        """The environment a chaos_tasks.py worker needs to build the same engine's broker."""
        url_variable = ENV_URL if self.kind == "jetstream" else ENV_REDIS_URL
        return {ENV_ENGINE: self.kind, url_variable: self.url}

    def lane_key(self, name: str, lane: str = "normal") -> str:
        """Where jobs of a lane ("high", "normal", "low") are kept: a subject or a stream key."""
        return f"{name}.jobs.{lane}" if self.kind == "jetstream" else f"{{{name}}}:lane:{lane}"

    async def publish_raw(
        self,
        name: str,
        data: bytes,
        *,
        codec: str | None = None,
        job_id: str | None = None,
        lane: str = "normal",
    ) -> None:
        """Put `data` in a lane as any other program could (garbage included), past the broker.

        `codec` and `job_id` are written beside it only when given.
        """
        if self.kind == "jetstream":
            headers = {}
            if codec is not None:
                headers[_CODEC_HEADER] = codec
            if job_id is not None:
                headers["Nats-Msg-Id"] = job_id
            async with _nats(self.url) as nc:
                await nc.jetstream().publish(
                    self.lane_key(name, lane), data, headers=headers or None
                )
            return
        fields: dict[str, bytes | str] = {"d": data}
        if codec is not None:
            fields["c"] = codec
        if job_id is not None:
            fields["i"] = job_id
        client = redis_client(self.url)
        try:
            await client.xadd(self.lane_key(name, lane), fields)  # type: ignore[arg-type]
        finally:
            await client.aclose()

    async def stored_jobs(self, name: str, lane: str = "normal") -> list[RawJob]:
        """The job messages stored in a lane, oldest first (acknowledged ones may be gone)."""
        key = self.lane_key(name, lane)
        jobs: list[RawJob] = []
        if self.kind == "jetstream":
            async with _nats(self.url) as nc:
                js = nc.jetstream()
                state = (await js.stream_info(f"{name}_jobs")).state
                for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
                    with contextlib.suppress(nats.js.errors.NotFoundError):
                        msg = await js.get_msg(f"{name}_jobs", seq)
                        if msg.subject == key:
                            headers = msg.headers or {}
                            jobs.append(
                                RawJob(
                                    msg.data or b"",
                                    headers.get(_CODEC_HEADER),
                                    headers.get("Nats-Msg-Id"),
                                )
                            )
            return jobs
        client = redis_client(self.url)
        try:
            for _entry_id, fields in await client.xrange(key):
                jobs.append(RawJob(fields[b"d"], _text(fields.get(b"c")), _text(fields.get(b"i"))))
        finally:
            await client.aclose()
        return jobs

    async def lane_counts(self, name: str, lane: str = "normal") -> tuple[int, int]:
        """Of a lane's jobs: (held by workers and not yet acknowledged, never delivered yet)."""
        if self.kind == "jetstream":
            async with _nats(self.url) as nc:
                info = await nc.jetstream().consumer_info(f"{name}_jobs", f"{name}_{lane}")
            return info.num_ack_pending, info.num_pending
        key = self.lane_key(name, lane)
        client = redis_client(self.url)
        try:
            groups = await client.xinfo_groups(key)
            length = await client.xlen(key)
        finally:
            await client.aclose()
        if len(groups) != 1:
            raise AssertionError(f"{key} should have one consumer group: {groups}")
        held = int(groups[0]["pending"])
        # "lag" (Redis 7) counts what the group has not read yet; without
        # it, nothing was acknowledged yet in the tests that ask.
        lag = groups[0].get("lag")
        return held, int(lag) if lag is not None else length - held

    async def jobs_stored(self, name: str) -> int:
        """How many job messages the broker keeps, in all its lanes."""
        if self.kind == "jetstream":
            async with _nats(self.url) as nc:
                info = await nc.jetstream().stream_info(f"{name}_jobs")
            return info.state.messages
        client = redis_client(self.url)
        try:
            # The priority lanes `{name}:lane:<lane>` and the key lanes `{name}:key:<i>`.
            lanes = [
                key
                for pattern in (f"{{{name}}}:lane:*", f"{{{name}}}:key:*")
                async for key in client.scan_iter(match=pattern, count=1000, _type="stream")
            ]
            return sum([await client.xlen(key) for key in lanes])
        finally:
            await client.aclose()

    async def leftovers(self, name: str) -> list[str]:
        """What of the broker named `name` is on the server: streams, or keys."""
        if self.kind == "jetstream":
            return sorted(stream for stream in await stream_names(self.url) if name in stream)
        client = redis_client(self.url)
        try:
            keys = [key async for key in client.scan_iter(match=f"*{{{name}}}*", count=1000)]
        finally:
            await client.aclose()
        return sorted(key.decode(errors="replace") for key in keys)

    async def terminal_records(self, name: str, job_ids: list[str]) -> dict[str, str]:
        """For failure messages: job id -> where the server has a record of it, or "none".

        JetStream: the KV buckets holding a key of the job. Redis: the keys
        of the broker whose names contain the job id.
        """
        if self.kind == "jetstream":
            return await jetstream_terminal_records(self.url, name, job_ids)
        client = redis_client(self.url)
        try:
            found: dict[str, str] = {}
            for job_id in job_ids:
                keys = [
                    key.decode(errors="replace")
                    async for key in client.scan_iter(match=f"*{{{name}}}*{job_id}*", count=1000)
                ]
                found[job_id] = ", ".join(sorted(keys)) or "none"
            return found
        finally:
            await client.aclose()
