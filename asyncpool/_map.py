"""`Dispatcher.map` and `as_completed`: streaming many jobs' results.

Both wait for handles the same way: a done callback on each handle feeds a
deque (or, in input order, wakes the reader when the oldest job is done),
and the reader sleeps on an event until there is something to take. Nothing
polls, and taking a result costs the same whatever the number in flight.

`map` owns the jobs it submits: when it stops early it cancels them and
waits for them, and a failure among them that nobody took is reported
through the dispatcher (`on_error` or the log), never dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
)
from typing import Any, Final, Generic, TypeVar

from ._handle import JobHandle
from ._ports import MapHost

__all__ = ("as_completed", "map_results")

T = TypeVar("T")

_END: Final = object()  # what next()/anext() return once the input is exhausted


def map_results(
    dispatcher: MapHost,
    fn: Callable[[Any], Any],
    iterable: Iterable[Any] | AsyncIterable[Any],
    *,
    ordered: bool,
    window: int | None,
    return_exceptions: bool,
    with_items: bool,
    job_options: dict[str, Any],
) -> AsyncGenerator[Any, None]:
    """Validate the arguments now, then return the generator of results.

    The body of `Dispatcher.map`. It is a plain function so that a bad
    argument raises at the call, where the mistake is, rather than at the
    first `__anext__`, which may be far away. Nothing else happens here: the
    input is not touched and no job is submitted until iteration starts.

    Raises:
        TypeError: `fn` is not callable, `iterable` is neither an iterable
            nor an async iterable, `ordered`, `return_exceptions` or
            `with_items` is not a bool, or `window` is neither None nor an int.
        ValueError: `window` < 1.
    """
    if not callable(fn):
        raise TypeError(f"map() fn must be callable, got {type(fn).__name__} {fn!r}")
    if not isinstance(iterable, (Iterable, AsyncIterable)):
        raise TypeError(
            "map() iterable must be an iterable or an async iterable, "
            f"got {type(iterable).__name__} {iterable!r}"
        )
    if not isinstance(ordered, bool):
        raise TypeError(f"map() ordered must be a bool, got {ordered!r}")
    if not isinstance(return_exceptions, bool):
        raise TypeError(f"map() return_exceptions must be a bool, got {return_exceptions!r}")
    if not isinstance(with_items, bool):
        raise TypeError(f"map() with_items must be a bool, got {with_items!r}")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int):
            raise TypeError(
                f"map() window must be an int or None, got {type(window).__name__} {window!r}"
            )
        if window < 1:
            raise ValueError(f"map() window must be >= 1, got {window}")
    return _map(
        dispatcher, fn, iterable, ordered, window, return_exceptions, with_items, job_options
    )


async def _map(
    dispatcher: MapHost,
    fn: Callable[[Any], Any],
    iterable: Iterable[Any] | AsyncIterable[Any],
    ordered: bool,
    window: int | None,
    return_exceptions: bool,
    with_items: bool,
    job_options: dict[str, Any],
) -> AsyncGenerator[Any, None]:
    if not dispatcher.running:
        # Said before the first read, so that no item is taken from the input
        # only to be refused by submit(). Later, submit() itself raises: a
        # check before every read would also fire when the input has just
        # run out and nothing more needed submitting.
        raise dispatcher._closed_error()
    limit = 2 * dispatcher.workers if window is None else window
    in_flight: _InOrder | _Completions[Any] = _InOrder() if ordered else _Completions()
    # Exactly one of the two is read; the async one wins for an object that
    # is both. It is read in the consumer's task (not a helper task), so an
    # async generator that holds a context across its yields keeps working.
    items: AsyncIterator[Any] | None = None
    sync_items: Iterator[Any] = iter(())
    if isinstance(iterable, AsyncIterable):
        items = aiter(iterable)
    else:
        sync_items = iter(iterable)
    exhausted = False
    try:
        while True:
            # Top up the window. An item is read only when its job can be
            # submitted, so at most `limit` jobs are ever submitted and not
            # yet yielded, and an infinite input is read as it is consumed.
            while not exhausted and len(in_flight) < limit:
                item = next(sync_items, _END) if items is None else await anext(items, _END)
                if item is _END:
                    exhausted = True
                    break
                try:
                    handle = await dispatcher.submit(fn, item, **job_options)
                except asyncio.CancelledError:
                    # Cut short while waiting for room with an item in hand:
                    # record it, so that the item is not lost to the user.
                    dispatcher._cut_short_unsubmitted(fn, item, job_options)
                    raise
                in_flight.add(handle)
                del handle
            if not in_flight:
                return
            # A failure is raised here, at its position (the `finally` then
            # cancels the rest). No local keeps the handle while suspended,
            # so a result the consumer drops is freed.
            if with_items:
                done = await in_flight.next_done()
                outcome = _take(done, return_exceptions)
                item = done.args[0]  # the job is fn(item)
                del done
                yield item, outcome
                del item, outcome
            else:
                yield _take(await in_flight.next_done(), return_exceptions)
    finally:
        await _abandon(dispatcher, in_flight.outstanding())


def _take(handle: JobHandle[Any], return_exceptions: bool) -> Any:
    """The job's result; its exception (a `CancelledError` if cancelled) raised or returned."""
    if not return_exceptions:
        return handle.result()  # raises as awaiting the handle would
    if handle.cancelled():
        # result() raises the handle's own CancelledError, message included.
        # It is the job's outcome, read without awaiting: it cannot be a
        # cancellation of this task.
        try:
            handle.result()
        except asyncio.CancelledError as cancelled:
            return cancelled
    exc = handle.exception()
    return handle.result() if exc is None else exc


async def _abandon(dispatcher: MapHost, handles: list[JobHandle[Any]]) -> None:
    """Cancel the jobs whose results nobody will take, and wait until all have ended.

    A map cut short by a cancellation of its consumer (a deadline, Ctrl+C)
    did not choose to drop these jobs: they are cancelled the way a shutdown
    cancels, and listed in the dispatcher's next `ShutdownReport`
    (`never_started` or `interrupted`; `undelivered` for those that had
    finished but were not yielded), whose handles' `args` say which items
    to resume. A consumer that stops on purpose (`break`, `aclose()`)
    drops them without a record.

    A failure among them (a job that failed before or while being cancelled)
    is reported through the dispatcher: the consumer will never see it, and
    the map's done callback kept the dispatcher from reporting it when it
    happened. If this task is cancelled meanwhile, it keeps waiting, so that
    nothing the map started outlives it, and re-raises afterwards.
    """
    if not handles:
        return
    task = asyncio.current_task()
    cut_short = task is not None and task.cancelling() > 0
    for handle in handles:
        if cut_short:
            dispatcher._cut_short(handle)
        else:
            handle.cancel()
    cancelled: asyncio.CancelledError | None = None
    pending = [handle for handle in handles if not handle.done()]
    while pending:
        try:
            await asyncio.wait(pending)  # never cancels the handles, never raises their errors
        except asyncio.CancelledError as again:
            cancelled = again
        pending = [handle for handle in pending if not handle.done()]
    for handle in handles:
        _report_if_unseen(handle, dispatcher)
    if cancelled is not None:
        raise cancelled


def _report_if_unseen(handle: asyncio.Future[Any], host: MapHost | None = None) -> None:
    """Report a failure nobody looked at, through its dispatcher (once).

    `_log_traceback` is asyncio's own "failed and nobody has looked": False
    for a result, a cancellation, a failure already retrieved, and one that
    already went somewhere (fail_fast's ExceptionGroup, a fatal error).
    """
    if not isinstance(handle, JobHandle):
        return  # not a job (as_completed takes any future): asyncio reports it as always
    if not handle._log_traceback:
        return
    if host is None:
        host = handle.dispatcher
    exc = handle.exception()  # marks it retrieved: reported once, here
    if exc is not None:
        host._report(handle, exc)


class _InOrder:
    """A map's jobs in flight, taken in input order: the oldest is waited for."""

    __slots__ = ("_handles", "_head", "_wakeup", "_on_done")

    def __init__(self) -> None:
        self._handles: deque[JobHandle[Any]] = deque()
        self._head: JobHandle[Any] | None = None  # the handle next_done() waits for
        self._wakeup = asyncio.Event()
        self._on_done = self._done  # one bound method, shared by every handle

    def __len__(self) -> int:
        return len(self._handles)

    def add(self, handle: JobHandle[Any]) -> None:
        # The callback is also how the dispatcher knows the handle is
        # watched: a failure then waits for the consumer instead of going
        # to on_error at once.
        handle.add_done_callback(self._on_done)
        self._handles.append(handle)

    def _done(self, handle: JobHandle[Any]) -> None:
        if handle is self._head:
            self._wakeup.set()

    async def next_done(self) -> JobHandle[Any]:
        """Wait for the oldest job and take it."""
        head = self._handles[0]
        if not head.done():
            self._head = head
            self._wakeup.clear()
            try:
                await self._wakeup.wait()
            finally:
                self._head = None
        return self._handles.popleft()

    def outstanding(self) -> list[JobHandle[Any]]:
        """The handles added and not taken yet."""
        return list(self._handles)


class _Completions(Generic[T]):
    """Handles taken in the order they finish; already-done ones first."""

    __slots__ = ("_handles", "_finished", "_wakeup", "_on_done")

    def __init__(self) -> None:
        self._handles: set[JobHandle[T]] = set()  # added, not taken yet
        self._finished: deque[JobHandle[T]] = deque()  # done, not taken yet, in finishing order
        self._wakeup = asyncio.Event()
        self._on_done = self._done  # one bound method: remove_done_callback finds it

    def __len__(self) -> int:
        return len(self._handles)

    def add(self, handle: JobHandle[T]) -> None:
        self._handles.add(handle)
        if handle.done():
            self._finished.append(handle)
        else:
            handle.add_done_callback(self._on_done)

    def _done(self, handle: JobHandle[T]) -> None:
        self._finished.append(handle)
        self._wakeup.set()

    async def next_done(self) -> JobHandle[T]:
        """Wait until a handle is done, and take the first one that finished."""
        while not self._finished:
            self._wakeup.clear()
            await self._wakeup.wait()
        handle = self._finished.popleft()
        self._handles.discard(handle)
        return handle

    def outstanding(self) -> list[JobHandle[T]]:
        """The handles added and not taken yet."""
        return list(self._handles)

    def detach(self) -> None:
        """Remove the done callbacks from the handles not taken yet.

        A handle that already failed and was never taken is reported now: the
        callback kept the dispatcher from reporting it when it failed.
        """
        for handle in self._handles:
            handle.remove_done_callback(self._on_done)
        for handle in self._finished:
            _report_if_unseen(handle)


def as_completed(handles: Iterable[JobHandle[T]]) -> AsyncGenerator[JobHandle[T], None]:
    """Yield the handles as their jobs finish: the first to finish first.

    Unlike `asyncio.as_completed`, it yields the handles themselves, already
    done, so you still know which job each outcome belongs to. Handles that
    are already done when iteration starts come first, in the order given.
    Each handle is yielded once, even if it is given twice. Any
    `asyncio.Future` works, tasks included.

    The handles remain yours: stopping early (`break`, `aclose()`) cancels
    none of them. It only removes the done callbacks this iterator added, at
    once with `aclose()` or `contextlib.aclosing`, or when the event loop
    finalizes the abandoned generator after a `break`. A failure of a job
    still running then goes to the dispatcher's `on_error` (or the log), as
    for any handle nobody waits for.

    A failed handle it yielded is yours to look at (`exception()`,
    `result()`, or awaiting it). If you move on without looking, the
    failure is reported through its dispatcher (`on_error`, or the log) when
    you take the next handle or stop, as for any failure nobody sees; so is
    a failure that finished but was never yielded because you stopped early.

    ```python
    handles = [await dispatcher.submit(fetch, url) for url in urls]
    async for handle in asyncpool.as_completed(handles):
        if handle.cancelled() or handle.exception() is not None:
            continue
        print(handle.id, handle.result())
    ```

    Args:
        handles: The `JobHandle`s (or other futures) to watch; read at the call.

    Yields:
        Each handle, done (succeeded, failed or cancelled), in finishing order.

    Raises:
        TypeError: `handles` is not iterable, or one of its items is not an
            `asyncio.Future` (raised at the call, not at iteration).
    """
    if not isinstance(handles, Iterable):
        raise TypeError(
            f"as_completed() takes an iterable of job handles, got {type(handles).__name__}"
        )
    given = list(handles)
    for index, handle in enumerate(given):
        if not isinstance(handle, asyncio.Future):
            raise TypeError(
                "as_completed() takes job handles (asyncio futures), "
                f"but item {index} is {type(handle).__name__} {handle!r}"
            )
    return _as_completed(list(dict.fromkeys(given)))


async def _as_completed(handles: list[JobHandle[T]]) -> AsyncGenerator[JobHandle[T], None]:
    completions: _Completions[T] = _Completions()
    # Callbacks go on here, at the first __anext__, not at the call: a
    # generator that is never started never runs its `finally`.
    for handle in handles:
        completions.add(handle)
    try:
        while completions:
            handle = await completions.next_done()
            try:
                yield handle
            finally:
                # The consumer is back (or gone): a failure it never looked at
                # must not vanish.
                _report_if_unseen(handle)
                del handle
    finally:
        completions.detach()
