"""The JetStream engine of `benchmarks/distributed.py`: asyncpool's JetStreamBroker and its peers.

Systems, on the NATS server at `--nats`:

- `asyncpool`: `asyncpool.jetstream.JetStreamBroker` (`benchmarks/_distributed_tasks.py`);
- `taskiq`: taskiq with taskiq-nats's `PullBasedJetStreamBroker` and
  `NATSObjectStoreResultBackend` on the same server;
- `arq`: on the Redis at 127.0.0.1:6379, database `--redis-db`;
- `raw`: the floor, `js.publish` + pull requests of 100 + `ack()` with no
  framework; with results, one core NATS message per job back to the producer.

Their worker sides are `benchmarks/_distributed_peers.py`. Every system runs
in the project's environment. The run's streams and buckets (all named
after its tag) and arq's keys are deleted at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from benchmarks._distributed_engine import (
    CONCURRENCY,
    AsyncpoolClient,
    Client,
    Context,
    Engine,
    Prepared,
    asyncpool_command,
)
from benchmarks._redis_engine import ArqClient

# ------------------------------------------------------------ the producers


class TaskiqClient:
    """taskiq: `task.kiq(...)`, then `wait_result` (it polls the result backend)."""

    def __init__(self, peers: ModuleType, poll: float, result_timeout: float) -> None:
        self.peers = peers
        self.broker = peers.taskiq_broker
        self.poll = poll
        self.result_timeout = result_timeout

    async def start(self) -> None:
        await self.broker.startup()

    async def close(self) -> None:
        await self.broker.shutdown()

    async def call(self, job: str, i: int) -> int:
        task = await self.peers.TASKIQ_TASKS[job].kiq(i, 1)
        result = await task.wait_result(check_interval=self.poll, timeout=self.result_timeout)
        if result.is_err:
            raise RuntimeError(f"taskiq job failed: {result.error!r}")
        value: int = result.return_value
        return value

    async def send(self, job: str, i: int) -> None:
        await self.peers.TASKIQ_TASKS[f"{job}_nr"].kiq(i, 1)

    async def stamp(self, key: int) -> None:
        await self.peers.TASKIQ_TASKS["stamp"].kiq(key)


class RawClient:
    """The floor: `js.publish` of a JSON job; results come back over core NATS.

    The stream (work-queue retention) and its durable pull consumer are made
    here, before the floor's workers start. A result is one core NATS publish
    from the worker to one subscription of the producer, matched to its
    future by job id: no result store, no durability, the least a "with
    results" mode can cost.
    """

    def __init__(self, peers: ModuleType, nats_url: str, result_timeout: float) -> None:
        self.peers = peers
        self.nats_url = nats_url
        self.result_timeout = result_timeout
        self.client: Any = None
        self.js: Any = None
        self.ids = itertools.count()
        self.futures: dict[int, asyncio.Future[int]] = {}

    async def start(self) -> None:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
        from nats.js.errors import NotFoundError

        p = self.peers
        self.client = await nats.connect(self.nats_url, name="bench-raw-producer")
        self.js = self.client.jetstream()
        try:
            await self.js.stream_info(p.RAW_STREAM)  # made by an earlier round
        except NotFoundError:
            await self.js.add_stream(
                StreamConfig(
                    name=p.RAW_STREAM,
                    subjects=[p.RAW_SUBJECT],
                    retention=RetentionPolicy.WORK_QUEUE,
                )
            )
            await self.js.add_consumer(
                p.RAW_STREAM,
                ConsumerConfig(
                    durable_name=p.RAW_DURABLE, ack_policy=AckPolicy.EXPLICIT, ack_wait=30
                ),
            )
        await self._subscribe()

    async def _subscribe(self) -> None:
        async def on_result(msg: Any) -> None:
            reply = json.loads(msg.data)
            future = self.futures.pop(reply["id"], None)
            if future is not None and not future.done():
                future.set_result(reply["v"])

        await self.client.subscribe(self.peers.RAW_RESULTS, cb=on_result)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def _publish(self, job: str, args: list[int], reply: str | None) -> int:
        job_id = next(self.ids)
        body = {"id": job_id, "f": job, "a": args, "r": reply}
        await self.js.publish(self.peers.RAW_SUBJECT, json.dumps(body).encode())
        return job_id

    async def call(self, job: str, i: int) -> int:
        job_id = next(self.ids)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.futures[job_id] = future
        body = {"id": job_id, "f": job, "a": [i, 1], "r": self.peers.RAW_RESULTS}
        await self.js.publish(self.peers.RAW_SUBJECT, json.dumps(body).encode())
        async with asyncio.timeout(self.result_timeout):
            return await future

    async def send(self, job: str, i: int) -> None:
        await self._publish(job, [i, 1], None)

    async def stamp(self, key: int) -> None:
        await self._publish("stamp", [key], None)


# ---------------------------------------------------------------- the engine


def prepare(ctx: Context, chosen: list[str]) -> Prepared:
    prepared = Prepared()
    if "asyncpool" in chosen:
        try:
            import benchmarks._distributed_tasks as ap_tasks

            prepared.modules["asyncpool"] = ap_tasks
        except ImportError as exc:
            prepared.skipped["asyncpool"] = f"asyncpool.jetstream not importable: {exc}"
    if set(chosen) - {"asyncpool"}:
        import benchmarks._distributed_peers as peers

        prepared.modules["peers"] = peers
    return prepared


def make_client(ctx: Context, system: str, modules: Mapping[str, ModuleType]) -> Client:
    args = ctx.args
    if system == "asyncpool":
        return AsyncpoolClient(modules["asyncpool"], args.timeout)
    if system == "taskiq":
        return TaskiqClient(modules["peers"], args.taskiq_poll, args.timeout)
    if system == "arq":
        return ArqClient(modules["peers"], args.arq_poll, args.timeout)
    return RawClient(modules["peers"], args.nats, args.timeout)


def command(ctx: Context, system: str, attribute: str) -> list[str]:
    py = sys.executable
    if system == "asyncpool":
        return asyncpool_command("benchmarks._distributed_tasks", attribute)
    if system == "taskiq":
        target = "benchmarks._distributed_peers:taskiq_broker"
        return [
            *(py, "-m", "taskiq", "worker", target, "--workers", "1"),
            *("--max-async-tasks", str(CONCURRENCY), "--log-level", "ERROR"),
        ]
    return [py, "-m", "benchmarks._distributed_peers", system]


async def clean(ctx: Context) -> None:
    """Delete the run's streams and buckets, and arq's keys."""
    import nats

    try:
        nc = await nats.connect(ctx.args.nats, name="bench-distributed-clean")
    except Exception as exc:
        print(f"warning: could not delete the streams of {ctx.tag}: {exc!r}", file=sys.stderr)
    else:
        try:
            await _clean_nats(nc, ctx.tag)
        finally:
            await nc.close()
    await _clean_redis(ctx.args.redis_db, ctx.tag)


def environments(chosen: list[str]) -> dict[str, dict[str, str]]:
    return {}  # every system runs in the project's environment


async def _clean_nats(nc: Any, tag: str) -> None:
    """Delete every stream (and so KV and object buckets) named after this run."""
    mine = re.compile(rf"{re.escape(tag)}(?![0-9])")
    js = nc.jetstream()
    try:
        async with asyncio.timeout(30.0):
            for info in await js.streams_info():
                if mine.search(info.config.name):
                    await js.delete_stream(info.config.name)
    except Exception as exc:  # the run's numbers matter more than its litter
        print(f"warning: could not delete the streams of {tag}: {exc!r}", file=sys.stderr)


async def _clean_redis(db: int, tag: str) -> None:
    """Delete the run's arq queue and every arq job and result key in `db`."""
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=6379, db=db)
    try:
        async with asyncio.timeout(30.0):
            keys = [key async for key in client.scan_iter(match="arq:*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
    except Exception as exc:
        print(f"warning: could not clean Redis db {db}: {exc!r}", file=sys.stderr)
    finally:
        await client.aclose()


JETSTREAM_METHOD = """\
The systems, with the settings each was given (64 jobs at once per worker
process in all of them):

**asyncpool**
: producer: `JetStreamBroker(url, name=...)`, `await broker.submit(add, i, 1)`
  then `await handle`; fire-and-forget: `submit(..., result=False)`.
  Workers: `python -m asyncpool worker benchmarks._distributed_tasks:broker
  --workers 64`.

taskiq
: producer: `PullBasedJetStreamBroker(pull_consume_batch=64)` with
  `NATSObjectStoreResultBackend` (the result backend taskiq-nats has),
  `await add.kiq(i, 1)` then `wait_result(check_interval={taskiq_poll:g})`;
  fire-and-forget: a task that raises `NoResultError` (taskiq's way to skip
  the result backend). Workers: `taskiq worker --workers 1
  --max-async-tasks 64 --log-level ERROR`, acking once the result is saved
  (taskiq's default).

arq
: producer: `create_pool(...)`, `await pool.enqueue_job("add", i, 1)` then
  `job.result(poll_delay={arq_poll:g})`; fire-and-forget: the same function
  registered with `keep_result=0`. Workers: arq's `Worker(max_jobs=64,
  poll_delay={arq_poll:g})`, logging at WARNING.

raw floor
: producer: `js.publish` of a JSON job to a work-queue stream; with
  results, one core NATS message per job back to a single subscription of
  the producer, no result store. Workers: one pull request of 100 at a time
  on a durable consumer (the next when all 100 arrived or it expired), each
  job run in its own task as it arrives, then the reply and `ack()`.
  (nats-py's `fetch(100)` returns only when the batch is full or its
  timeout passed, which with fewer than 100 jobs waiting holds them for the
  whole timeout: no floor.)

taskiq and arq have no push notification of results: `wait_result` and
`job.result()` poll, so their *results* numbers depend on the poll period.
The periods above were chosen as the fastest of a few tried on this machine
(shorter periods make the polls themselves the load). taskiq-nats's
push-based broker is not used: its `startup()` subscribes every process,
producers included, to the consumer's queue group, so a producer would be
handed jobs it never runs. The raw floor's *results* mode sends results over
core NATS: not durable, so it is the least such a mode can cost, not an
equal of a stored result. Every system runs in the project's environment
(`.venv`; versions above).
"""


def method_text(results: dict[str, Any]) -> str:
    knobs = results["knobs"]
    return JETSTREAM_METHOD.replace("{taskiq_poll:g}", f"{knobs['taskiq_poll']:g}").replace(
        "{arq_poll:g}", f"{knobs['arq_poll']:g}"
    )


WHERE_TIME_GOES = """\
Where a job's time goes: on this machine the producer, the worker
processes and the NATS server share two cores, so every system here is
bound by the CPU its Python client spends per message. For each job,
asyncpool's producer publishes the job and waits for the stream's
acknowledgement; a worker receives the job (pulled in batches as large as
its free workers, when that many are waiting), runs it, stores its record
in the results bucket and waits for that write's acknowledgement (with
results), and acknowledges the job; the producer's watch receives the
record. The raw floor skips the per-job record store, the envelope and the
bookkeeping that lets a job be retried, cancelled, re-attached or
dead-lettered. In fire-and-forget, taskiq-nats stores nothing per job
either, so the gap to it is narrower than with results; where 3x a peer
would be more than the raw floor of the same row (see the list above), no
framework on this server could reach the target."""


ENGINE = Engine(
    name="jetstream",
    title="JetStream",
    systems=("asyncpool", "taskiq", "arq", "raw"),
    peers=("taskiq", "arq"),
    floor="raw",
    labels={"asyncpool": "asyncpool", "taskiq": "taskiq", "arq": "arq", "raw": "raw floor"},
    summary=(
        "`asyncpool.jetstream.JetStreamBroker` on NATS JetStream, next to "
        "[taskiq](https://taskiq-python.github.io/) with "
        "[taskiq-nats](https://github.com/taskiq-python/taskiq-nats) on the same NATS server, "
        "[arq](https://arq-docs.helpmanual.io/) on Redis, and a *raw JetStream floor* with no "
        "framework at all"
    ),
    prepare=prepare,
    client=make_client,
    command=command,
    clean=clean,
    environments=environments,
    method=method_text,
    where_time_goes=WHERE_TIME_GOES,
)
