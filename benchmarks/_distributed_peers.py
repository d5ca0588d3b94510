"""The peers of `benchmarks/distributed.py`: taskiq-nats, arq and a raw JetStream floor.

Each peer runs the same jobs as asyncpool's `benchmarks/_distributed_tasks.py`
(`add`, `sleep1ms`, `stamp`), and every job reports to
`benchmarks/_distributed_probe.py` the same way. Worker processes:

    python -m taskiq worker benchmarks._distributed_peers:taskiq_broker \\
        --workers 1 --max-async-tasks 64 --log-level ERROR
    python -m benchmarks._distributed_peers arq     # arq's Worker, max_jobs=64
    python -m benchmarks._distributed_peers raw     # the floor: pull 100, run, ack

The environment names everything after the run (`BENCH_TAG`) and sets the
knobs the benchmark tunes: `BENCH_NATS`, `BENCH_REDIS_DB`,
`BENCH_TASKIQ_CONSUMER` (`pull` or `push`), `BENCH_TASKIQ_BATCH` (pull batch)
and `BENCH_ARQ_POLL` (seconds between the arq worker's polls of its queue).

Fire-and-forget jobs store no result in any system: asyncpool submits with
`result=False`; taskiq's `*_nr` tasks raise `NoResultError` (taskiq's way of
skipping the result backend); arq's `*_nr` functions have `keep_result=0`;
the floor publishes no reply.
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

from arq.connections import RedisSettings
from arq.typing import WorkerCoroutine
from arq.worker import func
from nats.js.api import ConsumerConfig
from taskiq.exceptions import NoResultError
from taskiq_nats import (
    NATSObjectStoreResultBackend,
    PullBasedJetStreamBroker,
    PushBasedJetStreamBroker,
)

from benchmarks import _distributed_probe as probe

NATS_URL = os.environ.get("BENCH_NATS", "nats://127.0.0.1:4222")
TAG = os.environ.get("BENCH_TAG", "bench")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "13"))
TASKIQ_CONSUMER = os.environ.get("BENCH_TASKIQ_CONSUMER", "pull")
TASKIQ_BATCH = int(os.environ.get("BENCH_TASKIQ_BATCH", "64"))
ARQ_POLL = float(os.environ.get("BENCH_ARQ_POLL", "0.01"))
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


# -------------------------------------------------------------------- taskiq

TASKIQ_STREAM = f"{TAG}_tq"
TASKIQ_SUBJECT = f"{TAG}.tq.jobs"
TASKIQ_BUCKET = f"{TAG}_tq_results"

_taskiq_backend: NATSObjectStoreResultBackend[Any] = NATSObjectStoreResultBackend(
    NATS_URL, bucket_name=TASKIQ_BUCKET
)
taskiq_broker: PullBasedJetStreamBroker | PushBasedJetStreamBroker
if TASKIQ_CONSUMER == "push":
    taskiq_broker = PushBasedJetStreamBroker(
        NATS_URL,
        subject=TASKIQ_SUBJECT,
        stream_name=TASKIQ_STREAM,
        queue=f"{TAG}_tq_workers",
        consumer_config=ConsumerConfig(durable_name=f"{TAG}_tq", deliver_group=f"{TAG}_tq_workers"),
    )
else:
    taskiq_broker = PullBasedJetStreamBroker(
        NATS_URL,
        subject=TASKIQ_SUBJECT,
        stream_name=TASKIQ_STREAM,
        durable=f"{TAG}_tq",
        pull_consume_batch=TASKIQ_BATCH,
        pull_consume_timeout=1.0,
    )
taskiq_broker = taskiq_broker.with_result_backend(_taskiq_backend)


async def _add_nr(x: int, y: int) -> int:
    await add(x, y)
    raise NoResultError


async def _sleep1ms_nr(x: int, y: int) -> int:
    await sleep1ms(x, y)
    raise NoResultError


async def _stamp_nr(key: int) -> None:
    await stamp(key)
    raise NoResultError


TASKIQ_TASKS = {
    "add": taskiq_broker.register_task(add, task_name="add"),
    "add_nr": taskiq_broker.register_task(_add_nr, task_name="add_nr"),
    "sleep1ms": taskiq_broker.register_task(sleep1ms, task_name="sleep1ms"),
    "sleep1ms_nr": taskiq_broker.register_task(_sleep1ms_nr, task_name="sleep1ms_nr"),
    "stamp": taskiq_broker.register_task(_stamp_nr, task_name="stamp"),
}

# ----------------------------------------------------------------------- arq

ARQ_QUEUE = f"arq:queue:{TAG}"
ARQ_REDIS = RedisSettings(host="127.0.0.1", port=6379, database=REDIS_DB)


def _arq(job: Callable[..., Awaitable[Any]]) -> WorkerCoroutine:
    """arq passes a context dict first; the jobs do not want it."""

    async def run(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
        return await job(*args, **kwargs)

    return run


class ArqWorkerSettings:
    """arq's worker: 64 jobs at once, the queue polled every `BENCH_ARQ_POLL` s."""

    functions = [  # noqa: RUF012 (arq reads class attributes)
        func(_arq(add), name="add"),
        func(_arq(add), name="add_nr", keep_result=0),
        func(_arq(sleep1ms), name="sleep1ms"),
        func(_arq(sleep1ms), name="sleep1ms_nr", keep_result=0),
        func(_arq(stamp), name="stamp", keep_result=0),
    ]
    queue_name = ARQ_QUEUE
    redis_settings = ARQ_REDIS
    max_jobs = CONCURRENCY
    poll_delay = ARQ_POLL
    log_results = False


# --------------------------------------------------------------------- floor

RAW_STREAM = f"{TAG}_raw"
RAW_SUBJECT = f"{TAG}.raw.jobs"
RAW_DURABLE = f"{TAG}_raw"
RAW_RESULTS = f"{TAG}.raw.results"
RAW_BATCH = 100
RAW_JOBS: dict[str, Callable[..., Awaitable[Any]]] = {
    "add": add,
    "sleep1ms": sleep1ms,
    "stamp": stamp,
}


async def raw_worker() -> None:
    """The floor's worker: pull requests for 100 jobs, each job run as it arrives, then ack.

    One pull request (`batch` 100, `expires` 1 s) is outstanding at a time, on
    the consumer's `$JS.API.CONSUMER.MSG.NEXT` subject; the next goes out when
    all 100 have arrived or the request expired. Each job runs in its own task
    as soon as it arrives. (`PullSubscription.fetch(100)` would be simpler but
    returns only when the batch is full or its timeout passes, so with fewer
    than 100 jobs waiting it holds them for the whole timeout.)

    A job is JSON `{"id", "f", "a", "r"}`: its number, the job's name, its
    arguments and, when a result is wanted, the core NATS subject to publish
    `{"id", "v"}` on. The ack goes after the reply (at-least-once).
    """
    import nats
    from nats.js.client import JetStreamContext

    client = await nats.connect(NATS_URL, name=f"bench-raw-{os.getpid()}")
    inbox = client.new_inbox()
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{RAW_STREAM}.{RAW_DURABLE}"
    request = json.dumps({"batch": RAW_BATCH, "expires": 1_000_000_000}).encode()
    remaining = 0
    running: set[asyncio.Task[None]] = set()

    async def ask() -> None:
        nonlocal remaining
        remaining = RAW_BATCH
        await client.publish(next_subject, request, reply=inbox)

    async def handle(msg: Any) -> None:
        job = json.loads(msg.data)
        value = await RAW_JOBS[job["f"]](*job["a"])
        if job["r"]:
            await client.publish(job["r"], json.dumps({"id": job["id"], "v": value}).encode())
        await msg.ack()

    async def arrived(msg: Any) -> None:
        nonlocal remaining
        status = JetStreamContext.is_status_msg(msg)
        if status is not None:  # 408: the request expired; 409: refused (retry soon)
            if status != "100":  # not a heartbeat
                if status != "408":
                    await asyncio.sleep(0.1)
                await ask()
            return
        task = asyncio.get_running_loop().create_task(handle(msg))
        running.add(task)
        task.add_done_callback(running.discard)
        remaining -= 1
        if remaining == 0:
            await ask()

    await client.subscribe(inbox, cb=arrived)
    await ask()
    await asyncio.Event().wait()  # until killed


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    kind = sys.argv[1:2]
    if kind == ["raw"]:
        asyncio.run(raw_worker())
    elif kind == ["arq"]:
        from arq.worker import run_worker

        run_worker(ArqWorkerSettings)  # type: ignore[arg-type]
    else:
        raise SystemExit("usage: python -m benchmarks._distributed_peers raw|arq")


if __name__ == "__main__":
    main()
