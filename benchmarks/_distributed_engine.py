"""What `benchmarks/distributed.py` needs from an engine, and what every engine shares.

An *engine* is one broker technology and the systems measured on it: the
JetStream engine (asyncpool's `JetStreamBroker`, taskiq-nats, arq, a raw
JetStream floor; `_jetstream_engine.py`) and the Redis engine (asyncpool's
`RedisBroker`, arq, SAQ, taskiq-redis, a raw Redis Streams floor;
`_redis_engine.py`). The runner measures each system of each engine the same
way; an `Engine` tells it how to reach the systems: their producer-side
clients, the command lines of their worker processes, what to delete at the
end and what to say about them on the results page.

This module imports only the standard library: it is also imported by
producers that run in a peer's own environment (`_redis_taskiq.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

WINDOW = 64  # jobs in flight on the producer side
CONCURRENCY = 64  # jobs at once per worker process


async def lanes(n: int, one: Callable[[int], Awaitable[Any]], window: int = WINDOW) -> list[Any]:
    """Run `one(0)` ... `one(n - 1)` with `window` of them in flight; their results in order."""
    results: list[Any] = [None] * n
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            results[i] = await one(i)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(window, n)):
            group.create_task(lane())
    return results


@dataclass
class Context:
    """The run's settings, as an engine sees them."""

    args: argparse.Namespace
    tag: str  # names everything the run makes: `bench_<pid>`
    env: dict[str, str]  # the worker processes' environment


class Client(Protocol):
    """One system's producer side."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def call(self, job: str, i: int) -> int:
        """Submit `job(i, 1)` and await its result."""
        ...

    async def send(self, job: str, i: int) -> None:
        """Submit `job(i, 1)` with no result; return once the submit is durable."""
        ...

    async def stamp(self, key: int) -> float | None:
        """Submit the latency job with no result.

        Returns None, or the `time.time()` just before the submit when the
        submit happened in another process (the runner's own clock would
        count the hop to that process).
        """
        ...


@runtime_checkable
class RemoteLanes(Protocol):
    """A producer in another process, which runs the measured lanes itself.

    A system whose client library cannot be imported next to the runner
    (another version of a shared dependency) submits from a process of its
    own environment; the runner sends it one command per measurement, so
    nothing per job crosses between the processes.
    """

    async def results_lanes(self, job: str, n: int) -> tuple[float, int]:
        """`n` calls of `job(i, 1)`, WINDOW lanes: (seconds taken, sum of the results)."""
        ...

    async def send_lanes(self, job: str, n: int) -> tuple[float, float]:
        """`n` fire-and-forget submits, WINDOW lanes: (wall-clock start, seconds taken)."""
        ...


@dataclass(frozen=True)
class Prepared:
    """What an engine could set up for the chosen systems."""

    modules: dict[str, ModuleType] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # system -> why not


@dataclass(frozen=True)
class Engine:
    """One broker technology and the systems measured on it."""

    name: str  # as `--engine` says it
    title: str  # as the page says it
    systems: tuple[str, ...]  # in the order measured; "asyncpool" first
    peers: tuple[str, ...]  # the frameworks: asyncpool aims at 3x the fastest of them
    floor: str  # the system with no framework: asyncpool aims at 0.3x it
    labels: Mapping[str, str]  # how tables name each system
    summary: str  # the page's introduction of the engine (markdown, one clause)
    prepare: Callable[[Context, list[str]], Prepared]
    client: Callable[[Context, str, Mapping[str, ModuleType]], Client]
    command: Callable[[Context, str, str], list[str]]  # system, broker attribute
    clean: Callable[[Context], Awaitable[None]]
    environments: Callable[[list[str]], dict[str, dict[str, str]]]  # system -> where it ran
    method: Callable[[dict[str, Any]], str]  # results -> the page's description of the systems
    where_time_goes: str  # the page's note under the targets (markdown)


class AsyncpoolClient:
    """asyncpool: `broker.submit(task, ...)`, `await handle` or `result=False`."""

    def __init__(self, tasks: ModuleType, result_timeout: float) -> None:
        self.tasks = tasks
        self.broker = tasks.broker
        self.result_timeout = result_timeout
        self.stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        await self.stack.enter_async_context(self.broker)

    async def close(self) -> None:
        await self.stack.aclose()

    async def call(self, job: str, i: int) -> int:
        handle = await self.broker.submit(getattr(self.tasks, job), i, 1)
        async with asyncio.timeout(self.result_timeout):
            value: int = await handle
        return value

    async def send(self, job: str, i: int) -> None:
        await self.broker.submit(getattr(self.tasks, job), i, 1, result=False)

    async def stamp(self, key: int) -> None:
        await self.broker.submit(self.tasks.stamp, key, result=False)


def asyncpool_command(tasks_module: str, attribute: str) -> list[str]:
    """`python -m asyncpool worker MODULE:ATTRIBUTE --workers 64` with the running python."""
    target = f"{tasks_module}:{attribute}"
    return [sys.executable, "-m", "asyncpool", "worker", target, "--workers", str(CONCURRENCY)]
