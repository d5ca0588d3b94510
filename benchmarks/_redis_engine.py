"""The Redis engine of `benchmarks/distributed.py`: asyncpool's RedisBroker and its peers.

Systems, all on the Redis at 127.0.0.1:6379, database `--redis-db`:

- `asyncpool`: `asyncpool.redis.RedisBroker` (`benchmarks/_redis_tasks.py`);
- `arq`: the same arq setup as the JetStream engine's
  (`benchmarks/_distributed_peers.py`);
- `saq`: SAQ's `Queue` and `Worker` (`benchmarks/_redis_peers.py`);
- `taskiq-redis`: taskiq with taskiq-redis's `RedisStreamBroker` and
  `RedisAsyncResultBackend` (`benchmarks/_redis_taskiq.py`), producer and
  workers run from `.venv-peers/taskiq-redis` (it needs redis-py 8; the
  project's environment has arq's redis-py 5), made on demand by
  `benchmarks/_peer_venvs.py`;
- `raw`: the floor, XADD + XREADGROUP of 100 + XACK with no framework
  (`benchmarks/_redis_peers.py`); with results, one PUBLISH per job back to
  one subscription of the producer.

Every Redis key of the run contains the run's tag (`bench_<pid>`), except
arq's (`arq:*`); all are deleted at the end, asyncpool's by
`RedisBroker.destroy()` first (the run says so if that left any behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.metadata
import itertools
import json
import os
import re
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from benchmarks import _peer_venvs
from benchmarks._distributed_engine import (
    CONCURRENCY,
    AsyncpoolClient,
    Client,
    Context,
    Engine,
    Prepared,
    asyncpool_command,
)

ROOT = Path(__file__).resolve().parent.parent
TASKS_MODULE = "benchmarks._redis_tasks"
SYSTEMS = ("asyncpool", "arq", "saq", "taskiq-redis", "raw")
OWN_VENV = {"taskiq-redis"}  # systems that run from .venv-peers/<system>


# ------------------------------------------------------------ the producers


class ArqClient:
    """arq: `pool.enqueue_job(...)`, then `job.result()` (it polls Redis)."""

    def __init__(self, peers: ModuleType, poll: float, result_timeout: float) -> None:
        self.peers = peers
        self.poll = poll
        self.result_timeout = result_timeout
        self.pool: Any = None

    async def start(self) -> None:
        from arq import create_pool

        self.pool = await create_pool(self.peers.ARQ_REDIS, default_queue_name=self.peers.ARQ_QUEUE)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()

    async def call(self, job: str, i: int) -> int:
        queued = await self.pool.enqueue_job(job, i, 1)
        value: int = await queued.result(timeout=self.result_timeout, poll_delay=self.poll)
        return value

    async def send(self, job: str, i: int) -> None:
        await self.pool.enqueue_job(f"{job}_nr", i, 1)

    async def stamp(self, key: int) -> None:
        await self.pool.enqueue_job("stamp", key)


class SaqClient:
    """SAQ: `queue.apply(...)`, which enqueues and polls the job until it is done.

    (`job.refresh(until_complete=...)` waits on SAQ's pub/sub updates
    instead, but under this load it missed a few completions per thousand
    jobs: it subscribes after reading the job, and a job that finished in
    between kept its lane waiting for the whole timeout.) Fire-and-forget
    jobs are enqueued with `ttl=-1`: SAQ deletes the job when it finishes
    instead of keeping it (and its result) for 600 s.
    """

    def __init__(self, peers: ModuleType, poll: float, result_timeout: float) -> None:
        self.peers = peers
        self.poll = poll
        self.result_timeout = result_timeout
        self.queue: Any = None

    async def start(self) -> None:
        from saq import Queue

        self.queue = Queue.from_url(self.peers.REDIS_URL, name=self.peers.SAQ_QUEUE)
        await self.queue.connect()

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.disconnect()

    async def call(self, job: str, i: int) -> int:
        value: int = await self.queue.apply(
            job, timeout=self.result_timeout, poll_interval=self.poll, a=[i, 1]
        )
        return value

    async def send(self, job: str, i: int) -> None:
        await self.queue.enqueue(job, a=[i, 1], ttl=-1)

    async def stamp(self, key: int) -> None:
        await self.queue.enqueue("stamp", a=[key], ttl=-1)


class RawRedisClient:
    """The floor: XADD of a JSON job; results come back over Redis pub/sub.

    The stream and its consumer group are made here, before the floor's
    workers start. A result is one PUBLISH from the worker to one
    subscription of the producer, matched to its future by job id: no result
    store, no durability, the least a "with results" mode can cost on Redis.
    """

    def __init__(self, peers: ModuleType, result_timeout: float) -> None:
        self.peers = peers
        self.result_timeout = result_timeout
        self.client: Any = None
        self.listening: asyncio.Task[None] | None = None
        self.ids = itertools.count()
        self.futures: dict[int, asyncio.Future[int]] = {}

    async def start(self) -> None:
        import redis.asyncio as aioredis
        import redis.exceptions

        p = self.peers
        self.client = aioredis.Redis(host="127.0.0.1", port=6379, db=p.REDIS_DB)
        try:
            await self.client.xgroup_create(p.RAW_STREAM, p.RAW_GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:  # made by an earlier round
            if "BUSYGROUP" not in str(exc):
                raise
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(p.RAW_RESULTS)
        self.listening = asyncio.get_running_loop().create_task(self._listen(pubsub))

    async def _listen(self, pubsub: Any) -> None:
        try:
            async for message in pubsub.listen():
                reply = json.loads(message["data"])
                future = self.futures.pop(reply["id"], None)
                if future is not None and not future.done():
                    future.set_result(reply["v"])
        finally:
            await pubsub.aclose()

    async def close(self) -> None:
        if self.listening is not None:
            self.listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.listening
        if self.client is not None:
            await self.client.aclose()

    async def _add(self, job: str, args: list[int], reply: str | None) -> int:
        job_id = next(self.ids)
        body = {"id": job_id, "f": job, "a": args, "r": reply}
        await self.client.xadd(self.peers.RAW_STREAM, {"j": json.dumps(body)})
        return job_id

    async def call(self, job: str, i: int) -> int:
        job_id = next(self.ids)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.futures[job_id] = future
        body = {"id": job_id, "f": job, "a": [i, 1], "r": self.peers.RAW_RESULTS}
        await self.client.xadd(self.peers.RAW_STREAM, {"j": json.dumps(body)})
        async with asyncio.timeout(self.result_timeout):
            return await future

    async def send(self, job: str, i: int) -> None:
        await self._add(job, [i, 1], None)

    async def stamp(self, key: int) -> None:
        await self._add("stamp", [key], None)


class TaskiqRedisClient:
    """taskiq-redis, through its producer process in `.venv-peers/taskiq-redis`.

    The producer (`python -m benchmarks._redis_taskiq producer`) takes one
    JSON command a line; a measurement is one command, whose 64 lanes run
    and are timed in that process (`RemoteLanes`). Single jobs (warm-up,
    latency) are one command each; a latency sample is timed from that
    process's clock, just before its submit.
    """

    def __init__(self, ctx: Context, python: Path, result_timeout: float) -> None:
        self.ctx = ctx
        self.python = python
        self.result_timeout = result_timeout
        self.proc: asyncio.subprocess.Process | None = None
        self.log: IO[bytes] | None = None
        self.reading: asyncio.Task[None] | None = None
        self.ids = itertools.count()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}

    async def start(self) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.proc = await asyncio.create_subprocess_exec(
            *(str(self.python), "-m", "benchmarks._redis_taskiq", "producer"),
            cwd=ROOT,
            env=self.ctx.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
            limit=1 << 20,
        )
        self.reading = asyncio.get_running_loop().create_task(self._read())
        async with asyncio.timeout(60.0):
            await self._ask({"op": "ping"})

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            reply = json.loads(line)
            future = self.pending.pop(reply.pop("rid"), None)
            if future is not None and not future.done():
                future.set_result(reply)
        gone = RuntimeError(f"the taskiq-redis producer exited:\n{self._tail()}")
        for future in self.pending.values():
            if not future.done():
                future.set_exception(gone)
        self.pending.clear()

    def _tail(self) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdin is not None
        if self.reading is not None and self.reading.done():
            raise RuntimeError(f"the taskiq-redis producer exited:\n{self._tail()}")
        rid = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[rid] = future
        self.proc.stdin.write(json.dumps({"rid": rid, **request}).encode() + b"\n")
        await self.proc.stdin.drain()
        reply = await future
        if "error" in reply:
            raise RuntimeError(f"taskiq-redis producer: {reply['error']}")
        return reply

    async def close(self) -> None:
        proc = self.proc
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                async with asyncio.timeout(10.0):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self.reading is not None:
            with contextlib.suppress(Exception):
                await self.reading
        if self.log is not None:
            self.log.close()

    async def call(self, job: str, i: int) -> int:
        reply = await self._ask({"op": "call", "job": job, "i": i, "timeout": self.result_timeout})
        value: int = reply["v"]
        return value

    async def send(self, job: str, i: int) -> None:
        await self._ask({"op": "send", "job": job, "i": i})

    async def stamp(self, key: int) -> float:
        reply = await self._ask({"op": "stamp", "key": key})
        before: float = reply["before"]
        return before

    async def results_lanes(self, job: str, n: int) -> tuple[float, int]:
        request = {"op": "results_lanes", "job": job, "n": n, "timeout": self.result_timeout}
        reply = await self._ask(request)
        return float(reply["elapsed"]), int(reply["sum"])

    async def send_lanes(self, job: str, n: int) -> tuple[float, float]:
        reply = await self._ask({"op": "send_lanes", "job": job, "n": n})
        return float(reply["start"]), float(reply["elapsed"])


# ---------------------------------------------------------------- the engine


def prepare(ctx: Context, chosen: list[str]) -> Prepared:
    """Import what the chosen systems need; make `.venv-peers/taskiq-redis` if it is chosen."""
    prepared = Prepared()
    if "asyncpool" in chosen:
        try:
            prepared.modules["asyncpool"] = importlib.import_module(TASKS_MODULE)
        except ImportError as exc:
            prepared.skipped["asyncpool"] = f"asyncpool.redis not importable: {exc}"
    if "arq" in chosen:
        prepared.modules["arq"] = importlib.import_module("benchmarks._distributed_peers")
    if {"saq", "raw"} & set(chosen):
        prepared.modules["peers"] = importlib.import_module("benchmarks._redis_peers")
    for system in sorted(OWN_VENV & set(chosen)):
        try:
            _peer_venvs.ensure(system)
        except Exception as exc:  # no package index, or pip failed
            prepared.skipped[system] = f"could not make .venv-peers/{system}: {exc}"
    return prepared


def make_client(ctx: Context, system: str, modules: Mapping[str, ModuleType]) -> Client:
    args = ctx.args
    if system == "asyncpool":
        return AsyncpoolClient(modules["asyncpool"], args.timeout)
    if system == "arq":
        return ArqClient(modules["arq"], args.arq_poll, args.timeout)
    if system == "saq":
        return SaqClient(modules["peers"], args.saq_poll, args.timeout)
    if system == "taskiq-redis":
        return TaskiqRedisClient(ctx, _peer_venvs.python(system), args.timeout)
    return RawRedisClient(modules["peers"], args.timeout)


def command(ctx: Context, system: str, attribute: str) -> list[str]:
    if system == "asyncpool":
        return asyncpool_command(TASKS_MODULE, attribute)
    if system == "arq":
        return [sys.executable, "-m", "benchmarks._distributed_peers", "arq"]
    if system == "taskiq-redis":
        py = str(_peer_venvs.python(system))
        return [
            *(py, "-m", "taskiq", "worker", "benchmarks._redis_taskiq:broker", "--workers", "1"),
            *("--max-async-tasks", str(CONCURRENCY), "--log-level", "ERROR"),
        ]
    return [sys.executable, "-m", "benchmarks._redis_peers", system]


async def clean(ctx: Context) -> None:
    """asyncpool's brokers destroy their keys; then every key of the run and arq's go."""
    import redis.asyncio as aioredis

    tag = ctx.tag
    tasks = sys.modules.get(TASKS_MODULE)
    client = aioredis.Redis(host="127.0.0.1", port=6379, db=ctx.args.redis_db)
    try:
        async with asyncio.timeout(60.0):
            if tasks is not None:
                for broker in (tasks.broker, tasks.recovery_broker):
                    async with broker:
                        await broker.destroy()
                left = [key async for key in client.scan_iter(match=f"*{tag}_apr*", count=1000)]
                if left:
                    print(
                        f"warning: RedisBroker.destroy() left {len(left)} keys, "
                        f"e.g. {sorted(left)[:5]}",
                        file=sys.stderr,
                    )
            mine = re.compile(rf"{re.escape(tag)}(?![0-9])".encode())
            keys = [
                key
                async for key in client.scan_iter(match=f"*{tag}*", count=1000)
                if mine.search(key)
            ]
            keys += [key async for key in client.scan_iter(match="arq:*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
    except Exception as exc:  # the run's numbers matter more than its litter
        print(f"warning: could not clean Redis db {ctx.args.redis_db}: {exc!r}", file=sys.stderr)
    finally:
        await client.aclose()


def _here(names: list[str]) -> dict[str, str]:
    found = {"environment": ".venv"}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def environments(chosen: list[str]) -> dict[str, dict[str, str]]:
    """Which environment each chosen system ran in, with its framework's and redis-py's versions."""
    framework = {
        "asyncpool": ["asyncpool-dispatch"],
        "arq": ["arq"],
        "saq": ["saq"],
        "taskiq-redis": ["taskiq-redis", "taskiq"],
        "raw": [],
    }
    found = {}
    for system in chosen:
        names = [*framework[system], "redis", "hiredis"]
        if system in OWN_VENV:
            if not _peer_venvs.ready(system):
                continue
            found[system] = {
                "environment": f".venv-peers/{system}",
                **_peer_venvs.versions(system, names),
            }
        else:
            found[system] = _here(names)
    return found


METHOD = """\
The systems, with the settings each was given (64 jobs at once per worker
process in all of them), all on one Redis server, database {db}:

**asyncpool**
: producer: `RedisBroker(url, name=...)`, `await broker.submit(add, i, 1)`
  then `await handle`; fire-and-forget: `submit(..., result=False)`.
  Workers: `python -m asyncpool worker benchmarks._redis_tasks:broker
  --workers 64`.

arq
: as in the JetStream section: `enqueue_job` then
  `job.result(poll_delay={arq_poll:g})`; fire-and-forget: `keep_result=0`;
  arq's `Worker(max_jobs=64, poll_delay={arq_poll:g})`.

SAQ
: producer: `Queue.from_url(url, name=...)`, `await queue.apply("add",
  a=[i, 1], poll_interval={saq_poll:g})` (enqueue, then poll the job until
  it is done); fire-and-forget: `enqueue(..., ttl=-1)` (the job is deleted
  when done instead of kept with its result). Workers: SAQ's `Worker(queue,
  functions, concurrency=64)`, its defaults otherwise. (SAQ can also wait on
  its pub/sub job updates, `job.refresh(until_complete=...)`, but under this
  load that missed about 2 completions in 1,000: it subscribes after
  reading the job, and a job that finished in between left its lane
  waiting for the whole timeout.)

taskiq-redis
: producer: taskiq-redis's `RedisStreamBroker` (a stream and a consumer
  group, `XREADGROUP` of 100) with `RedisAsyncResultBackend`, `await
  add.kiq(i, 1)` then `wait_result(check_interval={taskiq_redis_poll:g})`;
  fire-and-forget: a task that raises `NoResultError`. Workers: `taskiq
  worker --workers 1 --max-async-tasks 64 --log-level ERROR`, acking once the
  result is saved (taskiq's default). Producer and workers run from their own
  environment (below): taskiq-redis needs redis-py 8, arq (in the project's
  environment) redis-py below 6. Its producer is a separate process that
  runs the 64 lanes and times them itself; the benchmark sends it one
  command per measurement.

raw floor
: producer: `XADD` of a JSON job to a stream, one command per job, each
  lane awaiting its own (redis-py gives each lane a connection of its pool;
  nothing is pipelined across lanes); with results, one `PUBLISH` per job
  back to a single subscription of the producer, no result store.
  Workers: `XREADGROUP ... COUNT 100 BLOCK 1000`, each job run in its own
  task as it arrives and the next read at once; finished jobs are acked in
  batches (one pipeline: the replies' `PUBLISH`es, then one `XACK` of every
  id).

arq, SAQ and taskiq-redis poll for results (the periods above were the
fastest of a few tried on this machine); asyncpool and the floor are told
over pub/sub. Worker processes report completions over core NATS, as in the
JetStream section (the NATS server is idle otherwise). Where each system
ran:
"""

WHERE_TIME_GOES = """\
Where a job's time goes: the producer, the worker processes and Redis
share two cores, so every system here is bound by the CPU its Python
client spends per command and reply. The raw floor spends one `XADD` per
job and a share of one `XREADGROUP` and one `XACK` per batch. asyncpool
sends the commands that its lanes issue in one turn of the event loop as
one pipeline, which the floor's producer does not: that is how asyncpool
can pass the floor's rate, mostly with 2 worker processes, where the
floor's producer is what limits it. asyncpool also adds its envelope, its
lanes (priority and key lanes), the deletion of acked entries, and with
results a terminal record per job (a key with a TTL) pushed to the
producer over pub/sub; the pollers (arq, SAQ, taskiq-redis) add their job
records and the polls. Where 3x a peer would be more than the raw floor of
the same row (see the list above), no framework on this server could
reach the target."""


def method_text(results: dict[str, Any]) -> str:
    knobs = results["knobs"]
    return (
        METHOD.replace("{db}", str(knobs.get("redis_db", 13)))
        .replace("{arq_poll:g}", f"{knobs['arq_poll']:g}")
        .replace("{taskiq_redis_poll:g}", f"{knobs.get('taskiq_redis_poll', 0.005):g}")
        .replace("{saq_poll:g}", f"{knobs.get('saq_poll', 0.01):g}")
    )


ENGINE = Engine(
    name="redis",
    title="Redis",
    systems=SYSTEMS,
    peers=("arq", "saq", "taskiq-redis"),
    floor="raw",
    labels={
        "asyncpool": "asyncpool",
        "arq": "arq",
        "saq": "SAQ",
        "taskiq-redis": "taskiq-redis",
        "raw": "raw floor",
    },
    summary=(
        "`asyncpool.redis.RedisBroker` on Redis, next to [arq](https://arq-docs.helpmanual.io/), "
        "[SAQ](https://github.com/tobymao/saq) and [taskiq](https://taskiq-python.github.io/) "
        "with taskiq-redis's `RedisStreamBroker` on the same Redis, and a *raw Redis Streams "
        "floor* (`XADD`, `XREADGROUP` in batches, `XACK`)"
    ),
    prepare=prepare,
    client=make_client,
    command=command,
    clean=clean,
    environments=environments,
    method=method_text,
    where_time_goes=WHERE_TIME_GOES,
)
