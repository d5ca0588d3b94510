"""The in-process harness of the broker contract tests, for any engine.

Producer and worker share the test's process: `serving(broker)` runs
`broker.serve()` on a `Dispatcher` beside the test's `broker.submit()`, and
the tasks `register` puts on a broker signal the test through a `Gate`'s
events, so nothing sleeps to synchronize.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asyncpool import Dispatcher, Retry
from asyncpool.brokers import Broker, ServeReport, current_job


class Gate:
    """Events a job waits on and sets, shared between the test and its tasks."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.runs: list[tuple[str, int]] = []


@asynccontextmanager
async def serving(
    broker: Broker, workers: int = 4, stop: asyncio.Event | None = None
) -> AsyncIterator[list[ServeReport]]:
    """Serve `broker` on a dispatcher for the body; stop gracefully after it."""
    reports: list[ServeReport] = []
    stop = stop or asyncio.Event()
    async with Dispatcher(workers=workers) as dispatcher:
        task = asyncio.create_task(broker.serve(dispatcher, stop=stop))
        try:
            yield reports
        finally:
            stop.set()
            reports.append(await task)


def register(broker: Broker, gate: Gate) -> dict[str, Any]:
    """The test tasks, registered on `broker`."""

    @broker.task(name="add")
    async def add(x: int, y: int) -> int:
        gate.runs.append((current_job().id, current_job().attempt))
        return x + y

    @broker.task(name="mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @broker.task(name="flaky", retry=Retry(attempts=3, backoff=0.05, jitter=0))
    async def flaky(succeed_on: int) -> int:
        attempt = current_job().attempt
        gate.runs.append((current_job().id, attempt))
        if attempt < succeed_on:
            raise ValueError(f"attempt {attempt} fails")
        return attempt

    @broker.task(name="wait")
    async def wait() -> str:
        gate.started.set()
        try:
            await gate.release.wait()
        except asyncio.CancelledError:
            gate.cancelled.set()
            raise
        return "released"

    @broker.task(name="record")
    async def record(label: str) -> str:
        gate.runs.append((label, current_job().attempt))
        return label

    return {"add": add, "mul": mul, "flaky": flaky, "wait": wait, "record": record}


@dataclasses.dataclass
class Greet:
    """A Job class: rebuilt on the worker from its fields."""

    name: str

    async def process(self) -> str:
        return f"hello {self.name}"
