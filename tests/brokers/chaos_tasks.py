"""The tasks of the chaos tests, imported by the worker processes and by the tests themselves.

A worker process runs `python -m asyncpool worker tests.brokers.chaos_tasks:broker`;
the CLI takes a broker *instance* attribute, so `broker` is built at import
time from the environment (tests/brokers/_servers.py names the variables):

* ASYNCPOOL_TEST_ENGINE: which broker, "jetstream" (the default) or "redis";
* ASYNCPOOL_TEST_NATS_URL: JetStream's server (default nats://127.0.0.1:4222);
* ASYNCPOOL_TEST_REDIS_URL: Redis's server (default redis://127.0.0.1:6379/0);
* ASYNCPOOL_TEST_BROKER_NAME: the broker name, fresh per test;
* ASYNCPOOL_TEST_ACK_WAIT: the lease in seconds;
* ASYNCPOOL_TEST_RECORDS: the record file.

Every run of a task appends a JSON line when it starts and one when it ends
(`"ev": "start" | "end"`, the job id, task, attempt, pid, time, and the key
and sequence number of keyed jobs). The file is opened with O_APPEND and each
line is one `write()`: small appends are atomic, so lines of several
processes never interleave, and the line is in the kernel (it survives a
SIGKILL of the writer) before the job returns. It is the tests' witness of
what ran where, apart from the broker under test.

The test process builds its own broker with `ChaosApp(...)` (same engine,
name and server), which registers the same tasks and, with `client=True`,
one more (`chaos.unknown`) that the workers never register.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from asyncpool import Retry
from asyncpool.brokers import current_job

from ._engines import build_broker

MAX_ATTEMPTS = 5
"""The deliveries a chaos job may have (its task's Retry(attempts=...))."""

# The longest a `hold` job waits for its gate file: only a failing test waits this long.
HOLD_LIMIT = 30.0


def _record(ev: str, *, key: str | None = None, seq: int | None = None) -> None:
    info = current_job()
    line: dict[str, object] = {
        "ev": ev,
        "id": info.id,
        "task": info.task,
        "attempt": info.attempt,
        "pid": os.getpid(),
        "t": time.time(),
    }
    if key is not None:
        line["key"] = key
        line["seq"] = seq
    path = os.environ["ASYNCPOOL_TEST_RECORDS"]
    data = (json.dumps(line) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


async def work(seconds: float) -> str:
    """Record, sleep `seconds`, record; return "<id>:<attempt>" (which run produced the result)."""
    _record("start")
    await asyncio.sleep(seconds)
    _record("end")
    info = current_job()
    return f"{info.id}:{info.attempt}"


async def hold(gate: str) -> str:
    """Record, then wait until the file `gate` exists (bounded by HOLD_LIMIT), record."""
    _record("start")
    deadline = time.monotonic() + HOLD_LIMIT
    # Polling: the gate is a file another process creates; there is no event.
    while not os.path.exists(gate):  # noqa: ASYNC240 (a stat, between sleeps)
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        await asyncio.sleep(0.02)
    _record("end")
    return current_job().id


async def keyed(key: str, seq: int, seconds: float) -> int:
    """A keyed job (submitted with `key=key`): record with its key and sequence number."""
    _record("start", key=key, seq=seq)
    await asyncio.sleep(seconds)
    _record("end", key=key, seq=seq)
    return seq


async def unknown() -> None:
    """Registered by the test process only: workers see an unknown task name."""


class ChaosApp:
    """A broker of `engine` ("jetstream" or "redis") on `url` named `name`, with the chaos tasks.

    `client=True` also registers `chaos.unknown`, which no worker knows.
    """

    def __init__(
        self,
        url: str,
        name: str,
        ack_wait: float,
        *,
        client: bool = False,
        engine: str = "jetstream",
    ) -> None:
        self.broker = build_broker(engine, url, name, ack_wait=ack_wait)
        retry = Retry(attempts=MAX_ATTEMPTS, backoff=0.05)
        self.work = self.broker.task(name="chaos.work", retry=retry)(work)
        self.hold = self.broker.task(name="chaos.hold", retry=retry)(hold)
        self.keyed = self.broker.task(name="chaos.keyed", retry=retry)(keyed)
        self.unknown = self.broker.task(name="chaos.unknown")(unknown) if client else None


def _from_environment() -> ChaosApp:
    engine = os.environ.get("ASYNCPOOL_TEST_ENGINE", "jetstream")
    if engine == "redis":
        url = os.environ.get("ASYNCPOOL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    else:
        url = os.environ.get("ASYNCPOOL_TEST_NATS_URL", "nats://127.0.0.1:4222")
    return ChaosApp(
        url,
        os.environ.get("ASYNCPOOL_TEST_BROKER_NAME", "asyncpool_chaos"),
        float(os.environ.get("ASYNCPOOL_TEST_ACK_WAIT", "30")),
        engine=engine,
    )


app = _from_environment()
broker = app.broker
