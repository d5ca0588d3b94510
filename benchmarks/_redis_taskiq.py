"""taskiq-redis in the Redis engine of `benchmarks/distributed.py`, run from its own environment.

taskiq-redis 1.2 needs redis-py 8, and the project's environment has arq's
redis-py 5, so both sides of this peer run from `.venv-peers/taskiq-redis`
(`benchmarks/_peer_venvs.py`):

    .venv-peers/taskiq-redis/bin/python -m taskiq worker \\
        benchmarks._redis_taskiq:broker --workers 1 --max-async-tasks 64 --log-level ERROR
    .venv-peers/taskiq-redis/bin/python -m benchmarks._redis_taskiq producer

The broker is `RedisStreamBroker` (a stream and a consumer group, XREADGROUP
of 100, XACK once the result is stored: taskiq's default) with
`RedisAsyncResultBackend`. The producer reads one JSON command a line on
stdin and answers each with one JSON line on stdout; a measurement is one
command (`results_lanes`, `send_lanes`: 64 lanes run here, timed here), so
nothing per job crosses to the benchmark's process. It exits when stdin
closes.

Fire-and-forget jobs raise `NoResultError` (taskiq's way of skipping the
result backend). The environment: `BENCH_TAG`, `BENCH_REDIS_DB`, `BENCH_NATS`
(the probe) and `BENCH_TASKIQ_REDIS_POLL` (`wait_result`'s interval, s).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as `python -m`, or as a file: the repo on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taskiq.exceptions import NoResultError

from benchmarks._distributed_engine import WINDOW, lanes
from benchmarks._redis_peers import add, sleep1ms, stamp

TAG = os.environ.get("BENCH_TAG", "bench")
REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('BENCH_REDIS_DB', '13'))}"
POLL = float(os.environ.get("BENCH_TASKIQ_REDIS_POLL", "0.005"))
STREAM = f"{TAG}_tqr"
RESULTS_PREFIX = f"{TAG}_tqr_result"

# Not imported by name: the project's environment (where mypy runs) has no taskiq-redis.
_taskiq_redis: Any = importlib.import_module("taskiq_redis")

broker: Any = _taskiq_redis.RedisStreamBroker(
    REDIS_URL, queue_name=STREAM, consumer_group_name=STREAM
).with_result_backend(
    _taskiq_redis.RedisAsyncResultBackend(REDIS_URL, prefix_str=RESULTS_PREFIX, result_ex_time=3600)
)


async def _add_nr(x: int, y: int) -> int:
    await add(x, y)
    raise NoResultError


async def _sleep1ms_nr(x: int, y: int) -> int:
    await sleep1ms(x, y)
    raise NoResultError


async def _stamp_nr(key: int) -> None:
    await stamp(key)
    raise NoResultError


TASKS: dict[str, Any] = {
    "add": broker.register_task(add, task_name="add"),
    "add_nr": broker.register_task(_add_nr, task_name="add_nr"),
    "sleep1ms": broker.register_task(sleep1ms, task_name="sleep1ms"),
    "sleep1ms_nr": broker.register_task(_sleep1ms_nr, task_name="sleep1ms_nr"),
    "stamp": broker.register_task(_stamp_nr, task_name="stamp"),
}

# ------------------------------------------------------------ the producer


async def call(job: str, i: int, timeout: float) -> int:
    task = await TASKS[job].kiq(i, 1)
    result = await task.wait_result(check_interval=POLL, timeout=timeout)
    if result.is_err:
        raise RuntimeError(f"taskiq job failed: {result.error!r}")
    value: int = result.return_value
    return value


async def send(job: str, i: int) -> None:
    await TASKS[f"{job}_nr"].kiq(i, 1)


async def answer(request: dict[str, Any]) -> dict[str, Any]:
    """One command: the measured lanes, or one job (warm-up, latency)."""
    op = request["op"]
    if op == "ping":
        return {}
    if op == "call":
        return {"v": await call(request["job"], request["i"], request["timeout"])}
    if op == "send":
        await send(request["job"], request["i"])
        return {}
    if op == "stamp":
        before = time.time()
        await TASKS["stamp"].kiq(request["key"])
        return {"before": before}
    if op == "results_lanes":
        job, timeout = request["job"], request["timeout"]
        start = time.perf_counter()
        values = await lanes(request["n"], lambda i: call(job, i, timeout), WINDOW)
        return {"elapsed": time.perf_counter() - start, "sum": sum(values)}
    if op == "send_lanes":
        job = request["job"]
        start_wall, start = time.time(), time.perf_counter()
        await lanes(request["n"], lambda i: send(job, i), WINDOW)
        return {"start": start_wall, "elapsed": time.perf_counter() - start}
    raise ValueError(f"unknown command {op!r}")


async def producer() -> None:
    """Answer the commands on stdin, each in its own task, until stdin closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer
    running: set[asyncio.Task[None]] = set()

    async def handle(request: dict[str, Any]) -> None:
        try:
            reply = await answer(request)
        except Exception as exc:
            reply = {"error": repr(exc)}
        out.write(json.dumps({"rid": request["rid"], **reply}).encode() + b"\n")
        out.flush()

    await broker.startup()
    try:
        while line := await reader.readline():
            task = loop.create_task(handle(json.loads(line)))
            running.add(task)
            task.add_done_callback(running.discard)
        for task in list(running):
            task.cancel()
    finally:
        await broker.shutdown()


if __name__ == "__main__":
    if sys.argv[1:] != ["producer"]:
        raise SystemExit("usage: python -m benchmarks._redis_taskiq producer")
    asyncio.run(producer())
