"""`python -m asyncpool worker MODULE:BROKER` and `python -m asyncpool dead-letters MODULE:BROKER`.

The worker process: import the module that registers the tasks, take its
broker, run a `Dispatcher(workers=N)` and `broker.serve()` until SIGTERM or
SIGINT. Then, in this order: stop taking jobs and hand the unstarted ones
back at once (another worker takes them now, not after a lease); let the
running ones finish within the grace period; cut short and hand back what is
still running; print what happened to stderr; exit 0.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import sys
from typing import TextIO

from ._broker import Broker
from ._dispatcher import Dispatcher
from ._serve import ServeReport
from ._stats import ShutdownReport

__all__ = ("WorkerUsageError", "load_broker", "run_dead_letters", "run_worker")


class WorkerUsageError(Exception):
    """A command-line argument that does not name a usable broker."""


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
    """Serve `broker` on a fresh dispatcher until SIGTERM/SIGINT; then stop gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with broker:
            dispatcher = Dispatcher(workers=workers, name="worker")
            await dispatcher.start()
            try:
                report, shutdown = await _serve_until_stopped(broker, dispatcher, stop, grace, out)
            finally:
                if not dispatcher.closed:
                    await dispatcher.close(cancel=True)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    print(f"asyncpool worker: stopped: {report.summary()}", file=out, flush=True)
    if report.handed_back_running:
        print(
            f"asyncpool worker: cut short after the {grace:g} s grace and handed back: "
            + ", ".join(report.handed_back_running),
            file=out,
            flush=True,
        )
    print(f"asyncpool worker: dispatcher {shutdown!r}", file=out, flush=True)
    return report


async def _serve_until_stopped(
    broker: Broker, dispatcher: Dispatcher, stop: asyncio.Event, grace: float, out: TextIO
) -> tuple[ServeReport, ShutdownReport]:
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
    finally:
        stop.set()
        stopping.cancel()
    print("asyncpool worker: stopping: unstarted jobs handed back", file=out, flush=True)
    shutdown = await dispatcher.close(timeout=grace)
    return await serving, shutdown


async def run_dead_letters(broker: Broker, action: str, ids: list[str], out: TextIO) -> int:
    """List dead letters, or requeue some (`ids`) or all (`ids == ["--all"]`)."""
    requeue = getattr(broker, "requeue", None)
    listing = getattr(broker, "dead_letters", None)
    if requeue is None or listing is None:
        raise WorkerUsageError(f"{broker!r} keeps no dead letters")
    async with broker:
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
        chosen = letters if ids == ["--all"] else [d for d in letters if d.id in set(ids)]
        missing = set(ids) - {d.id for d in chosen} - {"--all"}
        for letter in chosen:
            await requeue(letter)
        print(f"requeued {len(chosen)} job(s)", file=out)
        if missing:
            print(f"no dead letter with id: {', '.join(sorted(missing))}", file=out)
            return 1
        return 0
