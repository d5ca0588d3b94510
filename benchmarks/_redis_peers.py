"""The Redis engine's peers that run in the project's environment: SAQ and a raw floor.

Each peer runs the same jobs as asyncpool's `benchmarks/_redis_tasks.py`
(`add`, `sleep1ms`, `stamp`), and every job reports to
`benchmarks/_distributed_probe.py` the same way. Worker processes:

    python -m benchmarks._redis_peers saq   # SAQ's Worker, concurrency=64
    python -m benchmarks._redis_peers raw   # the floor: XREADGROUP 100, run, XACK

arq's worker is `benchmarks/_distributed_peers.py`'s (the same in both
engines); taskiq-redis, which needs another redis-py, is
`benchmarks/_redis_taskiq.py`, run from its own environment. The jobs below
are imported by that module too, so this module imports nothing at the top
that the project's environment has and a peer's may not (SAQ and redis-py
are imported where used).

The environment names everything after the run (`BENCH_TAG`, which every
Redis key of the run contains) and chooses the database (`BENCH_REDIS_DB`,
on 127.0.0.1:6379).

Fire-and-forget jobs store no result: SAQ's are enqueued with `ttl=-1` (the
job is deleted when it finishes); the floor publishes no reply.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as `python -m`, or as a file: the repo on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _distributed_probe as probe

TAG = os.environ.get("BENCH_TAG", "bench")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "13"))
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
CONCURRENCY = 64  # jobs at once per worker process, in every system

# ------------------------------------------------------------------ the jobs


async def add(x: int, y: int) -> int:
    await probe.done()
    return x + y


async def sleep1ms(x: int, y: int) -> int:
    await asyncio.sleep(0.001)
    await probe.done()
    return x + y


async def stamp(key: int) -> None:
    await probe.started(key)
    await probe.done()


JOBS: dict[str, Callable[..., Awaitable[Any]]] = {
    "add": add,
    "sleep1ms": sleep1ms,
    "stamp": stamp,
}

# ----------------------------------------------------------------------- SAQ

SAQ_QUEUE = f"{TAG}_saq"


def _saq(job: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """SAQ passes a context dict first and the arguments by keyword (`a`: the list)."""

    async def run(ctx: dict[str, Any], *, a: list[Any]) -> Any:
        return await job(*a)

    return run


async def saq_worker() -> None:
    """SAQ's Worker on the run's queue, 64 jobs at once (SAQ's defaults otherwise)."""
    from saq import Queue, Worker

    queue = Queue.from_url(REDIS_URL, name=SAQ_QUEUE)
    functions = [(name, _saq(job)) for name, job in JOBS.items()]
    worker = Worker(queue, functions, concurrency=CONCURRENCY)
    await queue.connect()
    try:
        await worker.start()
    finally:
        await queue.disconnect()


# --------------------------------------------------------------------- floor

RAW_STREAM = f"{TAG}_rawr"
RAW_GROUP = f"{TAG}_rawr"
RAW_RESULTS = f"{TAG}_rawr_results"  # the pub/sub channel of the replies
RAW_BATCH = 100


async def raw_worker() -> None:
    """The floor's worker: XREADGROUP of up to 100 jobs, each run as it arrives, XACK in batches.

    A reader loop blocks in `XREADGROUP ... COUNT 100 BLOCK 1000 STREAMS
    <stream> >` and starts every job it gets in its own task, then reads
    again at once. A finished job leaves its entry id (and, when a result
    is wanted, its reply) for the acker, which sends whatever has gathered
    in one pipeline: the replies (`PUBLISH`) first, then one `XACK` of every
    id (at-least-once). A job is JSON `{"id", "f", "a", "r"}` in the entry's
    field `j`: its number, the job's name, its arguments and, when a result
    is wanted, the channel to publish `{"id", "v"}` on. The stream and its
    consumer group are made by the producer before the workers start.
    """
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    consumer = f"raw-{os.getpid()}"
    acks: list[bytes] = []
    replies: list[tuple[str, str]] = []
    ready = asyncio.Event()
    running: set[asyncio.Task[None]] = set()

    async def handle(entry: bytes, fields: dict[bytes, bytes]) -> None:
        job = json.loads(fields[b"j"])
        value = await JOBS[job["f"]](*job["a"])
        if job["r"]:
            replies.append((job["r"], json.dumps({"id": job["id"], "v": value})))
        acks.append(entry)
        ready.set()

    async def acker() -> None:
        while True:
            await ready.wait()
            ready.clear()
            ids, acks[:] = list(acks), []
            sent, replies[:] = list(replies), []
            if not ids:
                continue
            async with client.pipeline(transaction=False) as pipe:
                for channel, body in sent:
                    pipe.publish(channel, body)
                pipe.xack(RAW_STREAM, RAW_GROUP, *ids)
                await pipe.execute()

    acking = asyncio.get_running_loop().create_task(acker())
    try:
        while True:
            got = await client.xreadgroup(
                RAW_GROUP, consumer, {RAW_STREAM: ">"}, count=RAW_BATCH, block=1000
            )
            for _stream, entries in got or ():
                for entry, fields in entries:
                    task = asyncio.get_running_loop().create_task(handle(entry, fields))
                    running.add(task)
                    task.add_done_callback(running.discard)
    finally:
        acking.cancel()
        await client.aclose()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    kind = sys.argv[1:2]
    if kind == ["raw"]:
        asyncio.run(raw_worker())
    elif kind == ["saq"]:
        asyncio.run(saq_worker())
    else:
        raise SystemExit("usage: python -m benchmarks._redis_peers raw|saq")


if __name__ == "__main__":
    main()
