"""The leak guard of tests/conftest.py fails the tests it should: run in an inner pytest."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

_CONFTEST = (Path(__file__).parent.parent / "conftest.py").read_text()
_INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
addopts = -p no:looptime_plugin -p no:randomly
"""

_CASES = {
    "task": """
import asyncio

async def test_leaves_a_task() -> None:
    asyncio.get_running_loop().create_task(asyncio.sleep(10))
""",
    "never_retrieved": """
import asyncio

async def test_drops_a_failed_future() -> None:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(ValueError("nobody looks"))
    del future
""",
    "unfinished": """
import dataclasses

import pytest

import asyncpool

async def test_leaves_a_job_unfinished(monkeypatch: pytest.MonkeyPatch) -> None:
    async with asyncpool.Dispatcher(workers=1) as d:
        pass
    # Stands for a dispatcher bug: a job that never ends final.
    stats = type(d).stats
    monkeypatch.setattr(
        type(d), "stats", lambda self: dataclasses.replace(stats(self), queued=1)
    )
""",
}


@pytest.mark.parametrize("case", sorted(_CASES))
def test_leak_guard_fails_a_leaking_test(pytester: pytest.Pytester, case: str) -> None:
    """Each kind of leak makes the inner test fail in teardown."""
    pytester.makeconftest(_CONFTEST)
    pytester.makeini(_INI)
    pytester.makepyfile(test_inner=_CASES[case])
    result = pytester.runpytest_subprocess("-q", "-W", "ignore")
    result.assert_outcomes(passed=2, errors=2)  # asyncio and uvloop


def test_leak_guard_passes_a_clean_test(pytester: pytest.Pytester) -> None:
    """A test that cleans up after itself passes the guard."""
    pytester.makeconftest(_CONFTEST)
    pytester.makeini(_INI)
    pytester.makepyfile(
        test_inner="""
import asyncio
import asyncpool

async def test_clean() -> None:
    async with asyncpool.Dispatcher(workers=1) as d:
        await d.submit(asyncio.sleep, 0)
"""
    )
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=2)
