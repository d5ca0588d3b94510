"""Test set-up: every async test runs on asyncio and on uvloop, and must not leak tasks.

* `pytest_asyncio_loop_factories` parametrizes each async test over the
  default loop (ready for the `looptime` fast-forward clock) and uvloop,
  both in asyncio debug mode (`asyncio_debug` in pyproject.toml).
  `ASYNCPOOL_TEST_LOOPS=asyncio` (or `uvloop`) narrows it.
* An autouse guard fails any async test that leaves a task running, a
  started dispatcher with jobs not final, or an exception asyncio reports as
  never retrieved (or a task destroyed while pending).
* `fast_clock` turns on looptime for a test; it is available on the default
  loop only (looptime patches `asyncio.BaseEventLoop`), so on uvloop such a
  test is skipped, saying why.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import looptime
import pytest
import uvloop

import asyncpool


def _asyncio_loop() -> asyncio.AbstractEventLoop:
    # Patched for looptime but with real time, until a test asks for fast_clock.
    return looptime.new_event_loop(_enabled=False)


_LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": _asyncio_loop,
    "uvloop": uvloop.new_event_loop,
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run every async test under each selected loop."""
    wanted = os.environ.get("ASYNCPOOL_TEST_LOOPS", "asyncio,uvloop").split(",")
    return {name: factory for name, factory in _LOOPS.items() if name in wanted}


@pytest.fixture(autouse=True)
def _leak_guard(request: pytest.FixtureRequest) -> None:
    """Put the leak guard on every async test.

    (A usefixtures mark added in pytest_collection_modifyitems looks right
    but is never set up: the fixtures of an item are fixed when it is
    collected. Requesting the guard from an autouse fixture is what works.)
    """
    if inspect.iscoroutinefunction(request.function):
        request.getfixturevalue("_no_leaked_tasks")


# What asyncio reports through the loop's exception handler when something
# was lost: an exception nobody retrieved, a task dropped while pending.
_LOST = ("exception was never retrieved", "was destroyed but it is pending")


@pytest.fixture
async def _no_leaked_tasks(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Fail the test if it leaves a task running, a dispatcher with unfinished jobs,
    or an exception that nobody retrieved (or a task destroyed while pending)."""
    loop = asyncio.get_running_loop()
    lost: list[str] = []
    default_handler = loop.get_exception_handler()

    def record(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if any(marker in message for marker in _LOST):
            lost.append(f"{message}: {context.get('future') or context.get('task')!r}")
        if default_handler is None:
            loop.default_exception_handler(context)
        else:
            default_handler(loop, context)

    loop.set_exception_handler(record)
    started: list[asyncpool.Dispatcher] = []
    original_start = asyncpool.Dispatcher.start

    async def recording_start(self: asyncpool.Dispatcher) -> None:
        started.append(self)
        await original_start(self)

    monkeypatch.setattr(asyncpool.Dispatcher, "start", recording_start)
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"tasks left running: {leaked}"
    for dispatcher in started:
        stats = dispatcher.stats()
        assert (stats.queued, stats.busy) == (0, 0), f"unfinished jobs in {dispatcher!r}: {stats}"
    started.clear()
    # Futures report a never-retrieved exception when they are collected.
    # The young generations only: a full collection per test would cost a
    # minute of the suite, and what a test drops is young.
    gc.collect(1)
    await asyncio.sleep(0)  # the reports are scheduled as callbacks
    loop.set_exception_handler(default_handler)
    assert not lost, f"lost by asyncio: {lost}"


@pytest.fixture
async def fast_clock() -> AsyncIterator[None]:
    """Fast-forward the loop's clock (looptime) while the test runs."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, looptime.LoopTimeEventLoop):
        pytest.skip("the fast-forward clock (looptime) patches the default loop only")
    with looptime.enabled(strict=True, loop=loop):
        yield
