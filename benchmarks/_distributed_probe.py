"""What a benchmark job tells the producer, the same way in every system.

`benchmarks/distributed.py` needs to know, in fire-and-forget mode, when the
workers have run every job, and, for latency and recovery, when a given job
started. Asking each framework (stream state, result keys, queue lengths)
would measure each one differently, so every job of every system calls the
functions below instead, inside the worker process:

- `await done()` after the job's work: it bumps a per-process counter and
  notes the wall-clock time. A background task in the worker publishes
  `{"pid", "count", "last"}` on core NATS when the counter moved (checked
  every 10 ms) and every 250 ms anyway. A job pays one increment and one
  `time.time()`; the producer takes the time of the last completion from
  `last`, so the 10 ms reporting period does not add to the measurement.
- `await started(key, attempt)` at the start of a latency or recovery job:
  one core NATS publish of `{"pid", "key", "attempt", "t"}`.

The NATS connection is opened lazily by the first job of the process. The
subjects derive from the run's tag (environment variable `BENCH_TAG`), so
concurrent runs do not mix.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

NATS_URL = os.environ.get("BENCH_NATS", "nats://127.0.0.1:4222")
TAG = os.environ.get("BENCH_TAG", "bench")
DONE_SUBJECT = f"bench.{TAG}.done"
STARTED_SUBJECT = f"bench.{TAG}.started"
REPORT_EVERY = 0.010  # seconds between checks of the counter
HEARTBEAT_EVERY = 0.250  # seconds between reports when nothing changed

_count = 0
_last = 0.0
_client: Any = None  # nats.aio.client.Client once connected
_connecting: asyncio.Task[Any] | None = None
_reporter: asyncio.Task[None] | None = None


async def _connected() -> Any:
    """The process's NATS client, connecting (once) on first use."""
    global _connecting, _reporter
    if _client is not None:
        return _client
    if _connecting is None:
        _connecting = asyncio.get_running_loop().create_task(_connect())
    client = await asyncio.shield(_connecting)
    if _reporter is None:
        _reporter = asyncio.get_running_loop().create_task(_report(client))
    return client


async def _connect() -> Any:
    global _client
    import nats

    _client = await nats.connect(NATS_URL, name=f"bench-probe-{os.getpid()}")
    return _client


async def _report(client: Any) -> None:
    """Publish this process's completion count when it moves, and periodically."""
    pid = os.getpid()
    sent = -1
    quiet = 0.0
    while True:
        await asyncio.sleep(REPORT_EVERY)
        quiet += REPORT_EVERY
        if _count != sent or quiet >= HEARTBEAT_EVERY:
            sent, quiet = _count, 0.0
            body = {"pid": pid, "count": sent, "last": _last}
            await client.publish(DONE_SUBJECT, json.dumps(body).encode())


async def done() -> None:
    """Count one finished job (call it as the job's last step)."""
    global _count, _last
    _count += 1
    _last = time.time()
    if _client is None:
        await _connected()


async def started(key: int, attempt: int = 1) -> None:
    """Tell the producer, at once, that job `key` started (attempt `attempt`)."""
    t = time.time()
    client = await _connected()
    body = {"pid": os.getpid(), "key": key, "attempt": attempt, "t": t}
    await client.publish(STARTED_SUBJECT, json.dumps(body).encode())
    await client.flush()
