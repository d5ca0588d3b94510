"""`python -m asyncpool dashboard MODULE:BROKER [--host --port --token]`: a broker's dashboard.

Imports MODULE and takes its broker BROKER as the `worker` command does
(`asyncpool._worker.load_broker`), opens it, and serves its dashboard
(`asyncpool.dashboard.serve_dashboard`) until SIGTERM or SIGINT; then stops
the server and closes the broker. It prints the URL to open, with the
token the actions need (one is made when `--token` is not given).

Exit status: 0 after SIGTERM or SIGINT; 1 when the broker does not open,
the address cannot be bound, or the server is lost as it closes (one line
on stderr); 2 for bad input (a missing module or attribute, a bad port or
token, a missing extra); 130 when interrupted before it was serving.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final, TextIO

from ._broker import Broker
from ._worker import CLOSE_LIMIT, WorkerUsageError, load_broker

__all__ = ("build_parser", "main")

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


class DashboardFailure(Exception):
    """An expected failure of the command: its message is the one line to print."""


def build_parser(prog: str = "python -m asyncpool dashboard") -> argparse.ArgumentParser:
    """The parser of the `dashboard` command's arguments (those after the word `dashboard`)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Serve a web dashboard of MODULE's broker BROKER: its lanes, workers, recent "
            "jobs and dead letters, until SIGTERM or SIGINT. Cancelling a job and "
            "requeueing or deleting dead letters need the token: open the printed URL."
        ),
    )
    parser.add_argument("broker", metavar="MODULE:BROKER", help="e.g. app.tasks:broker")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default: 127.0.0.1; any other lets others read the pages)",
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="the port (default: 8000; 0 for any free one)"
    )
    parser.add_argument(
        "--token",
        default=None,
        help="what the actions need (default: a new random one, printed with the URL)",
    )
    parser.add_argument("--title", default=None, help="the pages' title (default: asyncpool)")
    return parser


def main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command with its arguments (those after `dashboard`) and return the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = parser.prog

    def fail(message: str, status: int = EXIT_USAGE) -> int:
        print(f"{prog}: error: {message}", file=err, flush=True)
        return status

    if not 0 <= args.port <= 65535:
        return fail(f"--port must be from 0 to 65535, got {args.port}")
    try:
        from . import dashboard
        from ._dashboard_security import Guard, new_token
    except ModuleNotFoundError as exc:  # the message names the extra
        return fail(str(exc))
    token: str = args.token if args.token is not None else new_token()
    try:
        Guard(token)
    except ValueError as exc:
        return fail(f"--token: {exc}")
    try:
        broker = load_broker(args.broker)
    except (WorkerUsageError, ImportError) as exc:
        return fail(str(exc))

    async def serve() -> None:
        await dashboard.serve_dashboard(
            broker, host=args.host, port=args.port, token=token, title=args.title, out=out
        )

    try:
        asyncio.run(_run(broker, serve))
    except DashboardFailure as exc:
        return fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:  # before SIGINT meant "stop" (while importing, say)
        print(f"{prog}: interrupted", file=err, flush=True)
        return EXIT_INTERRUPTED
    return EXIT_OK


async def _run(broker: Broker, serve: Callable[[], Awaitable[None]]) -> None:
    """Open `broker`, serve until a signal, close it; a `DashboardFailure` for what can go wrong."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in _SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        if not await _until(broker.__aenter__(), stop, f"cannot open {broker!r}"):
            raise DashboardFailure(f"stopped while opening {broker!r}: its server had not answered")
        try:
            await _until(serve(), stop, "cannot serve the dashboard")
        finally:
            try:
                async with asyncio.timeout(CLOSE_LIMIT):
                    await broker.__aexit__(None, None, None)
            except OSError as exc:  # a ConnectionError, or the limit (TimeoutError)
                raise DashboardFailure(
                    f"the server of {broker!r} was unreachable as it closed: {exc}"
                ) from exc
    finally:
        for signum in _SIGNALS:
            loop.remove_signal_handler(signum)


async def _until(work: Awaitable[Any], stop: asyncio.Event, failure: str) -> bool:
    """Run `work` until it ends (True) or `stop` is set (cancel it: False).

    Raises:
        DashboardFailure: `work` raised an `Exception` (the message says what).
    """
    running = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((running, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not running.done():
            running.cancel()
            await asyncio.wait((running,))
    if running.cancelled():
        return False
    try:
        running.result()
    except Exception as exc:  # the server's or the setup's doing: no server, a port in use
        text = " ".join(str(exc).split())
        raise DashboardFailure(
            f"{failure}: {type(exc).__name__}: {text}" if text else f"{failure}: {exc!r}"
        ) from exc
    return True
