"""`python -m asyncpool worker MODULE:BROKER` and `python -m asyncpool dead-letters MODULE:BROKER`.

The worker process: import the module that registers the tasks, take its
broker, open it, run a `Dispatcher(workers=N)` and `broker.serve()` until
SIGTERM or SIGINT. Then, in this order: stop taking jobs and hand the
unstarted ones back at once (another worker takes them now, not after a
lease); let the running ones finish within the grace period; cut short and
hand back what is still running; print what happened to stderr; exit 0.

A stop never waits on the broker's server: a signal while the broker is
still opening (its server does not answer) ends the opening at once; once
the dispatcher has closed, `serve` gets `SETTLE_LIMIT` seconds to settle its
jobs with the server and the broker `CLOSE_LIMIT` seconds to close. A server
that was unreachable by then is a `WorkerFailure` (exit status 1): the jobs
the worker held are redelivered by the server once their lease runs out.

`WorkerFailure` is every failure that is not a bug: the broker did not open
(whatever opening raised: no server, a name set up otherwise on it), or an
`OSError` (a connection broke, a request timed out) while serving, listing,
requeueing or deleting. The command line prints its message as one line; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TextIO

from ._broker import Broker
from ._deadletters import DeadLetter
from ._dispatcher import Dispatcher
from ._serve import ServeReport
from ._stats import ShutdownReport

__all__ = (
    "CLOSE_LIMIT",
    "SETTLE_LIMIT",
    "WorkerFailure",
    "WorkerUsageError",
    "load_broker",
    "run_dead_letters",
    "run_worker",
)

SETTLE_LIMIT: Final = 2.0

_RECANCEL: Final = 0.5
"""How long a cancelled opening gets to end before it is cancelled again (s)."""
"""Seconds `serve` gets, once the dispatcher has closed, to settle its jobs with the server.

Settling is an ack, a nak or a record: milliseconds each on a live server.
An unreachable one never answers (the client buffers what is sent meanwhile,
or waits out its request timeout), and the stop must not wait for it.
"""

CLOSE_LIMIT: Final = 2.0
"""Seconds the broker gets to close (flush what it sent) once serving has ended."""

_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


class WorkerUsageError(Exception):
    """A command-line argument that does not name a usable broker."""


class WorkerFailure(Exception):
    """An expected failure of `worker` or `dead-letters`: its message is the one line to print.

    Raised by `run_worker` and `run_dead_letters` when the broker does not
    open, when its server cannot be reached while serving or requeueing, and
    when a worker stops with its server unreachable.
    """


def load_broker(spec: str) -> Broker:
    """The broker named by "package.module:attribute".

    Raises:
        WorkerUsageError: the module or attribute is missing, or not a broker.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise WorkerUsageError(f"expected MODULE:BROKER (like app.tasks:broker), got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the current directory's modules
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WorkerUsageError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        broker = getattr(module, attribute)
    except AttributeError:
        raise WorkerUsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(broker, Broker):
        raise WorkerUsageError(f"{spec} is a {type(broker).__name__}, not an asyncpool broker")
    return broker


async def run_worker(broker: Broker, *, workers: int, grace: float, out: TextIO) -> ServeReport:
    """Serve `broker` on a fresh dispatcher until SIGTERM/SIGINT; then stop gracefully.

    Returns:
        What serving did.

    Raises:
        WorkerFailure: the broker did not open, a signal came before it did,
            serving failed with an `OSError`, or the server was unreachable
            as the worker stopped (the message says which).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in _SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        print(f"asyncpool worker: opening {broker!r}", file=out, flush=True)
        await _open_unless_stopped(broker, stop)
        try:
            report, shutdown = await _serve(broker, workers, stop, grace, out)
        except BaseException as exc:
            lost = await _close(broker)
            if lost is not None and isinstance(exc, Exception):
                # Serving failed because the server went away: say that.
                raise _unreachable(broker) from exc
            if isinstance(exc, OSError):
                raise WorkerFailure(f"serving failed: {_describe(exc)}") from exc
            raise
        lost = await _close(broker)
    finally:
        for signum in _SIGNALS:
            loop.remove_signal_handler(signum)
    if report is None:
        print(
            f"asyncpool worker: serving cut short: the server did not answer within "
            f"{SETTLE_LIMIT:g} s of the dispatcher closing",
            file=out,
            flush=True,
        )
    else:
        print(f"asyncpool worker: stopped: {report.summary()}", file=out, flush=True)
        if report.handed_back_running:
            print(
                f"asyncpool worker: cut short after the {grace:g} s grace and handed back: "
                + ", ".join(report.handed_back_running),
                file=out,
                flush=True,
            )
    print(f"asyncpool worker: dispatcher {shutdown!r}", file=out, flush=True)
    if lost is not None or report is None:
        raise _unreachable(broker) from lost
    return report


def _unreachable(broker: Broker) -> WorkerFailure:
    return WorkerFailure(
        f"the server of {broker!r} was unreachable as the worker stopped: the jobs this "
        "worker held and could not settle there are redelivered by the server once their "
        "lease runs out"
    )


def _describe(exc: BaseException) -> str:
    """`Type: message`, on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _open_unless_stopped(broker: Broker, stop: asyncio.Event) -> None:
    """Open `broker`; a stop first ends the opening (a server that does not answer is no excuse)."""
    opening = asyncio.create_task(broker.__aenter__())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait((opening, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        # The broker closes what it had begun. Cancelled again until it ends:
        # a client library's wait can lose a cancellation (Python 3.11's
        # wait_for), and the opening would then go on for its whole timeout.
        while not opening.done():
            opening.cancel()
            await asyncio.wait((opening,), timeout=_RECANCEL)
    if opening.cancelled():
        raise WorkerFailure(
            f"stopped while opening {broker!r}: its server had not answered; no job was taken"
        )
    try:
        opening.result()
    except Exception as exc:
        # Whatever opening raises is the server's or the setup's doing: none
        # answered, it refused the credentials, a stream of the broker's name
        # is set up otherwise, the connect options are wrong.
        raise WorkerFailure(f"cannot open {broker!r}: {_describe(exc)}") from exc


async def _close(broker: Broker) -> OSError | None:
    """Close the open `broker` (bounded); the error if its server was unreachable, else None."""
    try:
        async with asyncio.timeout(CLOSE_LIMIT):
            await broker.__aexit__(None, None, None)
    except OSError as exc:  # a ConnectionError, or the limit (a TimeoutError)
        return exc
    return None


async def _serve(
    broker: Broker, workers: int, stop: asyncio.Event, grace: float, out: TextIO
) -> tuple[ServeReport | None, ShutdownReport]:
    """Serve on a fresh dispatcher until stopped; the report is None if serving was cut short."""
    dispatcher = Dispatcher(workers=workers, name="worker")
    await dispatcher.start()
    try:
        return await _serve_until_stopped(broker, dispatcher, stop, grace, out)
    finally:
        if not dispatcher.closed:
            await dispatcher.close(cancel=True)


async def _serve_until_stopped(
    broker: Broker, dispatcher: Dispatcher, stop: asyncio.Event, grace: float, out: TextIO
) -> tuple[ServeReport | None, ShutdownReport]:
    print(
        f"asyncpool worker: serving {len(broker.registry)} task(s) of {broker!r} "
        f"with {dispatcher.workers} workers",
        file=out,
        flush=True,
    )
    serving = asyncio.create_task(broker.serve(dispatcher, stop=stop))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait((serving, stopping), return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        print("asyncpool worker: stopping: unstarted jobs handed back", file=out, flush=True)
        shutdown = await dispatcher.close(timeout=grace)
        await asyncio.wait((serving,), timeout=SETTLE_LIMIT)
    finally:
        stop.set()
        stopping.cancel()
        if not serving.done():
            serving.cancel()
            await asyncio.wait((serving,))
    if serving.cancelled():
        return None, shutdown
    return serving.result(), shutdown


async def run_dead_letters(broker: Broker, action: str, ids: Sequence[str], out: TextIO) -> int:
    """List dead letters, or requeue or delete some (`ids`) or all (`ids == ["--all"]`).

    An id requeues the latest dead letter with that id, as `broker.requeue(id)`
    does; `--all` requeues the latest letter of every id. An id deletes every
    dead letter with that id (earlier deaths of the same job too: the job is
    given up); `--all` deletes them all.

    Returns:
        0, or 1 when an id to requeue or delete is not a dead letter (the
        others are requeued or deleted).

    Raises:
        WorkerUsageError: the broker keeps no dead letters, or (to delete)
            cannot delete them.
        WorkerFailure: the broker did not open, or its server could not be
            reached (the message says how many were requeued or deleted first).
    """
    listing = getattr(broker, "dead_letters", None)
    requeue = getattr(broker, "requeue", None)
    if requeue is None or listing is None:
        raise WorkerUsageError(f"{broker!r} keeps no dead letters")
    delete = getattr(broker, "delete_dead_letter", None) if action == "delete" else None
    if action == "delete" and delete is None:
        raise WorkerUsageError(f"{broker!r} cannot delete dead letters")
    try:
        await broker.__aenter__()
    except Exception as exc:  # as for the worker: the server's or the setup's doing
        raise WorkerFailure(f"cannot open {broker!r}: {_describe(exc)}") from exc
    try:
        if delete is not None:
            status = await _delete_dead_letters(ids, listing, delete, out)
        else:
            status = await _dead_letters(action, ids, listing, requeue, out)
    except BaseException as exc:
        lost = await _close(broker)
        if isinstance(exc, OSError) or (lost is not None and isinstance(exc, Exception)):
            raise WorkerFailure(
                f"{action} failed on the server of {broker!r}: {_describe(exc)}"
            ) from exc
        raise
    lost = await _close(broker)
    if lost is not None:
        raise WorkerFailure(
            f"the server of {broker!r} was unreachable as it closed: {_describe(lost)}"
        ) from lost
    return status


async def _dead_letters(
    action: str,
    ids: Sequence[str],
    listing: Callable[[], Awaitable[list[DeadLetter]]],
    requeue: Callable[[DeadLetter], Awaitable[None]],
    out: TextIO,
) -> int:
    letters = await listing()
    if action == "list":
        for letter in letters:
            error = letter.error or {}
            print(
                f"{letter.id}\t{letter.task}\t{letter.reason}\tattempts={letter.attempts}\t"
                f"{error.get('type', '')}: {error.get('message', '')}",
                file=out,
            )
        print(f"{len(letters)} dead letter(s)", file=out)
        return 0
    # The latest letter of each id, as broker.requeue(job_id) takes. An
    # older letter of the id is an earlier death of the same job: sending it
    # back too would run the job twice.
    latest = {letter.id: letter for letter in letters}
    if list(ids) == ["--all"]:
        chosen = list(latest.values())
        missing: list[str] = []
    else:
        wanted = list(dict.fromkeys(ids))
        chosen = [latest[job_id] for job_id in wanted if job_id in latest]
        missing = [job_id for job_id in wanted if job_id not in latest]
    done = 0
    try:
        for letter in chosen:
            try:
                await requeue(letter)
            except LookupError:
                continue  # gone since it was listed (requeued or deleted elsewhere)
            done += 1
    finally:
        print(f"requeued {done} job(s)", file=out)
    if missing:
        print(f"no dead letter with id: {', '.join(sorted(missing))}", file=out)
        return 1
    return 0


async def _delete_dead_letters(
    ids: Sequence[str],
    listing: Callable[[], Awaitable[list[DeadLetter]]],
    delete: Callable[[DeadLetter], Awaitable[None]],
    out: TextIO,
) -> int:
    letters = await listing()
    if list(ids) == ["--all"]:
        chosen = letters
        missing: list[str] = []
    else:
        wanted = set(ids)
        chosen = [letter for letter in letters if letter.id in wanted]
        missing = sorted(wanted - {letter.id for letter in chosen})
    done = 0
    try:
        for letter in chosen:
            try:
                await delete(letter)
            except LookupError:
                continue  # gone since it was listed (deleted or requeued elsewhere)
            done += 1
    finally:
        print(f"deleted {done} dead letter(s)", file=out)
    if missing:
        print(f"no dead letter with id: {', '.join(missing)}", file=out)
        return 1
    return 0
