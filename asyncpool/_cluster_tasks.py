"""The tasks of `python -m asyncpool demo-cluster`, and the broker its worker processes serve.

The demo starts `python -m asyncpool worker asyncpool._cluster_tasks:broker`.
That command takes a broker *instance*, so `broker` is built when this
module is imported, from environment variables the demo sets (their names
are the `ENV_*` constants): the private server's URL, the broker name, the
lease (`ack_wait`), and the run log.

Two tasks, both small and checkable by the producer, which computes every
answer again itself:

* `checksum` (async): waits a few tens of milliseconds, as a download
  would, then takes the SHA-256 of bytes made from a seed;
* `count_primes` (sync, so each worker runs it in a thread): counts the
  primes in a range.

Each returns a `Receipt`: the answer, plus the attempt (`current_job()`)
and the pid of the process that ran it, so the producer can tell which
worker ran what, and which jobs ran again. Each run also appends a line
when it starts and one when it ends to the run log (when one is set): a
SIGKILLed worker never gets to say which jobs it was running, and the log
keeps what it started.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from typing import Final, TypedDict

from ._remote import current_job
from ._tasks import Task
from .jetstream import JetStreamBroker

__all__ = (
    "ENV_LEASE",
    "ENV_NAME",
    "ENV_RUN_LOG",
    "ENV_URL",
    "ClusterTasks",
    "Receipt",
    "broker",
    "checksum_of",
    "primes_between",
    "tasks",
)

ENV_URL: Final = "ASYNCPOOL_DEMO_NATS_URL"
ENV_NAME: Final = "ASYNCPOOL_DEMO_BROKER_NAME"
ENV_LEASE: Final = "ASYNCPOOL_DEMO_LEASE"
ENV_RUN_LOG: Final = "ASYNCPOOL_DEMO_RUN_LOG"


class Receipt(TypedDict):
    """What a demo task returns: its answer, and which run of the job produced it."""

    value: str | int
    attempt: int
    pid: int


def checksum_of(seed: int, size: int) -> str:
    """The first 16 hex digits of the SHA-256 of `size` bytes drawn from `seed`."""
    data = random.Random(seed).randbytes(size)
    return hashlib.sha256(data).hexdigest()[:16]


def primes_between(start: int, stop: int) -> int:
    """How many primes n there are with start <= n < stop (trial division: a little CPU)."""
    count = 0
    for n in range(max(start, 2), stop):
        if n < 4:
            count += 1
            continue
        if n % 2 == 0:
            continue
        divisor = 3
        while divisor * divisor <= n:
            if n % divisor == 0:
                break
            divisor += 2
        else:
            count += 1
    return count


def _log_run(event: str) -> None:
    """Append one line to the run log, if the demo set one.

    One `write()` of a short line to a file opened with O_APPEND: lines of
    several processes never interleave, and the line is in the kernel before
    the job goes on, so it outlives a SIGKILL of this process.
    """
    path = os.environ.get(ENV_RUN_LOG)
    if not path:
        return
    info = current_job()
    line = {
        "ev": event,
        "id": info.id,
        "attempt": info.attempt,
        "pid": os.getpid(),
        "t": time.time(),
    }
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def _receipt(value: str | int) -> Receipt:
    return {"value": value, "attempt": current_job().attempt, "pid": os.getpid()}


async def checksum(seed: int, size: int, io_ms: int) -> Receipt:
    """Wait `io_ms` milliseconds (a simulated download), then hash `size` bytes made from `seed`."""
    _log_run("start")
    await asyncio.sleep(io_ms / 1000)
    value = checksum_of(seed, size)
    _log_run("end")
    return _receipt(value)


def count_primes(start: int, stop: int) -> Receipt:
    """Count the primes in [start, stop): a sync task, run in a worker thread."""
    _log_run("start")
    value = primes_between(start, stop)
    _log_run("end")
    return _receipt(value)


class ClusterTasks:
    """A `JetStreamBroker` with the demo's tasks registered on it.

    The worker processes get theirs from the environment (the module's
    `broker`); the demo's producer builds its own with the same arguments.

    Args:
        url: The NATS server.
        name: The broker name (names its streams and buckets).
        lease: The broker's `ack_wait`, in seconds.
    """

    def __init__(self, url: str, name: str, lease: float) -> None:
        self.broker = JetStreamBroker(url, name=name, ack_wait=lease)
        register = self.broker.task
        self.checksum: Task[[int, int, int], Receipt] = register(name="demo.checksum")(checksum)
        self.count_primes: Task[[int, int], Receipt] = register(name="demo.count_primes")(
            count_primes
        )

    @classmethod
    def from_environment(cls) -> ClusterTasks:
        """Built from the `ENV_*` variables (defaults: the machine's NATS, lease 30 s)."""
        return cls(
            os.environ.get(ENV_URL, "nats://127.0.0.1:4222"),
            os.environ.get(ENV_NAME, "asyncpool_demo"),
            float(os.environ.get(ENV_LEASE, "30")),
        )


tasks = ClusterTasks.from_environment()
broker = tasks.broker
