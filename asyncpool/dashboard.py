"""A web dashboard for a local `Dispatcher` or a broker: lanes, workers, jobs, dead letters.

```python
from asyncpool.dashboard import create_app, serve_dashboard

log = JobLog()
dispatcher = Dispatcher(workers=8, instruments=[log])
app.mount("/pool", create_app(dispatcher))      # in a FastAPI or Starlette app
await serve_dashboard(broker, port=8000)        # or on its own, until cancelled
```

From the command line: `python -m asyncpool dashboard MODULE:BROKER
[--host --port --token]`.

Pages: the overview (`/`: lanes, workers, totals, a throughput chart of the
last ten minutes), recent jobs (`/jobs`, by state, or one by id), one job
(`/jobs/{id}`: its arguments, times, result or error with its traceback,
and a Cancel button while it can be cancelled), dead letters
(`/dead-letters`, and each one with its payload; requeue or delete, one at
a time or those checked).

The overview updates itself by **polling** `/api/overview` once a second,
not through a WebSocket or server-sent events: the state is small (a few
rows and 600 numbers), a poll is a plain GET that goes through every proxy,
load balancer and mount prefix as the page itself does, it needs no
connection kept per viewer nor any code to resume one, and a poll that
fails just leaves the numbers as they were until the next one. The page
script sets text with `textContent` only, never HTML.

Safe by default (see `asyncpool._dashboard_security`): `serve_dashboard`
binds 127.0.0.1 and then answers only to loopback host names; every action
is a POST that needs the token (a cookie set by opening a page with
`?token=...`) and a CSRF field; every page is escaped, clipped, and sent
with a Content-Security-Policy that allows no inline script.

This module needs the `dashboard` extra (starlette, jinja2, uvicorn);
`asyncpool` itself never imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, TextIO

try:
    import jinja2  # noqa: F401  (checked here so that the error names the extra)
    import uvicorn
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        f"asyncpool.dashboard needs starlette, jinja2 and uvicorn ({exc}): "
        "pip install 'asyncpool-dispatch[dashboard]'",
        name=(exc.name or "").partition(".")[0] or None,  # the package, not its submodule
    ) from exc

from ._broker import Broker
from ._dashboard_actions import cancel_job, dead_letter_action
from ._dashboard_security import LOOPBACK_HOSTS, Guard, HostCheck, SecurityHeaders, new_token
from ._dashboard_sources import BrokerSource, LaneRow, LocalSource, Source, WorkerRow
from ._dashboard_throughput import Throughput
from ._dashboard_views import ASSETS, Dashboard
from ._dispatcher import Dispatcher
from ._joblog import JobLog

if TYPE_CHECKING:
    from starlette.types import ASGIApp

__all__ = (
    "BrokerSource",
    "LaneRow",
    "LocalSource",
    "Source",
    "WorkerRow",
    "create_app",
    "serve_dashboard",
)

logger = logging.getLogger("asyncpool")


def _source_of(target: object, log: JobLog | None) -> Source:
    if isinstance(target, Dispatcher):
        if log is None:
            found = [i for i in target.instruments if isinstance(i, JobLog)]
            if not found:
                raise ValueError(
                    f"create_app(dispatcher) needs the dispatcher's JobLog: give "
                    f"{target!r} one (Dispatcher(instruments=[log])) and pass it as log=log, "
                    "or let create_app find it among the dispatcher's instruments"
                )
            log = found[0]
        elif not isinstance(log, JobLog):
            raise TypeError(f"log must be an asyncpool JobLog or None, got {log!r}")
        return LocalSource(target, log)
    if log is not None:
        raise TypeError("log= is for a Dispatcher; a broker's jobs come from its workers")
    if isinstance(target, Broker):
        return BrokerSource(target)
    if isinstance(target, Source):
        return target
    raise TypeError(
        f"create_app() shows a Dispatcher, an asyncpool broker or a dashboard Source, "
        f"got {target!r}"
    )


def create_app(
    target: Dispatcher | Broker | Source,
    *,
    token: str | None = None,
    log: JobLog | None = None,
    title: str | None = None,
) -> Starlette:
    """Make the dashboard's ASGI application, to serve or to mount.

    ```python
    app.mount("/pool", create_app(dispatcher, token=os.environ["POOL_TOKEN"]))
    ```

    The target must be running (a dispatcher) or open (a broker) while the
    app serves; the app neither starts nor opens it. Links and the page
    script work under any mount prefix.

    The app's lifespan samples the throughput once a second. Starlette does
    not run the lifespan of a mounted app: then the chart is fed by the
    pages' own polls (it has no history from before a page was opened),
    unless your lifespan enters the dashboard's
    (`async with dashboard.router.lifespan_context(dashboard): ...`).

    Args:
        target: A running `Dispatcher` (with a `JobLog` among its
            instruments), an open broker (`JetStreamBroker`, `RedisBroker`),
            or any `Source`.
        token: What the actions (cancel, requeue, delete) need: opening any
            page with `?token=<token>` lets that browser act. If None, one is
            made, logged (WARNING, logger "asyncpool") and kept at
            `app.state.token`.
        log: The dispatcher's `JobLog`, if it should not be looked up among
            its instruments. Only for a dispatcher.
        title: The pages' title (default: "asyncpool").

    Returns:
        A Starlette application.

    Raises:
        ValueError: a dispatcher without a `JobLog` (pass `log=`), or a
            token that is not at least 8 URL-safe characters.
        TypeError: a target, log or token of the wrong type.
    """
    source = _source_of(target, log)
    if token is None:
        token = new_token()
        logger.warning(
            "asyncpool dashboard for %s: no token was given, so one was made; open the "
            "dashboard with ?token=%s to cancel, requeue or delete",
            source.label,
            token,
        )
    guard = Guard(token)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {title!r}")
    throughput = Throughput()
    dashboard = Dashboard(source, guard, throughput, title or "asyncpool")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sampler = asyncio.create_task(throughput.run(source.finished))
        try:
            yield
        finally:
            sampler.cancel()
            await asyncio.wait((sampler,))

    def bound(
        action: Callable[[Dashboard, Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await action(dashboard, request)

        return endpoint

    async def unavailable(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(
            f"503: the pool's server did not answer: {type(exc).__name__}\n", status_code=503
        )

    routes = [
        Route("/", dashboard.overview_page, methods=["GET"], name="overview"),
        Route("/api/overview", dashboard.overview_api, methods=["GET"], name="api_overview"),
        Route("/icon.svg", dashboard.icon, methods=["GET"], name="icon"),
        Route("/jobs", dashboard.jobs_page, methods=["GET"], name="jobs"),
        Route("/jobs/{job_id:path}", dashboard.job_page, methods=["GET"], name="job"),
        Route("/dead-letters", dashboard.letters_page, methods=["GET"], name="dead_letters"),
        Route(
            "/dead-letters/{letter_id:path}",
            dashboard.letter_page,
            methods=["GET"],
            name="dead_letter",
        ),
        Route("/actions/cancel", bound(cancel_job), methods=["POST"], name="cancel"),
        Route(
            "/actions/dead-letters",
            bound(dead_letter_action),
            methods=["POST"],
            name="dead_letter_action",
        ),
        Mount("/static", StaticFiles(directory=ASSETS / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan,
        exception_handlers={OSError: unavailable},
    )
    app.state.token = token
    return app


class _Server(uvicorn.Server):
    """uvicorn, leaving the process's signals alone: `serve_dashboard` stops when cancelled."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


async def serve_dashboard(
    target: Dispatcher | Broker | Source,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    log: JobLog | None = None,
    title: str | None = None,
    out: TextIO | None = sys.stdout,
) -> None:
    """Serve the dashboard of `target` with uvicorn until cancelled.

    Bound to a loopback address (the default), it answers only requests
    addressed to a loopback name (127.0.0.1, localhost, ::1), which keeps
    other web sites out through DNS rebinding. Bound to any other address,
    anyone who reaches it can read the pages (the actions still need the
    token): a warning says so.

    Once it listens, it prints the URL to open (with the token) to `out`
    and logs it (INFO, logger "asyncpool"). Cancelling it stops the server
    gracefully (open requests get 5 seconds). It leaves signals alone.

    Args:
        target, token, log, title: As for `create_app`; a token is made
            when none is given.
        host: The address to bind.
        port: The port (0 for any free one; the printed URL has the real one).
        out: Where to print the URL; None to only log it.

    Raises:
        OSError: the address cannot be bound (a port in use, say).
        ValueError, TypeError: as `create_app` raises.
    """
    if token is None:
        token = new_token()
    app: ASGIApp = create_app(target, token=token, log=log, title=title)
    loopback = _is_loopback(host)
    if loopback:
        app = HostCheck(app, LOOPBACK_HOSTS)
    else:
        logger.warning(
            "asyncpool dashboard: bound to %s, not a loopback address: whoever reaches it "
            "can read its pages (jobs' arguments and errors); its actions need the token",
            host,
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
        bound_port: int = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        server = _Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        url = f"{_url(host, bound_port)}?token={token}"
        logger.info("asyncpool dashboard: %s", url)
        if out is not None:
            print(f"asyncpool dashboard: {url}", file=out, flush=True)
        try:
            await asyncio.shield(serving)
        finally:
            if not serving.done():
                server.should_exit = True
                await asyncio.wait((serving,))
    finally:
        sock.close()
