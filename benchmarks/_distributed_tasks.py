"""asyncpool's side of `benchmarks/distributed.py`: two brokers and their tasks.

Worker processes run

    python -m asyncpool worker benchmarks._distributed_tasks:broker --workers 64
    python -m asyncpool worker benchmarks._distributed_tasks:recovery_broker --workers 64

and the producer (the benchmark script) imports this module to submit to
the same brokers. The environment chooses the names, so that a run never
touches another run's streams: `BENCH_TAG` (the benchmark sets
`bench_<pid>`), `BENCH_NATS` and `BENCH_RECOVERY_ACK_WAIT` (seconds).

`broker` serves the throughput and latency jobs with the default lease;
`recovery_broker` serves the sleeping jobs of the recovery test with a short
lease (`ack_wait`), so that a killed worker's jobs come back quickly.
"""

from __future__ import annotations

import asyncio
import os

from asyncpool.brokers import current_job
from asyncpool.jetstream import JetStreamBroker
from benchmarks import _distributed_probe as probe

NATS_URL = os.environ.get("BENCH_NATS", "nats://127.0.0.1:4222")
TAG = os.environ.get("BENCH_TAG", "bench")
RECOVERY_ACK_WAIT = float(os.environ.get("BENCH_RECOVERY_ACK_WAIT", "2.0"))

broker = JetStreamBroker(NATS_URL, name=f"{TAG}_ap")
recovery_broker = JetStreamBroker(NATS_URL, name=f"{TAG}_aprec", ack_wait=RECOVERY_ACK_WAIT)


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
