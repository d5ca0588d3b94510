"""aiohttp integration: a `Dispatcher` (or a broker) per application, started and closed with it.

This module owns the glue between an `aiohttp.web.Application` and a
`Dispatcher`: `setup` makes the dispatcher and ties its lifetime to the
application's (through `cleanup_ctx`); and `get_dispatcher` and `spawn`
reach it from a request handler. The shutdown's log lines, which report one
by one the jobs that a shutdown had to cancel, are the same as the FastAPI
integration's (`asyncpool._integration` owns both). It needs the `aiohttp` extra
(`pip install 'asyncpool-dispatch[aiohttp]'`); `import asyncpool` never
imports it.

`setup_broker` and `get_broker` do for a broker what `setup` and
`get_dispatcher` do for a dispatcher: the application submits to the
broker, and workers elsewhere run the jobs. They know brokers by their
engine-neutral base class only (`asyncpool._broker.Broker`), and this module
imports no engine (`asyncpool.jetstream`, ...) nor its client library.

```python
from aiohttp import web

import asyncpool.aiohttp


async def send_welcome(address: str) -> None: ...


async def register(request: web.Request) -> web.Response:
    handle = await asyncpool.aiohttp.spawn(request, send_welcome, "ada@example.org")
    return web.json_response({"job": handle.id}, status=202)


app = web.Application()
asyncpool.aiohttp.setup(app, workers=4, grace=10)
app.router.add_post("/register", register)
```

A job belongs to the dispatcher, not to the request that submitted it: it
goes on running when the handler returns, fails, or is cancelled because the
client went away. A job submitted to a broker belongs to the broker, and
runs on a worker (`python -m asyncpool worker MODULE:BROKER`):

```python
broker = asyncpool.aiohttp.setup_broker(app, JetStreamBroker("nats://127.0.0.1:4222"))


@broker.task
async def resize(path: str) -> int: ...


async def thumbnail(request: web.Request) -> web.Response:
    handle = await asyncpool.aiohttp.get_broker(request).submit(resize, "a.png")
    return web.json_response({"job": handle.id, "size": await handle})
```
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Final, ParamSpec, TypeVar, overload

try:
    from aiohttp import web
except ModuleNotFoundError as exc:
    # The bare error ("No module named 'aiohttp'") does not say that an
    # extra of asyncpool brings it.
    raise ModuleNotFoundError(
        f"asyncpool.aiohttp needs aiohttp ({exc}): pip install 'asyncpool-dispatch[aiohttp]'",
        name=exc.name,
    ) from exc

from ._broker import Broker
from ._dispatcher import Dispatcher
from ._handle import JobHandle
from ._integration import check_grace, log_shutdown
from ._signatures import _AsyncProcess, _SyncProcess

__all__ = (
    "BROKER_KEY",
    "DEFAULT_GRACE",
    "DISPATCHER_KEY",
    "get_broker",
    "get_dispatcher",
    "setup",
    "setup_broker",
    "spawn",
)

T = TypeVar("T")
P = ParamSpec("P")
BrokerT = TypeVar("BrokerT", bound=Broker)

DISPATCHER_KEY: Final[web.AppKey[Dispatcher]] = web.AppKey("asyncpool.dispatcher", Dispatcher)
"""The application key under which `setup` stores the dispatcher, as in `app[DISPATCHER_KEY]`."""

DEFAULT_GRACE: Final[float] = 10.0
"""Seconds a shutdown lets queued and running jobs finish before cancelling them."""

BROKER_KEY: Final[web.AppKey[Broker]] = web.AppKey("asyncpool.broker", Broker)
"""The application key under which `setup_broker` stores the broker, as in `app[BROKER_KEY]`."""


def setup(
    app: web.Application, *, grace: float | None = DEFAULT_GRACE, **dispatcher_options: Any
) -> Dispatcher:
    """Give `app` a dispatcher that starts and stops with it.

    The dispatcher is made now, stored as `app[DISPATCHER_KEY]`, started when
    the application starts, and closed when it is cleaned up. aiohttp cleans
    up after the requests in flight have finished, so a handler can always
    submit. Closing drains: the dispatcher stops accepting jobs, lets queued
    and running jobs finish for `grace` seconds, then cancels the rest and
    logs a WARNING summary on the `"asyncpool"` logger, then each of them at
    WARNING, queued jobs first (see `close()` and `ShutdownReport`).

    Call it before the application starts, and for a sub-application before
    `add_subapp`. Handlers of sub-applications reach their parents'
    dispatcher through `get_dispatcher`; a sub-application with its own
    `setup` uses its own.

    Args:
        app: The application.
        grace: Seconds to let jobs finish at shutdown before cancelling the
            rest (0 cancels at once). None waits for every job, however long
            that takes.
        **dispatcher_options: Passed to `Dispatcher` (`workers`, `queue_size`,
            `on_error`, `name`, ...). `fail_fast=True` is refused: one failed
            job would stop the dispatcher for good while the server goes on
            serving.

    Returns:
        The dispatcher (not started yet), for code that wants it directly.

    Raises:
        TypeError: `app` is not an `aiohttp.web.Application`, `grace` is not
            a number or None, or a dispatcher option has the wrong type or
            name.
        ValueError: `grace` is negative, infinite or NaN; `fail_fast=True`;
            or a dispatcher option is out of range (`workers=0`, ...).
        RuntimeError: `setup` was already called for `app`, or `app` has
            already started or been added as a sub-application.
    """
    if not isinstance(app, web.Application):
        raise TypeError(f"app must be an aiohttp.web.Application, got {type(app).__name__}")
    grace = check_grace(grace)
    if dispatcher_options.get("fail_fast", False) is True:
        raise ValueError(
            "fail_fast=True does not fit an aiohttp application: the first failing job "
            "would stop the application's dispatcher while the server goes on serving; "
            "use on_error to react to failures"
        )
    if DISPATCHER_KEY in app:
        raise RuntimeError("asyncpool.aiohttp.setup() was already called for this application")
    if app.pre_frozen:
        # aiohttp freezes an application's hooks when it starts, or when it is
        # added as a sub-application: a dispatcher added later would never start.
        raise RuntimeError(
            "asyncpool.aiohttp.setup() must be called before the application starts "
            "and before it is added as a sub-application (add_subapp)"
        )
    dispatcher = Dispatcher(**dispatcher_options)  # validates the options, names the bad one

    async def run_dispatcher(app: web.Application) -> AsyncIterator[None]:
        await dispatcher.start()
        yield
        await _shut_down(dispatcher, grace)

    app[DISPATCHER_KEY] = dispatcher
    app.cleanup_ctx.append(run_dispatcher)
    return dispatcher


def get_dispatcher(request: web.Request) -> Dispatcher:
    """Return the dispatcher of the application that handles `request`.

    The application is searched first, then its parents, as aiohttp does for
    `request.config_dict`: a sub-application's handlers find the dispatcher
    that `setup` gave the main application. Outside a request, use
    `app[DISPATCHER_KEY]`.

    Raises:
        TypeError: `request` is not an `aiohttp.web.Request`.
        RuntimeError: neither the application nor any parent of it went
            through `setup`.
    """
    if not isinstance(request, web.Request):
        raise TypeError(f"request must be an aiohttp.web.Request, got {type(request).__name__}")
    dispatcher = request.config_dict.get(DISPATCHER_KEY)
    if dispatcher is None:
        raise RuntimeError(
            "no asyncpool dispatcher for this request: call asyncpool.aiohttp.setup(app) "
            "on the application, or on one of its parent applications, before it starts"
        )
    return dispatcher


@overload
async def spawn(request: web.Request, job: _AsyncProcess[T], /) -> JobHandle[T]: ...
@overload
async def spawn(request: web.Request, job: _SyncProcess[T], /) -> JobHandle[T]: ...
@overload
async def spawn(request: web.Request, job: Coroutine[Any, Any, T], /) -> JobHandle[T]: ...
@overload
async def spawn(
    request: web.Request,
    fn: Callable[P, Coroutine[Any, Any, T]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> JobHandle[T]: ...
@overload
async def spawn(
    request: web.Request, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> JobHandle[T]: ...
async def spawn(request: web.Request, target: Any, /, *args: Any, **kwargs: Any) -> JobHandle[Any]:
    """Submit a job to the request's dispatcher: `await get_dispatcher(request).submit(...)`.

    It takes what `Dispatcher.submit` takes and, like it, waits for room
    when the queue is full. The job belongs to the dispatcher: it goes on
    when the handler returns or is cancelled. Awaiting the handle in the
    handler would tie them again (a cancelled awaiter cancels the future it
    awaits); to wait for the job without that, use
    `await asyncio.wait([handle])`.

    Returns:
        The job's handle.

    Raises:
        TypeError: `request` is not an `aiohttp.web.Request`, or the job is
            not something `submit` accepts.
        RuntimeError: `setup` was not called (see `get_dispatcher`).
        DispatcherClosed: the dispatcher is not running (the application
            has not started, or is shutting down).
    """
    try:
        dispatcher = get_dispatcher(request)
    except BaseException:
        if inspect.iscoroutine(target):
            target.close()  # it will never run; spare the "never awaited" warning
        raise
    return await dispatcher.submit(target, *args, **kwargs)


async def _shut_down(dispatcher: Dispatcher, grace: float | None) -> None:
    if dispatcher.closed:
        return  # the application closed it itself, and has the report
    report = await dispatcher.close(timeout=grace)
    log_shutdown(dispatcher, report, grace)


def setup_broker(app: web.Application, broker: BrokerT) -> BrokerT:
    """Give `app` a broker to submit jobs to, open while the application runs.

    The broker is stored as `app[BROKER_KEY]` now, opened (`async with
    broker`: it connects, and creates or checks what the engine keeps on its
    server) when the application starts, and closed when it is cleaned up.
    aiohttp cleans up after the requests in flight have finished, so a
    handler can always submit. The jobs submitted are in the broker by then,
    for the workers (`python -m asyncpool worker MODULE:BROKER`, elsewhere):
    closing loses none of them, and only cancels waits for results that are
    still going on.

    Register the tasks that handlers submit on the broker (`@broker.task`).
    One application can have both a broker and a dispatcher (`setup`).
    Handlers of sub-applications reach their parents' broker through
    `get_broker`. A broker cannot be open twice at once, so give each broker
    to one application only. Any asyncpool broker works (a subclass of
    `asyncpool.brokers.Broker`); this module imports no engine.

    Args:
        app: The application; call this before it starts, and for a
            sub-application before `add_subapp`.
        broker: The broker, not open yet.

    Returns:
        `broker` itself, with its own type: `broker = setup_broker(app,
        JetStreamBroker(...))`. Outside a request, `app[BROKER_KEY]` has it
        too.

    Raises:
        TypeError: `app` is not an `aiohttp.web.Application`, or `broker` is
            not an asyncpool broker.
        RuntimeError: `setup_broker` was already called for `app`, or `app`
            has already started or been added as a sub-application.
    """
    if not isinstance(app, web.Application):
        raise TypeError(f"app must be an aiohttp.web.Application, got {type(app).__name__}")
    if not isinstance(broker, Broker):
        raise TypeError(
            f"broker must be an asyncpool broker (asyncpool.brokers.Broker, such as "
            f"asyncpool.jetstream.JetStreamBroker), got {broker!r}"
        )
    if BROKER_KEY in app:
        raise RuntimeError(
            f"asyncpool.aiohttp.setup_broker() was already called for this application "
            f"(its broker is {app[BROKER_KEY]!r})"
        )
    if app.pre_frozen:
        # As in setup(): a cleanup context added after the freeze never runs.
        raise RuntimeError(
            "asyncpool.aiohttp.setup_broker() must be called before the application starts "
            "and before it is added as a sub-application (add_subapp)"
        )

    async def run_broker(app: web.Application) -> AsyncIterator[None]:
        async with broker:
            yield

    stored: Broker = broker  # BROKER_KEY holds the base class: mypy needs the upcast said
    app[BROKER_KEY] = stored
    app.cleanup_ctx.append(run_broker)
    return broker


def get_broker(request: web.Request) -> Broker:
    """Return the broker of the application that handles `request`.

    The application is searched first, then its parents, as for
    `get_dispatcher`. Outside a request, use `app[BROKER_KEY]`.

    Returns:
        The broker, typed as the base class `Broker`: its `submit` and
        `handle` are the same for every engine.

    Raises:
        TypeError: `request` is not an `aiohttp.web.Request`.
        RuntimeError: neither the application nor any parent of it went
            through `setup_broker`.
    """
    if not isinstance(request, web.Request):
        raise TypeError(f"request must be an aiohttp.web.Request, got {type(request).__name__}")
    broker = request.config_dict.get(BROKER_KEY)
    if broker is None:
        raise RuntimeError(
            "no asyncpool broker for this request: call "
            "asyncpool.aiohttp.setup_broker(app, broker) on the application, or on one of "
            "its parent applications, before it starts"
        )
    return broker
