"""Test set-up: every async test runs on asyncio and on uvloop, and must not leak tasks.

* `pytest_asyncio_loop_factories` parametrizes each async test over the
  default loop (ready for the `looptime` fast-forward clock) and uvloop,
  both in asyncio debug mode (`asyncio_debug` in pyproject.toml).
  `ASYNCPOOL_TEST_LOOPS=asyncio` (or `uvloop`) narrows it.
* An autouse guard fails any async test that leaves a task running.
* `fast_clock` turns on looptime for a test; it is available on the default
  loop only (looptime patches `asyncio.BaseEventLoop`), so on uvloop such a
  test is skipped, saying why.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Callable

import looptime
import pytest
import uvloop


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the leak guard on every async test."""
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.add_marker(pytest.mark.usefixtures("_no_leaked_tasks"))


@pytest.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail the test if it leaves any task running."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"tasks left running: {leaked}"


@pytest.fixture
async def fast_clock() -> AsyncIterator[None]:
    """Fast-forward the loop's clock (looptime) while the test runs."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, looptime.LoopTimeEventLoop):
        pytest.skip("the fast-forward clock (looptime) patches the default loop only")
    with looptime.enabled(strict=True, loop=loop):
        yield
