"""Read by mypy only (never run): the result types that `submit` must infer.

`make test` runs `mypy --strict` over this file; an `assert_type` that does
not hold is a type error, so a regression in the overloads fails the build.
"""

from __future__ import annotations

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

    job: asyncpool.Job[int] = CountLines()
    digest: asyncpool.Job[bytes] = Digest()
    del job, digest


async def wrong(d: Dispatcher) -> None:
    await d.submit(fetch, 42)  # type: ignore[call-overload]
    await d.submit(blocking)  # type: ignore[call-overload]
    await d.submit(fetch, "u", 1)  # type: ignore[call-overload]
    await d.submit(object())  # type: ignore[call-overload]
    await d.submit(42)  # type: ignore[call-overload]
