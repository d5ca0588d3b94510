"""What submit accepts as a job, and what it refuses at the call (asyncpool._job).

Targets are classified when they are submitted: a coroutine function, a Job,
a coroutine object or a sync callable runs; anything else is refused with a
TypeError naming what was given, before anything is queued.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import asyncpool


async def _coroutine_function(x: int) -> int:
    return x


class _NotAJob:
    process = 42


class _JobClass:
    async def process(self) -> None:
        pass


# Bad input: what submit cannot run must be refused at the call, before it is queued.
@pytest.mark.parametrize(
    ("target", "args", "kwargs", "message"),
    [
        (42, (), {}, "got int 42"),
        (None, (), {}, "got NoneType None"),
        (object(), (), {}, "got object"),
        ("print('hi')", (), {}, "got str"),
        (b"bytes", (), {}, "got bytes"),
        (_NotAJob(), (), {}, "'process' attribute is not callable"),
        (_JobClass, (), {}, "got the class _JobClass, not an instance"),
        (_JobClass(), (1,), {}, "a Job (_JobClass) and extra arguments"),
        (_coroutine_function, (1,), {"key": ["a"]}, "key must be hashable"),
        (_coroutine_function, (1,), {"timeout": "1"}, "timeout must be a number of seconds"),
        (_coroutine_function, (1,), {"retry": 3}, "retry must be an asyncpool.Retry or None"),
        (_coroutine_function, (1,), {"priority": 1.5}, "priority must be an int"),
        (_coroutine_function, (1,), {"priority": True}, "priority must be an int"),
        (_JobClass(), (), {"retry": asyncpool.Retry(), "x": 1}, "a Job (_JobClass) and extra"),
    ],
)
async def test_bad_input_submit_is_rejected_by_submit(
    target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    """submit and submit_nowait reject what they cannot run, before anything is queued."""
    async with asyncpool.Dispatcher(workers=1) as d:
        with pytest.raises(TypeError) as caught:
            await d.submit(target, *args, **kwargs)
        assert message in str(caught.value)
        with pytest.raises(TypeError) as caught:
            d.submit_nowait(target, *args, **kwargs)
        assert message in str(caught.value)
        assert d.stats().submitted == 0


def _numbers(n: int) -> Iterator[int]:
    yield from range(n)


async def _stream(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


class _GeneratorJob:
    def process(self) -> Iterator[int]:
        yield 1


class _AsyncGeneratorJob:
    async def process(self) -> AsyncIterator[int]:
        yield 1


class _GeneratorCall:
    def __call__(self) -> Iterator[int]:
        yield 1


GENERATOR = "a job returns one result; return a list instead, or use dispatcher.map()"
STREAM = "a job returns one result; to stream results, iterate it inside an async def job"


# Regression (issue 16): a generator function was accepted and failed in the worker as an
# "awaitable"; an async generator function "succeeded" without its body ever running.
@pytest.mark.parametrize(
    ("target", "args", "message"),
    [
        (_numbers, (3,), f"submit() got the generator function _numbers: {GENERATOR}"),
        (_stream, (3,), f"submit() got the async generator function _stream: {STREAM}"),
        (functools.partial(_numbers, 3), (), "submit() got the generator function _numbers"),
        (
            _GeneratorJob(),
            (),
            f"submit() got a Job (_GeneratorJob) whose process() is a generator function: "
            f"{GENERATOR}",
        ),
        (
            _AsyncGeneratorJob(),
            (),
            "submit() got a Job (_AsyncGeneratorJob) whose process() is an async generator "
            f"function: {STREAM}",
        ),
        (
            _AsyncGeneratorJob().process,
            (),
            "submit() got the async generator function _AsyncGeneratorJob.process",
        ),
        (_GeneratorCall(), (), "submit() got the generator function _GeneratorCall.__call__"),
    ],
    ids=["generator", "async-generator", "partial", "job", "async-job", "method", "__call__"],
)
async def test_bad_input_generator_function_is_refused_at_submit(
    target: Any, args: tuple[Any, ...], message: str
) -> None:
    """A generator or async generator function (or a Job whose process() is one) is refused."""
    async with asyncpool.Dispatcher(workers=1) as d:
        with pytest.raises(TypeError) as caught:
            await d.submit(target, *args)
        assert str(caught.value).startswith(message)
        with pytest.raises(TypeError) as caught:
            d.submit_nowait(target, *args)
        assert str(caught.value).startswith(message)
        assert d.stats().submitted == 0


# Bad input: a refused coroutine object with arguments must be closed, not left to warn.
async def test_bad_input_coroutine_object_with_arguments() -> None:
    """A coroutine object with extra arguments is refused, and closed so it warns of nothing."""
    coro = _coroutine_function(1)
    async with asyncpool.Dispatcher(workers=1) as d:
        with pytest.raises(TypeError, match="coroutine object and extra arguments"):
            await d.submit(coro, 2)  # type: ignore[call-overload]
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


# Regression: a used coroutine object reached a worker; one another task ran got closed.
async def test_bad_input_used_coroutine_object_is_refused() -> None:
    """A coroutine object that already ran (or was closed) is refused by submit, not by a worker."""
    done = _coroutine_function(1)
    assert await done == 1
    closed = _coroutine_function(2)
    closed.close()
    async with asyncpool.Dispatcher(workers=1) as d:
        for coro in (done, closed):
            with pytest.raises(TypeError, match="coroutine object runs once"):
                await d.submit(coro)
        # One that another task is running is refused too, and left running.
        gate = asyncio.Event()

        async def waits() -> str:
            await gate.wait()
            return "untouched"

        running = waits()
        task = asyncio.ensure_future(running)
        await asyncio.sleep(0)
        with pytest.raises(TypeError, match="already started"):
            await d.submit(running)
        gate.set()
        assert await task == "untouched"
        assert d.stats().submitted == 0


# Bad input: retry= with a coroutine object (it runs once) must fail at submit.
async def test_bad_input_coroutine_object_cannot_be_retried() -> None:
    """submit(coro_obj, retry=...) is a TypeError at submit: a coroutine object runs once."""
    coro = _coroutine_function(1)
    async with asyncpool.Dispatcher(workers=1) as d:
        with pytest.raises(TypeError, match="coroutine object runs once"):
            await d.submit(coro, retry=asyncpool.Retry())  # type: ignore[call-overload]
        assert d.stats().submitted == 0
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


# Bad input: a future cannot be run by a worker and must be refused at submit.
async def test_bad_input_future_is_refused() -> None:
    """An already scheduled awaitable (a future) is refused: it cannot be run by a worker."""
    async with asyncpool.Dispatcher(workers=1) as d:
        future = asyncio.get_running_loop().create_future()
        with pytest.raises(TypeError, match="await it directly"):
            await d.submit(future)  # type: ignore[call-overload]
        future.cancel()


# Bad input: functools.partial must stay the way to give a job its own `key` argument.
async def test_bad_input_partial_passes_a_reserved_name() -> None:
    """functools.partial is the documented way to give a job its own `key` argument."""

    async def lookup(table: dict[str, int], *, key: str) -> int:
        return table[key]

    async with asyncpool.Dispatcher(workers=1) as d:
        handle = await d.submit(functools.partial(lookup, key="a"), {"a": 1})
    assert handle.result() == 1


# Bad input: arguments that do not fit must fail the job as the call itself would.
async def test_bad_input_arguments_that_do_not_fit_fail_the_job() -> None:
    """Arguments that do not fit the function fail the job as the call itself would."""
    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: None) as d:
        handle = await d.submit(_coroutine_function)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        handle.result()
