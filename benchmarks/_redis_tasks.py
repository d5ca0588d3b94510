"""asyncpool's side of the Redis engine of `benchmarks/distributed.py`: two brokers and their tasks.

The same as `benchmarks/_distributed_tasks.py`, on `asyncpool.redis.RedisBroker`.
Worker processes run

    python -m asyncpool worker benchmarks._redis_tasks:broker --workers 64
    python -m asyncpool worker benchmarks._redis_tasks:recovery_broker --workers 64

and the producer (the benchmark script) imports this module to submit to
the same brokers. The environment chooses the names, so that a run never
touches another run's keys: `BENCH_TAG` (the benchmark sets `bench_<pid>`),
`BENCH_REDIS_DB` (on 127.0.0.1:6379) and `BENCH_RECOVERY_ACK_WAIT` (seconds).

`broker` serves the throughput and latency jobs with the default lease;
`recovery_broker` serves the sleeping jobs of the recovery test with a short
lease (`ack_wait`), so that a killed worker's jobs come back quickly.
"""

from __future__ import annotations

import asyncio
import os

from asyncpool.brokers import current_job
from asyncpool.redis import RedisBroker
from benchmarks import _distributed_probe as probe

TAG = os.environ.get("BENCH_TAG", "bench")
REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('BENCH_REDIS_DB', '13'))}"
RECOVERY_ACK_WAIT = float(os.environ.get("BENCH_RECOVERY_ACK_WAIT", "2.0"))

broker = RedisBroker(REDIS_URL, name=f"{TAG}_apr")
recovery_broker = RedisBroker(REDIS_URL, name=f"{TAG}_aprrec", ack_wait=RECOVERY_ACK_WAIT)


@broker.task(name="add")
async def add(x: int, y: int) -> int:
    """The trivial job."""
    await probe.done()
    return x + y


@broker.task(name="sleep1ms")
async def sleep1ms(x: int, y: int) -> int:
    """The trivial job after a 1 ms sleep (I/O-like)."""
    await asyncio.sleep(0.001)
    await probe.done()
    return x + y


@broker.task(name="stamp")
async def stamp(key: int) -> None:
    """The latency job: reports when it started, nothing else."""
    await probe.started(key)
    await probe.done()


@recovery_broker.task(name="nap")
async def nap(key: int, seconds: float) -> int:
    """The recovery job: reports its start (and attempt), then sleeps."""
    await probe.started(key, current_job().attempt)
    await asyncio.sleep(seconds)
    await probe.done()
    return key
