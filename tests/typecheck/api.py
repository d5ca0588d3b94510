"""Read by mypy only (never run): the result types that `submit` must infer.

`make test` runs `mypy --strict` over this file; an `assert_type` that does
not hold is a type error, so a regression in the overloads fails the build.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import assert_type

import asyncpool
from asyncpool import Dispatcher, JobHandle


class CountLines:
    async def process(self) -> int:
        return 1


class Digest:
    def process(self) -> bytes:
        return b""


class Typed(asyncpool.AsyncJob[str]):
    async def process(self) -> str:
        return ""


async def fetch(url: str, *, retries: int = 0) -> dict[str, int]:
    return {}


def blocking(path: str) -> float:
    return 0.0


async def check(d: Dispatcher) -> None:
    assert_type(await d.submit(CountLines()), JobHandle[int])
    assert_type(await d.submit(Digest()), JobHandle[bytes])
    assert_type(await d.submit(Typed()), JobHandle[str])
    assert_type(await d.submit(fetch, "https://example.org", retries=2), JobHandle[dict[str, int]])
    assert_type(await d.submit(blocking, "/tmp"), JobHandle[float])
    assert_type(await d.submit(fetch("u")), JobHandle[dict[str, int]])
    assert_type(d.submit_nowait(CountLines()), JobHandle[int])
    assert_type(d.submit_nowait(blocking, "/tmp"), JobHandle[float])

    handle = await d.submit(CountLines())
    assert_type(await handle, int)
    assert_type(handle.state, asyncpool.JobState)
    assert_type(handle.started_at, float | None)
    assert_type(d.stats(), asyncpool.Stats)

    # Per-job options keep the result type.
    retry = asyncpool.Retry(attempts=5, on=(ConnectionError, TimeoutError))
    assert_type(await d.submit(fetch, "u", timeout=3, retry=retry), JobHandle[dict[str, int]])
    assert_type(await d.submit(blocking, "/tmp", priority=2, key="disk"), JobHandle[float])
    assert_type(await d.submit(CountLines(), key=("user", 7)), JobHandle[int])
    assert_type(await d.submit(fetch("u"), timeout=1.5), JobHandle[dict[str, int]])
    assert_type(d.submit_nowait(Digest(), priority=-1), JobHandle[bytes])

    # Streaming.
    assert_type(d.map(fetch, ["a", "b"]), AsyncGenerator[dict[str, int], None])
    assert_type(d.map(blocking, ["/a"], ordered=False, window=4), AsyncGenerator[float, None])
    assert_type(
        d.map(fetch, ["a"], return_exceptions=True),
        AsyncGenerator[dict[str, int] | BaseException, None],
    )
    flag: bool = bool(d)
    assert_type(
        d.map(fetch, ["a"], return_exceptions=flag),
        AsyncGenerator[dict[str, int] | BaseException, None],
    )
    assert_type(
        d.map(fetch, ["a"], return_exceptions=True, with_items=True),
        AsyncGenerator[tuple[str, dict[str, int] | BaseException], None],
    )
    assert_type(
        d.map(blocking, ["/a"], ordered=False, with_items=True),
        AsyncGenerator[tuple[str, float], None],
    )
    async for handle_done in asyncpool.as_completed([handle]):
        assert_type(handle_done, JobHandle[int])
    d.resize(4)
    stats = d.stats()
    assert_type(stats.run_time, asyncpool.Latency | None)

    job: asyncpool.Job[int] = CountLines()
    digest: asyncpool.Job[bytes] = Digest()
    del job, digest


async def wrong(d: Dispatcher) -> None:
    await d.submit(fetch, 42)  # type: ignore[call-overload]
    await d.submit(blocking)  # type: ignore[call-overload]
    await d.submit(fetch, "u", 1)  # type: ignore[call-overload]
    await d.submit(object())  # type: ignore[call-overload]
    await d.submit(42)  # type: ignore[call-overload]
    await d.submit(fetch("u"), retry=asyncpool.Retry())  # type: ignore[call-overload]
    await d.submit(fetch, "u", priority="high")  # type: ignore[call-arg]
    d.map(fetch, [1, 2])  # type: ignore[arg-type]
