"""FastAPI and Starlette integration: a `Dispatcher` or a broker that lives as long as the app.

This module owns five things:

* the lifespan (`lifespan`, `dispatcher_lifespan`): it starts a dispatcher
  with the application, keeps it at `app.state.asyncpool_dispatcher`, and at
  shutdown lets the jobs finish for a grace period, cancels what is left,
  and logs each job that did not finish;
* the dependency (`get_dispatcher`, `DispatcherDep`): it hands a route the
  application's dispatcher, or says how to install the lifespan;
* `BackgroundTasks`: a drop-in for FastAPI's `BackgroundTasks` whose tasks
  are submitted to the dispatcher once the response is sent
  (`PoolBackgroundTasks` is the class behind it);
* `shutting_down`: a notice that the server has begun to shut down, for
  streaming endpoints, so that a client following a job does not hold the
  server past the grace period;
* the broker's lifespan and dependency (`broker_lifespan`, `get_broker`,
  `BrokerDep`): the application submits to a broker (workers elsewhere run
  the jobs), which is open while the application runs, kept at
  `app.state.asyncpool_broker`.

The shape is aiojobs' aiohttp integration, done with Starlette's lifespan: a
setup that ties the pool's life to the application's, one documented place
where the pool is kept, and a getter whose error names the fix.

`asyncpool` itself never imports this module; its dependencies come with the
`fastapi` extra (`pip install 'asyncpool-dispatch[fastapi]'`). It knows
brokers only by their engine-neutral base class (`asyncpool._broker.Broker`)
and imports no engine (`asyncpool.jetstream`, ...), so it works with any of
them and needs no engine's client library.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
import types
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Final, ParamSpec, TypeAlias, TypeVar, overload

try:
    from fastapi import Depends
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.background import BackgroundTasks as StarletteBackgroundTasks
    from starlette.requests import HTTPConnection, Request
except ModuleNotFoundError as exc:
    # The bare error ("No module named 'fastapi'") does not say that an
    # extra of asyncpool brings it.
    raise ModuleNotFoundError(
        f"asyncpool.fastapi needs FastAPI and Starlette ({exc}): "
        "pip install 'asyncpool-dispatch[fastapi]'",
        name=exc.name,
    ) from exc

from ._broker import Broker
from ._dispatcher import RESERVED_OPTIONS, Dispatcher
from ._handle import JobHandle
from ._integration import check_grace, log_shutdown

__all__ = (
    "BROKER_STATE_ATTRIBUTE",
    "DEFAULT_GRACE",
    "STATE_ATTRIBUTE",
    "BackgroundTasks",
    "BrokerDep",
    "DispatcherDep",
    "PoolBackgroundTasks",
    "broker_lifespan",
    "dispatcher_lifespan",
    "get_broker",
    "get_dispatcher",
    "lifespan",
    "shutting_down",
)

logger = logging.getLogger("asyncpool")

P = ParamSpec("P")
AppT = TypeVar("AppT", bound=Starlette)
StateT = TypeVar("StateT")

STATE_ATTRIBUTE: Final = "asyncpool_dispatcher"
"""The name under which the lifespan keeps the dispatcher, as `app.state.asyncpool_dispatcher`."""

DEFAULT_GRACE: Final = 10.0
"""Seconds that jobs get to finish at shutdown before the rest are cancelled.

Shorter than the 30 seconds that process managers such as Kubernetes
commonly give a process between SIGTERM and SIGKILL, leaving room for the
server's own shutdown and the log lines.
"""


# ----------------------------------------------------------------- lifespan


@contextlib.asynccontextmanager
async def lifespan(
    app: Starlette,
    *,
    workers: int = 8,
    queue_size: int | None = None,
    grace: float | None = DEFAULT_GRACE,
    watch_signals: bool = True,
    **dispatcher_options: Any,
) -> AsyncIterator[None]:
    """Run a `Dispatcher` for as long as the application runs.

    On entry it starts a dispatcher and keeps it at
    `app.state.asyncpool_dispatcher` (`STATE_ATTRIBUTE`), where
    `get_dispatcher`, `DispatcherDep` and `BackgroundTasks` find it. On exit
    it closes the dispatcher with `close(timeout=grace)`: queued and running
    jobs get `grace` seconds to finish, then the rest are cancelled, and each
    job that did not finish is logged at WARNING on the `"asyncpool"` logger,
    after a summary line with the counts (see `dispatcher_lifespan`). The
    closed dispatcher stays on `app.state`, so that a late request gets a
    `DispatcherClosed` that says so.

    It also tells requests when the server begins to shut down, through
    `shutting_down`: at the latest when its exit begins, and with
    `watch_signals` as soon as the server receives SIGINT or SIGTERM, before
    the server waits for the open connections to finish. A streaming
    response that waits for that can end its stream, so that the server gets
    to the lifespan's shutdown (and the grace period) instead of waiting for
    the stream's job.

    Use it as the application's lifespan, with `functools.partial` for the
    options, or enter it from your own lifespan:

    ```python
    app = FastAPI(lifespan=functools.partial(lifespan, workers=4, grace=5))


    @contextlib.asynccontextmanager
    async def my_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app, workers=4):
            yield
    ```

    Args:
        app: The Starlette or FastAPI application.
        workers: How many jobs run at once (the dispatcher's `workers`).
        queue_size: How many jobs may wait (the dispatcher's `queue_size`;
            None, the default, is the dispatcher's default).
        grace: Seconds that queued and running jobs get to finish at
            shutdown, a finite number >= 0; 0 cancels them at once; None
            waits as long as they take.
        watch_signals: Whether to put a handler in front of the server's
            own SIGINT and SIGTERM handlers while the application runs,
            which marks the start of the shutdown for `shutting_down` and
            then calls the server's handler. Only in the main thread, and
            only in front of a handler installed from Python (uvicorn's, for
            one): a signal that nobody handles is left alone. The server's
            handlers are put back when the lifespan exits. False leaves the
            signals alone; `shutting_down` then starts with the lifespan's
            exit.
        **dispatcher_options: Any other `Dispatcher` argument (`on_error`,
            `name`, ...).

    Yields:
        None, once the dispatcher is running.

    Raises:
        RuntimeError: the application already has a running dispatcher (the
            lifespan was installed twice).
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range.
    """
    grace = check_grace(grace)
    _check_watch_signals(watch_signals)
    state = app.state
    existing = getattr(state, STATE_ATTRIBUTE, None)
    if isinstance(existing, Dispatcher) and not existing.closed:
        raise RuntimeError(
            f"the application already has a dispatcher at app.state.{STATE_ATTRIBUTE} "
            f"({existing!r}): install the asyncpool lifespan once"
        )
    dispatcher = Dispatcher(workers, queue_size=queue_size, **dispatcher_options)
    await dispatcher.start()
    notice = _ShutdownNotice(asyncio.get_running_loop())
    setattr(state, STATE_ATTRIBUTE, dispatcher)
    setattr(state, _NOTICE_ATTRIBUTE, notice)
    with _notice_on_exit_signals(notice) if watch_signals else contextlib.nullcontext():
        try:
            yield
        finally:
            # For a server that runs the lifespan's shutdown with requests
            # still open (one that gave up waiting for them, or was not
            # signalled), or when the signals are not watched.
            notice.start()
            await _shut_down(dispatcher, grace)


@overload
def dispatcher_lifespan(
    app_lifespan: None = None,
    /,
    *,
    workers: int = 8,
    queue_size: int | None = None,
    grace: float | None = DEFAULT_GRACE,
    watch_signals: bool = True,
    **dispatcher_options: Any,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]: ...
@overload
def dispatcher_lifespan(
    app_lifespan: Callable[[AppT], AbstractAsyncContextManager[StateT]],
    /,
    *,
    workers: int = 8,
    queue_size: int | None = None,
    grace: float | None = DEFAULT_GRACE,
    watch_signals: bool = True,
    **dispatcher_options: Any,
) -> Callable[[AppT], AbstractAsyncContextManager[StateT]]: ...
def dispatcher_lifespan(
    app_lifespan: Callable[[Any], AbstractAsyncContextManager[Any]] | None = None,
    /,
    *,
    workers: int = 8,
    queue_size: int | None = None,
    grace: float | None = DEFAULT_GRACE,
    watch_signals: bool = True,
    **dispatcher_options: Any,
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """Make a lifespan that runs a `Dispatcher`, around your own lifespan if you have one.

    ```python
    app = FastAPI(lifespan=dispatcher_lifespan(workers=4, grace=5))
    app = FastAPI(lifespan=dispatcher_lifespan(my_lifespan, workers=4))
    ```

    The dispatcher starts before `app_lifespan` enters and closes after it
    exits, so your startup and shutdown code can submit jobs too. Whatever
    `app_lifespan` yields (Starlette's lifespan state) is passed on. Each
    run of the lifespan gets a new dispatcher; see `lifespan` for where it is
    kept and how it is closed.

    The shutdown logs on the `"asyncpool"` logger. When every job finished,
    one INFO line. Otherwise one WARNING summary, then one WARNING line per
    unfinished job, queued jobs first:

    ```text
    Dispatcher shut down with 3 jobs unfinished (grace period 5 s): 2 never started,
        1 interrupted; of 40 submitted, 37 succeeded, 0 failed, 3 cancelled
    Dispatcher: unfinished job id=39 (never started): <JobHandle id=39 CANCELLED send>
    ```

    (The summary is one line; it is wrapped here.)

    Args:
        app_lifespan: Your own lifespan (a function of the application that
            returns an async context manager), or None.
        workers: How many jobs run at once.
        queue_size: How many jobs may wait; 0 means unbounded, None the
            dispatcher's default (1024, or 16 per worker above 64 workers).
        grace: Seconds jobs get to finish at shutdown before the rest are
            cancelled, a finite number >= 0; None waits as long as they take.
        watch_signals: Whether to learn of SIGINT and SIGTERM in front of
            the server, for `shutting_down` (see `lifespan`).
        **dispatcher_options: Any other `Dispatcher` argument (`on_error`,
            `name`, ...).

    Returns:
        A lifespan for `FastAPI(lifespan=...)` or `Starlette(lifespan=...)`.

    Raises:
        TypeError: an argument has the wrong type, or is not a `Dispatcher`
            argument.
        ValueError: an argument is out of range.
    """
    grace = check_grace(grace)
    _check_watch_signals(watch_signals)
    if app_lifespan is not None and not callable(app_lifespan):
        raise TypeError(f"app_lifespan must be a lifespan function or None, got {app_lifespan!r}")
    # A dispatcher runs once, so each startup makes its own; building one
    # here checks the options where the application is defined, instead of
    # failing at its first startup.
    Dispatcher(workers, queue_size=queue_size, **dispatcher_options)

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        async with lifespan(
            app,
            workers=workers,
            queue_size=queue_size,
            grace=grace,
            watch_signals=watch_signals,
            **dispatcher_options,
        ):
            if app_lifespan is None:
                yield None
            else:
                async with app_lifespan(app) as app_state:
                    yield app_state

    return run


async def _shut_down(dispatcher: Dispatcher, grace: float | None) -> None:
    try:
        await dispatcher.close(timeout=grace)
    finally:
        report = dispatcher.shutdown_report
        if report is None:
            # close() failed before it could take stock (it records a report
            # even when it is cancelled, so this is the unexpected case).
            stats = dispatcher.stats()
            logger.warning(
                "%s: the shutdown was cancelled; jobs that had not finished were cancelled "
                "and cannot be listed; of %d submitted, %d succeeded, %d failed, %d cancelled",
                dispatcher._label(),
                stats.submitted,
                stats.succeeded,
                stats.failed,
                stats.cancelled,
            )
        else:
            log_shutdown(dispatcher, report, grace)


def _check_watch_signals(watch_signals: object) -> None:
    if not isinstance(watch_signals, bool):
        raise TypeError(f"watch_signals must be True or False, got {watch_signals!r}")


# ------------------------------------------------------------ shutdown notice
#
# Why this exists: uvicorn (and servers like it), on SIGTERM, stops
# accepting, then waits for the open connections to finish, and only then
# runs the lifespan's shutdown, where the dispatcher's grace period starts.
# A streaming response that lasts as long as its job holds all of that up
# for as long as the job runs. So the lifespan learns of the signal itself,
# in front of the server, and tells the requests, which can end their
# streams; the jobs themselves keep running until the lifespan's shutdown
# gives them the grace period, as before.

_NOTICE_ATTRIBUTE: Final = "asyncpool_shutdown_notice"

# The signals on which servers begin a graceful shutdown (uvicorn's
# HANDLED_SIGNALS, bar Windows' SIGBREAK).
_EXIT_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class _ShutdownNotice:
    """Whether the server began to shut down, and the futures waiting to hear it.

    One per run of the lifespan, at `app.state.asyncpool_shutdown_notice`.
    It starts once and never resets. Each caller of `shutting_down` gets a
    future of its own, so that one who cancels theirs (`asyncio.wait_for`
    does, on timeout) cancels nobody else's; the futures are held weakly, so
    those of requests that ended without a shutdown do not pile up.
    """

    __slots__ = ("_loop", "_waiters", "started")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: weakref.WeakSet[asyncio.Future[None]] = weakref.WeakSet()
        self.started = False

    def __repr__(self) -> str:
        return f"<_ShutdownNotice {'started' if self.started else 'waiting'}>"

    def future(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()
        if self.started:
            future.set_result(None)
        else:
            self._waiters.add(future)
        return future

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        waiters = list(self._waiters)
        self._waiters.clear()
        for future in waiters:
            if not future.done():  # its owner may have cancelled it
                future.set_result(None)

    def start_from_signal_handler(self) -> None:
        # A signal handler runs in the main thread between two bytecodes,
        # possibly in the middle of the event loop's own code; so it only
        # schedules the start, the way another thread would. The loop is
        # closed only after the lifespan's exit, which starts the notice.
        if not self.started and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.start)


_SignalHandler: TypeAlias = Callable[[int, types.FrameType | None], Any]


@contextlib.contextmanager
def _notice_on_exit_signals(notice: _ShutdownNotice) -> Iterator[None]:
    """Put a handler that starts `notice` in front of the server's SIGINT and SIGTERM handlers."""
    # Only the main thread may install handlers, and Python runs them there
    # only: a lifespan run in another thread (Starlette's TestClient runs the
    # app in one) has no signals to watch.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    chained: dict[int, _SignalHandler] = {}

    def handler(signum: int, frame: types.FrameType | None) -> None:
        notice.start_from_signal_handler()
        chained[signum](signum, frame)

    for signum in _EXIT_SIGNALS:
        previous = signal.getsignal(signum)
        # Only in front of a Python function, which means a server has taken
        # the signal over (uvicorn installs its handle_exit with
        # signal.signal). SIG_DFL (end the process), SIG_IGN and None (a
        # handler from C) are left alone rather than imitated. Servers that
        # use loop.add_signal_handler leave asyncio's no-op function here,
        # and still get the signal through the loop's wakeup file.
        if callable(previous):
            chained[signum] = previous
            signal.signal(signum, handler)
    try:
        yield
    finally:
        for chained_signum, previous_handler in chained.items():
            # Unless someone put a handler in front of ours meanwhile: taking
            # ours out would take theirs out too. Ours then only passes the
            # signal on, since the notice has started.
            if signal.getsignal(chained_signum) is handler:
                signal.signal(chained_signum, previous_handler)


def shutting_down(source: HTTPConnection | Starlette) -> asyncio.Future[None]:
    """Return a future that is done once the server has begun to shut down.

    On SIGTERM or Ctrl+C, uvicorn stops accepting connections, then waits
    for the open ones to finish, and only then runs the lifespan's shutdown,
    which gives the dispatcher's jobs their grace period. A response that
    streams until its job ends holds the server for as long as the job runs.
    Such a response waits for this future alongside its work and, if the
    future is done first, ends its stream (the job goes on, and gets the
    grace period):

    ```python
    async def progress() -> AsyncIterator[str]:
        await asyncio.wait([handle, shutting_down(request)], return_when=asyncio.FIRST_COMPLETED)
        if not handle.done():
            yield "the server is shutting down\\n"
            return
        yield f"{handle.state.value}\\n"
    ```

    The future is done as soon as the server receives SIGINT or SIGTERM
    (with the lifespan's `watch_signals`, the default), and at the latest
    when the lifespan's shutdown begins; once the shutdown has begun, it
    comes back done. Its result is None, and it never fails. Each call
    returns a new future: cancelling it (`asyncio.wait_for` does on timeout)
    affects no other caller.

    Args:
        source: A request or websocket of the application, or the application.

    Returns:
        A future of the application's running loop.

    Raises:
        RuntimeError: the application has no asyncpool lifespan, because it
            is not installed or was not run; the message says how to
            install it.
    """
    notice = getattr(getattr(_app_of(source), "state", None), _NOTICE_ATTRIBUTE, None)
    if not isinstance(notice, _ShutdownNotice):
        raise _no_lifespan_error("no asyncpool shutdown notice")
    return notice.future()


# --------------------------------------------------------------- dependency


def get_dispatcher(source: HTTPConnection | Starlette) -> Dispatcher:
    """Return the application's dispatcher, kept there by the lifespan.

    Works in any Starlette endpoint (`get_dispatcher(request)`), for
    websockets, and with the application itself. FastAPI routes can take
    `DispatcherDep` instead.

    Args:
        source: A request or websocket of the application, or the application.

    Returns:
        The dispatcher at `app.state.asyncpool_dispatcher`.

    Raises:
        RuntimeError: the application has no dispatcher, because its
            lifespan is not installed or was not run; the message says how to
            install it.
    """
    dispatcher = getattr(getattr(_app_of(source), "state", None), STATE_ATTRIBUTE, None)
    if not isinstance(dispatcher, Dispatcher):
        raise _no_lifespan_error(f"no asyncpool Dispatcher at app.state.{STATE_ATTRIBUTE}")
    return dispatcher


def _app_of(source: HTTPConnection | Starlette) -> Any:
    return source if isinstance(source, Starlette) else source.app


def _no_lifespan_error(
    what: str,
    install: str = (
        "FastAPI(lifespan=asyncpool.fastapi.dispatcher_lifespan(...)) (or "
        "dispatcher_lifespan(your_lifespan, ...) to keep your own)"
    ),
) -> RuntimeError:
    return RuntimeError(
        f"{what}: install the lifespan, {install}, and make sure it "
        "runs: servers such as uvicorn run it, httpx.ASGITransport does not (enter "
        "app.router.lifespan_context(app) around your test client)"
    )


async def _dispatcher_dependency(connection: HTTPConnection) -> Dispatcher:
    # An async dependency, so that FastAPI calls it on the event loop
    # instead of sending every request through its thread pool.
    return get_dispatcher(connection)


DispatcherDep: TypeAlias = Annotated[Dispatcher, Depends(_dispatcher_dependency)]
"""A route parameter type that receives the application's dispatcher.

```python
@app.post("/reports")
async def make_report(dispatcher: DispatcherDep) -> dict[str, int]:
    handle = await dispatcher.submit(build_report)
    return {"job_id": handle.id}
```

A request to an application without the lifespan fails with the
`RuntimeError` of `get_dispatcher`.
"""


# ---------------------------------------------------------- background tasks


class PoolBackgroundTasks(StarletteBackgroundTasks):
    """Starlette's `BackgroundTasks`, run by a dispatcher instead of by the request.

    `add_task(func, *args, **kwargs)` is the same as Starlette's and
    FastAPI's. What changes is what happens when the response has been
    sent and calls this object: each task is submitted to the dispatcher, in
    the order added, and runs in a worker there. So tasks share the pool's
    bound, do not depend on the request's task once submitted (a client that
    disconnects or a cancelled request does not stop them), may run at the
    same time as each other, and a failing task stops none of the others: its
    failure goes to the dispatcher's `on_error` hook, or is logged. Async
    functions run on the event loop; sync functions run where the dispatcher
    runs blocking jobs (its worker threads, by default).

    If the job queue is full, submitting waits for room. The response has
    been sent by then, so the client does not wait; the connection does
    (the server reads no next request from it), which is the backpressure.

    In FastAPI, take `BackgroundTasks` as a route parameter. In Starlette,
    make one and give it to the response:

    ```python
    tasks = PoolBackgroundTasks(get_dispatcher(request))
    tasks.add_task(send_welcome_email, user.email)
    return JSONResponse({"ok": True}, background=tasks)
    ```

    Args:
        dispatcher: The dispatcher that runs the tasks.
        tasks: Tasks to start with, as Starlette's `BackgroundTasks` takes them.

    Attributes:
        dispatcher: The dispatcher that runs the tasks.
        handles: The handles of the tasks submitted so far, in order.

    Raises:
        TypeError: `dispatcher` is not a `Dispatcher`.
    """

    def __init__(
        self, dispatcher: Dispatcher, tasks: Sequence[BackgroundTask] | None = None
    ) -> None:
        if not isinstance(dispatcher, Dispatcher):
            raise TypeError(f"dispatcher must be an asyncpool.Dispatcher, got {dispatcher!r}")
        super().__init__(tasks)
        self.dispatcher = dispatcher
        self.handles: list[JobHandle[Any]] = []
        self._next = 0  # index in `tasks` of the first task not submitted yet

    def add_task(self, func: Callable[P, Any], *args: P.args, **kwargs: P.kwargs) -> None:
        """Add a function to call in the dispatcher once the response is sent.

        Args:
            func: An async or a sync function.
            *args: Its positional arguments.
            **kwargs: Its keyword arguments, all of them passed on, including
                names that `Dispatcher.submit` keeps for itself (such as
                `timeout`).

        Raises:
            TypeError: `func` is not callable. Raised here, in the route,
                rather than after the response where only a log would see it.
        """
        if not callable(func):
            raise TypeError(f"add_task() takes a function and its arguments, got {func!r}")
        super().add_task(func, *args, **kwargs)

    async def __call__(self) -> None:
        """Submit every task not submitted yet to the dispatcher, in order.

        The response calls this once it is sent. A task that cannot be
        submitted (the dispatcher is closed, say) is logged at ERROR on the
        `"asyncpool"` logger, and the others are still submitted.

        Raises:
            asyncio.CancelledError: the request's task was cancelled while
                waiting for room in the job queue; the tasks not submitted
                are logged first.
        """
        tasks = self.tasks
        while self._next < len(tasks):
            task = tasks[self._next]
            self._next += 1
            try:
                handle = await _submit(self.dispatcher, task)
            except Exception as exc:
                logger.error(
                    "%s: background task %s was not submitted: %s",
                    self.dispatcher._label(),
                    _task_name(task),
                    exc,
                    exc_info=exc,
                )
                continue
            except BaseException:
                lost = tasks[self._next - 1 :]
                self._next = len(tasks)
                logger.error(
                    "%s: %d background tasks were not submitted, the request was stopped "
                    "while waiting for room in the job queue: %s",
                    self.dispatcher._label(),
                    len(lost),
                    ", ".join(_task_name(t) for t in lost),
                )
                raise
            self.handles.append(handle)


async def _submit(dispatcher: Dispatcher, task: BackgroundTask) -> JobHandle[Any]:
    func, args, kwargs = task.func, task.args, task.kwargs
    if hasattr(func, "process") or not RESERVED_OPTIONS.isdisjoint(kwargs):
        # submit() would run an object with a `process` attribute as a Job,
        # and read `timeout=` and the like as per-job options. A background
        # task means func(*args, **kwargs), so bind the call first.
        return await dispatcher.submit(functools.partial(func, *args, **kwargs))
    return await dispatcher.submit(func, *args, **kwargs)


def _task_name(task: BackgroundTask) -> str:
    return getattr(task.func, "__qualname__", None) or repr(task.func)


async def _background_tasks_dependency(
    request: Request, response_tasks: StarletteBackgroundTasks
) -> PoolBackgroundTasks:
    # FastAPI gives every request one BackgroundTasks of its own class,
    # whatever subclass a parameter is annotated with, and the response calls
    # it after sending. So ours rides in it, as one task that submits the
    # others; FastAPI caches this dependency per request, so a route and its
    # dependencies share one PoolBackgroundTasks, as they share FastAPI's.
    tasks = PoolBackgroundTasks(get_dispatcher(request))
    response_tasks.add_task(tasks)
    return tasks


BackgroundTasks: TypeAlias = Annotated[PoolBackgroundTasks, Depends(_background_tasks_dependency)]
"""FastAPI's `BackgroundTasks`, run in the application's dispatcher; only the import changes.

```python
from asyncpool.fastapi import BackgroundTasks


@app.post("/signup")
async def signup(email: str, background_tasks: BackgroundTasks) -> dict[str, bool]:
    background_tasks.add_task(send_welcome_email, email)
    return {"ok": True}
```

The parameter receives a `PoolBackgroundTasks`; its tasks are submitted to
the dispatcher after the response is sent. As with FastAPI's own, they are
dropped if the route raises, or returns a `Response` that has a `background`
of its own.
"""


# ------------------------------------------------------------------- broker

BROKER_STATE_ATTRIBUTE: Final = "asyncpool_broker"
"""The name under which `broker_lifespan` keeps the broker, as `app.state.asyncpool_broker`."""

# Set on app.state while a broker lifespan runs there, so that a second one
# is refused. The broker itself stays on app.state after the lifespan, and
# whether it is open is the broker's own business.
_BROKER_RUNNING_ATTRIBUTE: Final = "asyncpool_broker_running"


@overload
def broker_lifespan(
    broker: Broker, app_lifespan: None = None, /
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]: ...
@overload
def broker_lifespan(
    broker: Broker, app_lifespan: Callable[[AppT], AbstractAsyncContextManager[StateT]], /
) -> Callable[[AppT], AbstractAsyncContextManager[StateT]]: ...
def broker_lifespan(
    broker: Broker,
    app_lifespan: Callable[[Any], AbstractAsyncContextManager[Any]] | None = None,
    /,
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """Make a lifespan that keeps `broker` open while the application runs, around yours if given.

    ```python
    broker = JetStreamBroker("nats://127.0.0.1:4222")  # its tasks registered on it
    app = FastAPI(lifespan=broker_lifespan(broker))
    app = FastAPI(lifespan=broker_lifespan(broker, my_lifespan))
    app = FastAPI(lifespan=broker_lifespan(broker, dispatcher_lifespan(workers=4)))
    ```

    With a dispatcher too, put the broker outside, as in the last line: it
    opens before the dispatcher starts and closes after it has drained, so
    local jobs can submit to the broker until the end.

    At startup it opens the broker (`async with broker`: it connects, and
    creates or checks what the engine keeps on its server) and keeps it at
    `app.state.asyncpool_broker` (`BROKER_STATE_ATTRIBUTE`), where
    `get_broker` and `BrokerDep` find it; then `app_lifespan` enters, and
    whatever it yields (Starlette's lifespan state) is passed on. At
    shutdown, after `app_lifespan` has exited (so your startup and shutdown
    code can submit too), it closes the broker. The jobs submitted are in the
    broker by then, for the workers: closing loses none of them. It only
    cancels the waits for results that are still going on (the server has
    finished its requests before it runs the lifespan's shutdown, so
    normally there are none). The closed broker stays on `app.state`, so a
    late submit gets the broker's own "is not open" `RuntimeError`.

    A broker can be opened again after it is closed, so each run of the
    lifespan (tests run it many times) reopens the same broker. The workers
    that run the jobs are other processes (`python -m asyncpool worker
    MODULE:BROKER`): this lifespan does not serve the broker.

    Any asyncpool broker works (a subclass of `asyncpool.brokers.Broker`);
    this module imports no engine.

    Args:
        broker: The broker to submit to, not open yet. The tasks that routes
            submit must be registered on it (`@broker.task`).
        app_lifespan: Your own lifespan (a function of the application that
            returns an async context manager), or None.

    Returns:
        A lifespan for `FastAPI(lifespan=...)` or `Starlette(lifespan=...)`.
        The lifespan raises `RuntimeError` at startup if the application
        already runs a broker lifespan (it was installed twice), and passes
        on what the broker raises when it cannot open (the server then does
        not start).

    Raises:
        TypeError: `broker` is not an asyncpool broker, or `app_lifespan`
            is neither a lifespan function nor None.
    """
    if not isinstance(broker, Broker):
        raise TypeError(
            f"broker must be an asyncpool broker (asyncpool.brokers.Broker, such as "
            f"asyncpool.jetstream.JetStreamBroker), got {broker!r}"
        )
    if app_lifespan is not None and not callable(app_lifespan):
        raise TypeError(f"app_lifespan must be a lifespan function or None, got {app_lifespan!r}")

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        state = app.state
        if getattr(state, _BROKER_RUNNING_ATTRIBUTE, False):
            raise RuntimeError(
                f"the application already runs a broker lifespan, with "
                f"{getattr(state, BROKER_STATE_ATTRIBUTE, None)!r} at "
                f"app.state.{BROKER_STATE_ATTRIBUTE}: install broker_lifespan once"
            )
        async with broker:
            setattr(state, BROKER_STATE_ATTRIBUTE, broker)
            setattr(state, _BROKER_RUNNING_ATTRIBUTE, True)
            try:
                if app_lifespan is None:
                    yield None
                else:
                    async with app_lifespan(app) as app_state:
                        yield app_state
            finally:
                setattr(state, _BROKER_RUNNING_ATTRIBUTE, False)

    return run


def get_broker(source: HTTPConnection | Starlette) -> Broker:
    """Return the application's broker, kept there by `broker_lifespan`.

    Works in any Starlette endpoint (`get_broker(request)`), for websockets,
    and with the application itself. FastAPI routes can take `BrokerDep`
    instead.

    Args:
        source: A request or websocket of the application, or the application.

    Returns:
        The broker at `app.state.asyncpool_broker`, typed as the base class
        `Broker`: its `submit` and `handle` are the same for every engine.

    Raises:
        RuntimeError: the application has no broker, because its lifespan
            is not installed or was not run; the message says how to
            install it.
    """
    broker = getattr(getattr(_app_of(source), "state", None), BROKER_STATE_ATTRIBUTE, None)
    if not isinstance(broker, Broker):
        raise _no_lifespan_error(
            f"no asyncpool broker at app.state.{BROKER_STATE_ATTRIBUTE}",
            install=(
                "FastAPI(lifespan=asyncpool.fastapi.broker_lifespan(broker)) (or "
                "broker_lifespan(broker, your_lifespan) to keep your own)"
            ),
        )
    return broker


async def _broker_dependency(connection: HTTPConnection) -> Broker:
    # Async, as _dispatcher_dependency is: no trip through the thread pool.
    return get_broker(connection)


BrokerDep: TypeAlias = Annotated[Broker, Depends(_broker_dependency)]
"""A route parameter type that receives the application's broker.

```python
@app.post("/thumbnails", status_code=202)
async def make_thumbnail(path: str, broker: BrokerDep) -> dict[str, str]:
    handle = await broker.submit(resize, path, result=False)
    return {"job_id": handle.id}
```

A request to an application without `broker_lifespan` fails with the
`RuntimeError` of `get_broker`.
"""
