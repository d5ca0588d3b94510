"""How the Redis engine's scripts reach the server: by SHA1, and many per round trip.

* `Script`: a Lua script run by its SHA1 (`EVALSHA`); the whole text is sent
  only when the server does not know it (the first call, or after a
  restart).
* `Pipeliner`: the scripts called in one turn of the event loop (a burst of
  submits, the ends of jobs that finish together) are written to Redis as
  one pipeline: one write and one read for all of them instead of one each.
  Each caller still awaits its own reply, and gets its own error. A script
  that finds a lane without its consumer group (a Redis that restarted
  with nothing kept) has the groups made again, and runs once more.
* `connection_errors`: redis-py's errors for a lost or unreachable server,
  raised as the built-in `ConnectionError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import redis.asyncio
import redis.exceptions

__all__ = ("Pipeliner", "Script", "connection_errors")

_DROPPED: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@contextlib.contextmanager
def connection_errors(where: str) -> Iterator[None]:
    """Raise a lost or unreachable server as the built-in `ConnectionError` (an `OSError`).

    redis-py's own errors are not `OSError`s; the worker command, like every
    caller of a broker, treats an `OSError` as the server's doing.
    """
    try:
        yield
    except _DROPPED as exc:
        raise lost(where, exc) from exc


def lost(where: str, exc: BaseException) -> ConnectionError:
    return ConnectionError(
        f"lost the connection to Redis at {where}: {str(exc) or type(exc).__name__}"
    )


class Pipeliner:
    """Sends the scripts called in one turn of the event loop as one pipeline."""

    __slots__ = ("_client", "_where", "_queue", "_flushing", "_regroup")

    def __init__(
        self,
        client: redis.asyncio.Redis,
        where: str,
        regroup: Callable[[], Awaitable[None]],
    ) -> None:
        self._client = client
        self._where = where
        self._regroup = regroup
        self._queue: list[tuple[Script, list[Any], asyncio.Future[Any]]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    def call(self, script: Script, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((script, [len(keys), *keys, *args], future))
        return future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _send(self, batch: list[tuple[Script, list[Any], asyncio.Future[Any]]]) -> None:
        try:
            if len(batch) == 1:
                script, words, future = batch[0]
                try:
                    replies: list[Any] = [await _run_one(self._client, script, words)]
                except redis.exceptions.ResponseError as exc:
                    replies = [exc]
            else:
                pipe = self._client.pipeline(transaction=False)
                for script, words, _ in batch:
                    pipe.execute_command("EVALSHA", script.sha, *words)
                replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            error = lost(self._where, exc) if isinstance(exc, _DROPPED) else exc
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        regrouped = False
        for (script, words, future), reply in zip(batch, replies, strict=True):
            again = isinstance(reply, redis.exceptions.NoScriptError)
            if isinstance(reply, redis.exceptions.ResponseError) and "NOGROUP" in str(reply):
                if not regrouped:
                    regrouped = True
                    with contextlib.suppress(Exception):
                        await self._regroup()
                again = True
            if again:
                # The server forgot its scripts or its groups (it restarted):
                # this one goes again, whole.
                try:
                    reply = await _run_one(self._client, script, words)
                except Exception as exc:
                    reply = lost(self._where, exc) if isinstance(exc, _DROPPED) else exc
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


async def _run_one(client: redis.asyncio.Redis, script: Script, words: list[Any]) -> Any:
    try:
        return await client.execute_command("EVALSHA", script.sha, *words)  # type: ignore[no-untyped-call]
    except redis.exceptions.NoScriptError:
        return await client.execute_command("EVAL", script.text, *words)  # type: ignore[no-untyped-call]


class Script:
    """A Lua script, called through a `Pipeliner`."""

    __slots__ = ("text", "sha", "_pipeliner")

    def __init__(self, pipeliner: Pipeliner, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()
        self._pipeliner = pipeliner

    def __call__(self, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """Run it; await the reply (a lost server raises `ConnectionError`)."""
        return self._pipeliner.call(self, keys, args)
