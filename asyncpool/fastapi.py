"""FastAPI and Starlette integration: one `Dispatcher` that lives as long as the application.

This module owns three things:

* the lifespan (`lifespan`, `dispatcher_lifespan`): it starts a dispatcher
  with the application, keeps it at `app.state.asyncpool_dispatcher`, and at
  shutdown lets the jobs finish for a grace period, cancels what is left,
  and logs each job that did not finish;
* the dependency (`get_dispatcher`, `DispatcherDep`): it hands a route the
  application's dispatcher, or says how to install the lifespan;
* `BackgroundTasks`: a drop-in for FastAPI's `BackgroundTasks` whose tasks
  are submitted to the dispatcher once the response is sent
  (`PoolBackgroundTasks` is the class behind it).

The shape is aiojobs' aiohttp integration, done with Starlette's lifespan: a
setup that ties the pool's life to the application's, one documented place
where the pool is kept, and a getter whose error names the fix.

`asyncpool` itself never imports this module; its dependencies come with the
`fastapi` extra (`pip install 'asyncpool-dispatch[fastapi]'`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Final, ParamSpec, TypeAlias, TypeVar, overload

from fastapi import Depends
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.background import BackgroundTasks as StarletteBackgroundTasks
from starlette.requests import HTTPConnection, Request

from ._dispatcher import RESERVED_OPTIONS, Dispatcher
from ._handle import JobHandle
from ._integration import check_grace, log_shutdown

__all__ = (
    "DEFAULT_GRACE",
    "STATE_ATTRIBUTE",
    "BackgroundTasks",
    "DispatcherDep",
    "PoolBackgroundTasks",
    "dispatcher_lifespan",
    "get_dispatcher",
    "lifespan",
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
    queue_size: int = 1024,
    grace: float | None = DEFAULT_GRACE,
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
        queue_size: How many jobs may wait (the dispatcher's `queue_size`).
        grace: Seconds that queued and running jobs get to finish at
            shutdown, a finite number >= 0; 0 cancels them at once; None
            waits as long as they take.
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
    state = app.state
    existing = getattr(state, STATE_ATTRIBUTE, None)
    if isinstance(existing, Dispatcher) and not existing.closed:
        raise RuntimeError(
            f"the application already has a dispatcher at app.state.{STATE_ATTRIBUTE} "
            f"({existing!r}): install the asyncpool lifespan once"
        )
    dispatcher = Dispatcher(workers, queue_size=queue_size, **dispatcher_options)
    await dispatcher.start()
    setattr(state, STATE_ATTRIBUTE, dispatcher)
    try:
        yield
    finally:
        await _shut_down(dispatcher, grace)


@overload
def dispatcher_lifespan(
    app_lifespan: None = None,
    /,
    *,
    workers: int = 8,
    queue_size: int = 1024,
    grace: float | None = DEFAULT_GRACE,
    **dispatcher_options: Any,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]: ...
@overload
def dispatcher_lifespan(
    app_lifespan: Callable[[AppT], AbstractAsyncContextManager[StateT]],
    /,
    *,
    workers: int = 8,
    queue_size: int = 1024,
    grace: float | None = DEFAULT_GRACE,
    **dispatcher_options: Any,
) -> Callable[[AppT], AbstractAsyncContextManager[StateT]]: ...
def dispatcher_lifespan(
    app_lifespan: Callable[[Any], AbstractAsyncContextManager[Any]] | None = None,
    /,
    *,
    workers: int = 8,
    queue_size: int = 1024,
    grace: float | None = DEFAULT_GRACE,
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
        queue_size: How many jobs may wait; 0 means unbounded.
        grace: Seconds jobs get to finish at shutdown before the rest are
            cancelled, a finite number >= 0; None waits as long as they take.
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
    if app_lifespan is not None and not callable(app_lifespan):
        raise TypeError(f"app_lifespan must be a lifespan function or None, got {app_lifespan!r}")
    # A dispatcher runs once, so each startup makes its own; building one
    # here checks the options where the application is defined, instead of
    # failing at its first startup.
    Dispatcher(workers, queue_size=queue_size, **dispatcher_options)

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        async with lifespan(
            app, workers=workers, queue_size=queue_size, grace=grace, **dispatcher_options
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
    app = source if isinstance(source, Starlette) else source.app
    dispatcher = getattr(getattr(app, "state", None), STATE_ATTRIBUTE, None)
    if not isinstance(dispatcher, Dispatcher):
        raise RuntimeError(
            f"no asyncpool Dispatcher at app.state.{STATE_ATTRIBUTE}: install the lifespan, "
            "FastAPI(lifespan=asyncpool.fastapi.dispatcher_lifespan(...)) (or "
            "dispatcher_lifespan(your_lifespan, ...) to keep your own), and make sure it "
            "runs: servers such as uvicorn run it, httpx.ASGITransport does not (enter "
            "app.router.lifespan_context(app) around your test client)"
        )
    return dispatcher


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
