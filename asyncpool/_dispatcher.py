"""`Dispatcher`: the public face of the pool, and where its parts are put together.

The façade checks what it is given and hands the work to the parts that do
it; it keeps no scheduling state of its own:

* `asyncpool._core`: the hot path: the bounded job queue, the idle-worker
  queue, the routing rule, the worker loop, job transitions and counters;
  `Classifier` decides how a submitted thing runs;
* `asyncpool._lifecycle`: start, join, close, abandon, fail_fast and the
  shutdown report, around the `asyncio.TaskGroup` that owns every task;
* `asyncpool._executors`: worker threads and the process pool;
* `asyncpool._map`: `map`, streaming many jobs' results;
* `asyncpool._signatures`: the typed overloads of `submit`,
  `submit_nowait` and `map` (generated), so type checkers infer results.

See docs/explanation/design.md, "Where things live", for the whole map.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

from ._classify import Classifier, close_if_coroutine
from ._core import Core
from ._errors import DispatcherClosed, QueueFull
from ._executors import Executors
from ._handle import JobHandle
from ._intake import Intake
from ._job import ON_LOOP
from ._lifecycle import Lifecycle, State
from ._map import map_results
from ._options import (
    RESERVED_OPTIONS,
    check_retry,
    check_timeout,
    check_workers,
    default_queue_size,
    pop_options,
)
from ._policies import TokenBucket
from ._reporting import Reporter
from ._retry import Retry, as_float, shown
from ._signatures import MapSignature, SubmitNowaitSignature, SubmitSignature
from ._stats import ShutdownReport, Stats
from ._telemetry import Instrument, check_instruments
from ._testing import Internals

__all__ = ("RESERVED_OPTIONS", "Dispatcher")


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {shown(value)}")
    return value


F = TypeVar("F", bound=Callable[..., Any])


def _public_as(name: str) -> Callable[[F], F]:
    """Name an implementation after the public method it is declared as.

    `submit`, `submit_nowait` and `map` are implemented once, as `_submit`
    and so on, and declared with their typed signatures (asyncpool._signatures).
    This gives the implementation the public name, so that tracebacks, call
    errors ("Dispatcher.submit() missing 1 required positional argument")
    and the API reference say `submit`.
    """

    def rename(fn: F) -> F:
        qualname = f"Dispatcher.{name}"
        fn.__name__ = name
        fn.__qualname__ = qualname
        fn.__code__ = fn.__code__.replace(co_name=name, co_qualname=qualname)
        return fn

    return rename


class Dispatcher:
    """A pool of worker coroutines fed from a bounded job queue.

    Use it as an async context manager, or call `start()` and `close()`
    yourself where a framework manages lifetimes:

    ```python
    async with Dispatcher(workers=4) as dispatcher:
        handle = await dispatcher.submit(fetch, url)
        print(await handle)
    ```

    Args:
        workers: How many jobs may run at once (>= 1).
        queue_size: How many jobs may wait for a worker before `submit` waits
            for room; 0 means unbounded. None (the default) means 1024, or
            16 per worker above 64 workers (a queue as deep as a large pool is wide makes every
            burst of jobs wake one idle worker per job).
        fail_fast: If True, the first job failure cancels every other job and
            the body of `async with`, which then raises an `ExceptionGroup`
            with the failure(s): the semantics of `asyncio.TaskGroup`.
        on_error: Called as `on_error(handle, exception)` for a failure that
            nobody is waiting for when it happens (no awaiter, no done
            callback). The default logs it, with its traceback, at ERROR on
            the `"asyncpool"` logger. Ignored with `fail_fast=True`, where
            failures go to the `ExceptionGroup`.
        name: A name for `repr`, task names and log messages.
        sync_in: Where blocking jobs (sync callables, sync `process()`) run:
            `"thread"` (worker threads, the default) or `"process"` (a pool of
            `workers` processes owned by the dispatcher, for CPU-bound work;
            the job and its arguments must be picklable, which `submit`
            checks).
        timeout: The default time limit of a job's run, in seconds; a job
            that runs longer is cancelled and fails with `JobTimeout`.
            `submit(..., timeout=...)` overrides it per job (`timeout=None`
            turns it off). Waiting in the queue does not count.
        retry: The default `Retry` policy for failed jobs;
            `submit(..., retry=...)` overrides it per job (`retry=None` turns
            it off). Coroutine objects run once, so it does not apply to them.
        rate_limit: At most this many job starts per second (a float > 0),
            whatever the number of workers; None (the default) for no limit.
        rate_burst: With `rate_limit`, how many jobs may start at once after
            a quiet spell (the token bucket's size, >= 1).
        instruments: `Instrument`s told about every job: metrics
            (`asyncpool.metrics.PrometheusMetrics`), tracing
            (`asyncpool.tracing.OpenTelemetryTracing`), the dashboard's
            `JobLog`. With any, every job takes the options path (a few
            microseconds more per job); without, nothing is paid.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: `workers` < 1 or above `MAX_WORKERS` (1,000,000; a
            started worker takes about 5 KB), `queue_size` < 0, `sync_in` is neither
            `"thread"` nor `"process"`, `timeout` or `rate_limit` is not > 0,
            `rate_burst` < 1, or `rate_burst` is given without `rate_limit`.
    """

    __slots__ = (
        "__weakref__",
        "_classifier",
        "_core",
        "_executors",
        "_title",
        "_lifecycle",
        "_name",
        "_queue_size",
        "_size",
        "_instruments",
    )

    def __init__(
        self,
        workers: int = 8,
        *,
        queue_size: int | None = None,
        fail_fast: bool = False,
        on_error: Callable[[JobHandle[Any], BaseException], object] | None = None,
        name: str | None = None,
        sync_in: Literal["thread", "process"] = "thread",
        timeout: float | None = None,
        retry: Retry | None = None,
        rate_limit: float | None = None,
        rate_burst: int | None = None,
        instruments: Sequence[Instrument] = (),
    ) -> None:
        check_workers(workers)
        if queue_size is None:
            queue_size = default_queue_size(workers)
        else:
            _check_int("queue_size", queue_size, 0)
        if not isinstance(fail_fast, bool):
            raise TypeError(f"fail_fast must be a bool, got {fail_fast!r}")
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be callable or None, got {on_error!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        if sync_in not in ("thread", "process"):
            raise ValueError(f"sync_in must be 'thread' or 'process', got {sync_in!r}")
        default_timeout = check_timeout(timeout)
        default_retry = check_retry(retry)
        if rate_limit is not None:
            if isinstance(rate_limit, bool) or not isinstance(rate_limit, (int, float)):
                raise TypeError(
                    f"rate_limit must be a number of starts per second, got {rate_limit!r}"
                )
            # An int too large for a float is as infinite as inf: refused too.
            rate = as_float(rate_limit)
            if not (rate > 0 and math.isfinite(rate)):
                raise ValueError(
                    "rate_limit must be a finite number of starts per second > 0, "
                    f"got {shown(rate_limit)}"
                )
        if rate_burst is not None:
            _check_int("rate_burst", rate_burst, 1)
            # The token bucket counts in floats: a burst that no float holds
            # would fill it with inf tokens, and turn the rate limit off.
            if math.isinf(as_float(rate_burst)):
                raise ValueError(
                    f"rate_burst must be a finite number of starts, got {shown(rate_burst)}"
                )
            if rate_limit is None:
                raise ValueError("rate_burst needs rate_limit (the burst of a rate limit)")
        checked_instruments = check_instruments(instruments)
        self._name = name
        self._title = f"Dispatcher {name!r}" if name else "Dispatcher"
        self._size = workers
        self._queue_size = queue_size
        bucket = None
        if rate_limit is not None:
            bucket = TokenBucket(rate, 1 if rate_burst is None else rate_burst)
        self._executors = Executors(workers, sync_in)
        self._core = Core(
            workers,
            queue_size,
            dispatcher=self,
            reporter=Reporter(self._title, on_error),
            executors=self._executors,
            bucket=bucket,
            fail_fast=fail_fast,
        )
        self._classifier = Classifier(
            default_timeout=default_timeout,
            default_retry=default_retry,
            in_processes=sync_in == "process",
            closed_error=self._closed_error,
            instruments=checked_instruments,
        )
        self._instruments = checked_instruments
        for instrument in checked_instruments:
            instrument.bind(self)
        self._lifecycle = Lifecycle(
            self._core,
            self._classifier,
            self._executors,
            label=self._title,
            fail_fast=fail_fast,
        )

    # ----------------------------------------------------------------- info

    @property
    def name(self) -> str | None:
        """The name given to the constructor."""
        return self._name

    @property
    def instruments(self) -> tuple[Instrument, ...]:
        """The instruments given to the constructor."""
        return self._instruments

    @property
    def workers(self) -> int:
        """The size of the pool: how many jobs may run at once (see `resize`)."""
        return self._size

    @property
    def queue_size(self) -> int:
        """How many jobs may wait for a worker; 0 means unbounded."""
        return self._queue_size

    @property
    def running(self) -> bool:
        """True while the dispatcher accepts jobs."""
        return self._lifecycle.state is State.RUNNING

    @property
    def closed(self) -> bool:
        """True once `close()` has finished (or the dispatcher was torn down)."""
        return self._lifecycle.state is State.CLOSED

    @property
    def shutdown_report(self) -> ShutdownReport | None:
        """The `ShutdownReport` of the last `close()` (or `async with` exit); None before."""
        return self._lifecycle.shutdown_report

    def stats(self) -> Stats:
        """Take a consistent snapshot of the counters.

        It holds `submitted == queued + busy + succeeded + failed + cancelled`.
        """
        return self._core.stats(self._size)

    def __repr__(self) -> str:
        name = f" {self._name!r}" if self._name else ""
        stats = self._core.stats(self._size)
        return (
            f"<Dispatcher{name} {self._lifecycle.state.value} workers={self._size} "
            f"busy={stats.busy} queued={stats.queued}>"
        )

    def _internals(self) -> Internals:
        """The snapshot behind `asyncpool._testing.internals` (for tests only)."""
        return Internals(
            **self._core.internals(),
            remembered_job_classes=self._classifier.remembered_classes,
            thread_limit=self._executors.thread_limit,
        )

    def _label(self) -> str:
        """How messages name this dispatcher: `Dispatcher 'name'` (for the integrations)."""
        return self._title

    def _closed_error(self) -> DispatcherClosed:
        """The error a submit gets now that the dispatcher does not accept jobs."""
        return self._lifecycle.closed_error()

    def _cut_short(self, handle: JobHandle[Any]) -> None:
        """A map cut short by a cancellation drops `handle`: list it in the next report."""
        self._core.cut_short(handle)

    def _cut_short_unsubmitted(
        self, fn: Callable[[Any], Any], item: Any, job_options: dict[str, Any]
    ) -> None:
        """A map cut short while `fn(item)` waited for room: list it as never started.

        The job is accepted past the bound and cancelled at once, so that
        the next `ShutdownReport` holds the item. When the dispatcher no
        longer accepts jobs, there is no report to put it in.
        """
        args, kwargs = (item,), dict(job_options)
        try:
            mode, target, opts = self._classifier.prepare(fn, args, kwargs)
        except DispatcherClosed:
            return
        handle = self._core.enqueue(mode, target, args, kwargs, opts, False)
        assert handle is not None
        self._core.cut_short(handle)

    def _report(self, handle: JobHandle[Any], exc: BaseException) -> None:
        """Report a failure nobody will see otherwise (`on_error`, or the log)."""
        self._core.reporter.report(handle, exc)

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Dispatcher:
        await self.start()
        self._lifecycle.entered()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._lifecycle.exit(exc_type, exc)

    async def start(self) -> None:
        """Start the workers and the dispatcher loop.

        `async with` calls it for you. When it returns the dispatcher accepts
        jobs.

        Raises:
            RuntimeError: the dispatcher is already running.
            DispatcherClosed: the dispatcher has already run; a dispatcher
                runs once, so make a new one.
        """
        if self._lifecycle.state is State.RUNNING:
            raise RuntimeError(f"{self!r} is already running")
        await self._lifecycle.start()

    async def join(self) -> None:
        """Wait until every job submitted so far has finished.

        Finished means succeeded, failed or cancelled. Jobs submitted while
        waiting are not waited for. The dispatcher keeps running.
        """
        await self._lifecycle.join()

    async def close(self, *, cancel: bool = False, timeout: float | None = None) -> ShutdownReport:
        """Stop accepting jobs, finish or cancel the rest, and stop the workers.

        Args:
            cancel: If True, cancel queued and running jobs at once. If False,
                let them finish.
            timeout: With `cancel=False`, how many seconds to let them finish
                before cancelling what is left; None waits as long as it takes.

        When it returns, every handle is in a final state and no task of the
        dispatcher is running, but for the worker of a job it abandoned (see
        below: a deadline is a deadline). Calling it again, or on a dispatcher that never
        started, is harmless. If the caller is cancelled while waiting, the
        remaining jobs are cancelled, their tasks are waited for, and the
        cancellation propagates.

        Cancelling a job is a request, as with tasks. Without `timeout`, a
        job that catches every `CancelledError` and keeps going, or a blocking
        job whose thread or process does not return, keeps `close()` waiting.
        With `timeout`, `close()` gives the cancelled jobs a grace of
        `timeout` again (at least 0.1 s), cancelling them a second time
        half-way; jobs still running then are *abandoned*: their handles end
        CANCELLED, the report lists them in `abandoned`, an ERROR is logged,
        and `close()` returns while they run on (their worker ends when they
        do). So `close(timeout=t)` returns within about `2 * t`.

        Returns:
            A `ShutdownReport` of the jobs the shutdown cancelled (empty if
            everything finished), also kept as `shutdown_report`.

        Raises:
            ExceptionGroup: with `fail_fast=True`, the job failures that
                stopped the dispatcher (raised once, by the first close; a
                `BaseExceptionGroup` if a failure is not an `Exception`).
            TypeError: `timeout` is not a number.
            ValueError: `timeout` is negative.
            RuntimeError: called from a job of this dispatcher, or from a task
                one of its jobs started (it would wait for itself for ever).
        """
        timeout = check_timeout(timeout, zero_ok=True)
        if not isinstance(cancel, bool):
            raise TypeError(f"cancel must be a bool, got {cancel!r}")
        return await self._lifecycle.close(cancel=cancel, timeout=timeout)

    def resize(self, workers: int) -> None:
        """Change the number of workers while the dispatcher runs.

        Growing starts the new workers at once; they take queued jobs right
        away (which makes room for waiting submitters). Shrinking stops idle
        workers first, then busy ones as they finish their current job: a
        running job is never cancelled, so for a while more jobs than
        `workers` may still be running, but no new one starts until fewer
        than `workers` run. `stats().workers` is the new size at once.

        Raises:
            TypeError: `workers` is not an int.
            ValueError: `workers` < 1, or more than `MAX_WORKERS` (1,000,000),
                checked before a single worker is made.
            DispatcherClosed: the dispatcher is not running.
        """
        size = check_workers(workers)
        state = self._lifecycle.state
        if state is not State.RUNNING or not self._core.can_spawn():
            raise DispatcherClosed(f"cannot resize: {self._title} is {state.value}")
        old = self._size
        self._size = size
        self._executors.resize(size)
        if size > old:
            self._core.grow(size)
        elif size < old:
            self._core.shrink(size)

    def intake(self) -> Intake:
        """A way in for jobs from somewhere other than `submit` (a broker, a database queue).

        The intake feeds the dispatcher at most as many jobs as it has free
        workers, and tells an observer when each job starts and how it ends;
        see `asyncpool.sources` and the "Job sources" section of the design
        page.

        Raises:
            DispatcherClosed: the dispatcher is not running.
        """
        if self._lifecycle.state is not State.RUNNING:
            raise self._closed_error()
        return Intake(self._core, self._prepare, self._closed_error, lambda: self.running)

    # ----------------------------------------------------------- submitting

    @_public_as("submit")
    async def _submit(self, target: Any, /, *args: Any, **kwargs: Any) -> JobHandle[Any]:
        """Queue a job and return its handle, waiting for room if the queue is full.

        Accepted forms:

        * a `Job`: an object with a `process()` method, async or sync (a
          function or method is called, even if it has an attribute named
          `process`). `submit` looks `process` up to decide where it runs,
          and an async one may be looked up again when the job starts, so
          do not replace a Job's `process` after submitting it;
        * a coroutine function and its arguments: `submit(fetch, url, max_redirects=3)`;
        * a sync callable and its arguments: it runs in a worker thread;
        * a coroutine object: `submit(fetch(url))`. It runs once.

        Keyword arguments go to the job, except the names reserved for
        per-job options (`timeout`, `retry`, `priority`, `key`). To pass a
        job's own argument with one of those names, bind it first with
        `functools.partial(fn, key=...)`, or submit a `Job` object.

        Arguments are not checked against the function's signature (that
        would cost more than the rest of `submit`): a call that does not fit
        fails the job with the `TypeError` the call raises.

        Raises:
            TypeError: `target` is none of the accepted forms (raised here,
                never inside a worker).
            DispatcherClosed: the dispatcher is not running (not started,
                closing or closed), including when it closes while waiting.
        """
        if target is self._classifier.plain_fn and not kwargs:
            mode, fn, opts = ON_LOOP, target, None  # the same coroutine function as last time
        else:
            mode, fn, opts = self._classifier.prepare(target, args, kwargs)
        handle = self._core.enqueue(mode, fn, args, kwargs, opts, True)
        if handle is None:
            core = self._core
            # No room. A job of this dispatcher (or a task it started, while
            # the job runs) never waits for room: if every worker runs such a
            # job, nobody would make room.
            if not core.called_from_own_job():
                try:
                    await core.wait_for_room()
                except BaseException:
                    close_if_coroutine(fn)
                    raise
                if self._lifecycle.state is not State.RUNNING:
                    close_if_coroutine(fn)
                    raise self._closed_error()
            handle = core.enqueue(mode, fn, args, kwargs, opts, False)
            assert handle is not None
        return handle

    submit: SubmitSignature = cast(SubmitSignature, _submit)

    @_public_as("submit_nowait")
    def _submit_nowait(self, target: Any, /, *args: Any, **kwargs: Any) -> JobHandle[Any]:
        """Queue a job without waiting; like `submit`, but a full queue is an error.

        Raises:
            QueueFull: the job queue has no room.
            TypeError: as for `submit`.
            DispatcherClosed: as for `submit`.
        """
        classifier = self._classifier
        if target is classifier.plain_fn and not kwargs:
            mode, fn, opts = ON_LOOP, target, None  # the same coroutine function as last time
        else:
            mode, fn, opts = classifier.prepare(target, args, kwargs)
        core = self._core
        if not core.has_room():
            close_if_coroutine(fn)
            core.count_rejected()
            raise QueueFull(
                f"the job queue of {self._title} is full "
                f"(queue_size={self._queue_size}, all places taken or promised)"
            )
        handle = core.enqueue(mode, fn, args, kwargs, opts, False)
        assert handle is not None
        return handle

    submit_nowait: SubmitNowaitSignature = cast(SubmitNowaitSignature, _submit_nowait)

    def _prepare(
        self, target: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[int, Any, Any]:
        return self._classifier.prepare(target, args, kwargs)

    # ------------------------------------------------------------ streaming

    @_public_as("map")
    def _map(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        ordered: bool = True,
        window: int | None = None,
        return_exceptions: bool = False,
        with_items: bool = False,
        **job_options: Any,
    ) -> AsyncGenerator[Any, None]:
        """Run `fn(item)` as a job for each item of `iterable`; yield the results.

        Items are read only as results are taken: at most `window` jobs are
        submitted and not yet yielded at any time, so memory stays bounded
        whatever the length of the input, an endless generator included.
        Each item becomes `await submit(fn, item, **job_options)`, so a full
        job queue makes the map wait (backpressure). Sync and async
        iterables both work; either is read in the consumer's task, one item
        at a time, so an async input that is slow to produce its next item
        also holds back results that are already done.

        Stopping early (`break`, an exception in the loop body, `aclose()`)
        cancels the jobs the map has in flight. `aclose()` returns only when
        all of them have finished, and a failure among them that the
        consumer never took goes to `on_error` (or the log), never nowhere.
        After a plain `break` the event loop closes the generator soon after;
        `contextlib.aclosing` closes it at once:

        ```python
        async with contextlib.aclosing(dispatcher.map(fetch, urls, window=16)) as pages:
            async for page in pages:
                if page.is_last:
                    break
        ```

        Args:
            fn: Called as `fn(item)` for each item: a coroutine function runs
                on the loop, a sync callable in a worker thread (or process,
                with `sync_in="process"`), as with `submit`.
            iterable: The items: any iterable or async iterable, of any
                length. Read from the first `__anext__` on, never ahead of
                the window.
            ordered: If True, yield results in input order (a slow job holds
                back the results after it); if False, in the order the jobs
                finish.
            window: How many jobs may be submitted and not yet yielded at
                once (>= 1). None means twice `workers`, read when iteration
                starts.
            return_exceptions: If False, a failed job's exception is raised
                at its position and the map ends. If True, it is yielded in
                place of the result (an `asyncio.CancelledError` instance for
                a cancelled job) and the map goes on.
            with_items: If True, yield `(item, outcome)` pairs instead of
                bare outcomes, so that each result (or, with
                `return_exceptions=True`, each exception) comes with the item
                it was made from, in whatever order.
            **job_options: Per-job options (`timeout`, `retry`, `priority`,
                `key`) applied to every job, as `submit` takes them; they are
                checked by the call itself, and any other name is a
                `TypeError` (`fn` is called with the item alone).

        Yields:
            Each job's result, or with `return_exceptions=True` its exception,
            in input order (`ordered=True`) or in finishing order; with
            `with_items=True`, each as an `(item, outcome)` pair.

        A map cut short by a cancellation of the task iterating it (a
        deadline, Ctrl+C) cancels the jobs it has in flight as a shutdown
        does: they are listed in the dispatcher's next `ShutdownReport`
        (`never_started` or `interrupted`; `undelivered` for jobs that had
        finished but were not yielded yet; an item read and still waiting
        for room is accepted and listed as never started), and each handle's
        `args[0]` is its item, so you know what to resume. Items the map has
        not read yet are still in your input.

        Raises:
            TypeError: `fn` is not callable, `iterable` is neither iterable
                nor async iterable, `ordered` or `return_exceptions` is not a
                bool, `window` is not an int, `with_items` is not a bool, or a
                job option is unknown or has the wrong type (raised by the
                call itself).
            ValueError: `window` < 1, or a job option has a wrong value
                (raised by the call itself).
            DispatcherClosed: the dispatcher is not running when iteration
                starts, or stops accepting jobs while the map still has items
                to submit.
            Exception: with `return_exceptions=False`, a job's exception, at
                its position; the jobs still in flight are cancelled. An
                exception raised by the input itself also ends the map.
            asyncio.CancelledError: with `return_exceptions=False`, a job was
                cancelled (for example by `close(cancel=True)`), as awaiting
                its handle would raise.
        """
        unknown = job_options.keys() - RESERVED_OPTIONS
        if unknown:
            raise TypeError(
                f"map() got unexpected keyword argument(s) {', '.join(sorted(unknown))}; "
                f"its job options are {', '.join(sorted(RESERVED_OPTIONS))} "
                "(fn is called with the item alone)"
            )
        pop_options(dict(job_options), None, None)  # checks them now, not at the first job
        return map_results(
            self,
            fn,
            iterable,
            ordered=ordered,
            window=window,
            return_exceptions=return_exceptions,
            with_items=with_items,
            job_options=job_options,
        )

    map: MapSignature = cast(MapSignature, _map)
