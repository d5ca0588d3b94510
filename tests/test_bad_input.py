"""Bad input: rejected by the call itself, early, with a message naming the argument."""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any

import pytest

import asyncpool


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"workers": 0}, ValueError, "workers must be >= 1, got 0"),
        ({"workers": -1}, ValueError, "workers must be >= 1, got -1"),
        ({"workers": 1.5}, TypeError, "workers must be an int, got float 1.5"),
        ({"workers": "8"}, TypeError, "workers must be an int, got str '8'"),
        ({"workers": True}, TypeError, "workers must be an int, got bool True"),
        ({"workers": None}, TypeError, "workers must be an int, got NoneType None"),
        ({"queue_size": -1}, ValueError, "queue_size must be >= 0, got -1"),
        ({"queue_size": 2.0}, TypeError, "queue_size must be an int"),
        ({"fail_fast": 1}, TypeError, "fail_fast must be a bool"),
        ({"on_error": "log"}, TypeError, "on_error must be callable or None"),
        ({"name": 3}, TypeError, "name must be a str or None"),
        ({"sync_in": "gpu"}, ValueError, "sync_in must be 'thread' or 'process', got 'gpu'"),
        ({"timeout": 0}, ValueError, "timeout must be > 0 seconds"),
        ({"timeout": -1.0}, ValueError, "timeout must be > 0 seconds"),
        ({"timeout": "5"}, TypeError, "timeout must be a number of seconds or None"),
        ({"retry": 3}, TypeError, "retry must be an asyncpool.Retry or None, got 3"),
        ({"rate_limit": 0}, ValueError, "rate_limit must be > 0 starts per second"),
        ({"rate_limit": float("inf")}, ValueError, "rate_limit must be > 0 starts per second"),
        ({"rate_limit": "10/s"}, TypeError, "rate_limit must be a number of starts per second"),
        ({"rate_limit": 5, "rate_burst": 0}, ValueError, "rate_burst must be >= 1, got 0"),
        ({"rate_burst": 4}, ValueError, "rate_burst needs rate_limit"),
    ],
)
def test_bad_input_dispatcher_arguments(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each invalid constructor argument raises at construction, naming the argument."""
    with pytest.raises(error) as caught:
        asyncpool.Dispatcher(**kwargs)
    assert str(caught.value).startswith(message)


def test_bad_input_unknown_option_is_a_type_error() -> None:
    """An option the dispatcher does not have is rejected, not ignored."""
    with pytest.raises(TypeError, match="deadline"):
        asyncpool.Dispatcher(deadline=5)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"attempts": 0}, ValueError, "Retry attempts must be >= 1, got 0"),
        ({"attempts": 2.0}, TypeError, "Retry attempts must be an int"),
        ({"backoff": -1}, ValueError, "Retry backoff must be a finite number of seconds >= 0"),
        ({"backoff_max": float("inf")}, ValueError, "Retry backoff_max must be a finite"),
        ({"multiplier": 0.5}, ValueError, "Retry multiplier must be >= 1"),
        ({"jitter": 1.5}, ValueError, "Retry jitter must be between 0 and 1"),
        ({"jitter": "some"}, TypeError, "Retry jitter must be a number"),
        ({"on": "ValueError"}, TypeError, "Retry on= must be an exception type"),
        ({"on": (ValueError, int)}, TypeError, "Retry on= must be an exception type"),
        ({"on": ()}, TypeError, "Retry on= must be an exception type"),
    ],
)
def test_bad_input_retry_policy(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each invalid Retry field raises when the policy is made, naming the field."""
    with pytest.raises(error) as caught:
        asyncpool.Retry(**kwargs)
    assert str(caught.value).startswith(message)


async def _coroutine_function(x: int) -> int:
    return x


class _NotAJob:
    process = 42


class _JobClass:
    async def process(self) -> None:
        pass


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


async def test_bad_input_coroutine_object_with_arguments() -> None:
    """A coroutine object with extra arguments is refused, and closed so it warns of nothing."""
    coro = _coroutine_function(1)
    async with asyncpool.Dispatcher(workers=1) as d:
        with pytest.raises(TypeError, match="coroutine object and extra arguments"):
            await d.submit(coro, 2)  # type: ignore[call-overload]
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


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


async def test_bad_input_coroutine_object_cannot_be_retried() -> None:
    """submit(coro_obj, retry=...) is a TypeError at submit: a coroutine object runs once."""
    coro = _coroutine_function(1)
    async with asyncpool.Dispatcher(workers=1) as d:
        with pytest.raises(TypeError, match="coroutine object runs once"):
            await d.submit(coro, retry=asyncpool.Retry())  # type: ignore[call-overload]
        assert d.stats().submitted == 0
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


async def test_bad_input_future_is_refused() -> None:
    """An already scheduled awaitable (a future) is refused: it cannot be run by a worker."""
    async with asyncpool.Dispatcher(workers=1) as d:
        future = asyncio.get_running_loop().create_future()
        with pytest.raises(TypeError, match="await it directly"):
            await d.submit(future)  # type: ignore[call-overload]
        future.cancel()


async def test_bad_input_partial_passes_a_reserved_name() -> None:
    """functools.partial is the documented way to give a job its own `key` argument."""

    async def lookup(table: dict[str, int], *, key: str) -> int:
        return table[key]

    async with asyncpool.Dispatcher(workers=1) as d:
        handle = await d.submit(functools.partial(lookup, key="a"), {"a": 1})
    assert handle.result() == 1


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(-1, ValueError), (float("nan"), ValueError), ("5", TypeError), (True, TypeError)],
)
async def test_bad_input_close_timeout(timeout: Any, error: type[Exception]) -> None:
    """close(timeout=...) rejects what is not a non-negative number, naming timeout."""
    async with asyncpool.Dispatcher(workers=1) as d:
        with pytest.raises(error, match="timeout"):
            await d.close(timeout=timeout)
        assert d.running  # a rejected close changes nothing


async def test_bad_input_arguments_that_do_not_fit_fail_the_job() -> None:
    """Arguments that do not fit the function fail the job as the call itself would."""
    async with asyncpool.Dispatcher(workers=1, on_error=lambda h, e: None) as d:
        handle = await d.submit(_coroutine_function)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        handle.result()
