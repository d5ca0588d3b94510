"""An aiohttp application that queues background jobs on an asyncpool dispatcher.

This example owns a complete, runnable service built on `asyncpool.aiohttp`:
a route that accepts work and answers at once, jobs that outlive the request,
and a shutdown that drains, cancels what is left and logs it.

Run it from the repository root (it listens on 127.0.0.1 only):

```console
$ python -m examples.aiohttp_app --port 8080
$ python -m examples.aiohttp_app --port 8080 --loop uvloop --grace 5 --workers 16 \\
      --record /tmp/completed-jobs.txt
```

Routes:

* `POST /jobs?seconds=0.1` queues a job that works for `seconds` (an
  `asyncio.sleep` stands in for real I/O), then appends its id to the record
  file. The answer comes at once: `202 {"job": 17}`.
* `POST /jobs?seconds=0.1&follow=1` does the same, then keeps the response
  open and streams the job's state as JSON lines: `{"job": 17, "state":
  "QUEUED"}` at once, the final state when the job ends. A client that
  disconnects cancels this handler (the server runs with
  `handler_cancellation=True`), never the job.
* `GET /stats` returns the dispatcher's counters.

The record file is `--record`, else `$ASYNCPOOL_EXAMPLE_RECORD`, else
`asyncpool-completed-jobs.txt` in the temporary directory
(`tempfile.gettempdir()`: `/tmp` on most Unix systems), so that a run leaves
nothing in the working directory; the server logs its path when it starts.
It gets one line per completed job, its id, appended.

On SIGTERM or Ctrl+C, aiohttp stops listening and waits for the requests in
flight, in two steps of up to `shutdown_timeout` each (5 s here; aiohttp's
default is 60 s). In aiohttp 3.14, the version this was measured with, it
first waits for each handler to finish; then it fails the request's body
stream, which only a handler still reading its body notices, and waits
again; only then does it cancel the handler. A follower (`follow=1`) reads
no body, so it holds the shutdown up for 10 s, twice `shutdown_timeout`.
Then asyncpool lets the jobs finish for `--grace` seconds, cancels the rest,
and logs each unfinished job (WARNING, logger `asyncpool`) to stderr. Every
accepted job id therefore ends up either in the record or in the log.

Try it:

```console
$ curl -X POST 'http://127.0.0.1:8080/jobs?seconds=2'
$ curl -N -X POST 'http://127.0.0.1:8080/jobs?seconds=2&follow=1'
$ curl http://127.0.0.1:8080/stats
```
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import logging
import math
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from aiohttp import web

import asyncpool
import asyncpool.aiohttp

__all__ = ("CompletionRecord", "RecordedSleep", "main", "make_app")

logger = logging.getLogger("examples.aiohttp_app")

RECORD_ENV = "ASYNCPOOL_EXAMPLE_RECORD"
RECORD_NAME = "asyncpool-completed-jobs.txt"  # in the temporary directory, by default
MAX_SECONDS = 60.0
# aiohttp's `shutdown_timeout` (its default is 60 s): at shutdown it waits
# up to this long for the requests in flight, then up to this long again
# before it cancels them (see the module docstring). A follower (`follow=1`)
# is such a request, and the dispatcher's grace period only starts after
# these waits.
HANDLER_SHUTDOWN_TIMEOUT = 5.0


class CompletionRecord:
    """An append-only file with one line per completed job: the job's id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def open(self) -> None:
        """Open (or create) the file for appending, and log where it is."""
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        logger.info("completed jobs are recorded in %s", os.path.abspath(self.path))

    def append(self, job_id: int) -> None:
        """Record that job `job_id` completed.

        Raises:
            RuntimeError: the record is not open.
        """
        if self._fd is None:
            raise RuntimeError(f"the record {self.path} is not open")
        # One write() of one short line to an O_APPEND file: lines never
        # interleave, and there is no await in here, so a job cancelled at
        # shutdown has either recorded its line whole or not at all.
        os.write(self._fd, f"{job_id}\n".encode())

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


RECORD_KEY = web.AppKey("record", CompletionRecord)


class RecordedSleep:
    """A job: works for `seconds`, then records its id as completed."""

    def __init__(self, record: CompletionRecord, seconds: float) -> None:
        self.record = record
        self.seconds = seconds
        # asyncpool numbers a job when it is submitted, and a job does not see
        # its handle; the handler writes the number here right after submit()
        # returns. No worker can start the job before that: submit() returns
        # without giving the event loop a turn once the job is queued.
        self.job_id = 0

    async def process(self) -> int:
        """Do the work, then record the job as completed; return its id."""
        await asyncio.sleep(self.seconds)
        self.record.append(self.job_id)
        return self.job_id


def _seconds(request: web.Request) -> float:
    raw = request.query.get("seconds", "0.1")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_SECONDS:  # also refuses NaN
        raise web.HTTPBadRequest(
            text=f"seconds must be a number from 0 to {MAX_SECONDS:g}, got {raw!r}\n"
        )
    return seconds


def _state_line(handle: asyncpool.JobHandle[int]) -> bytes:
    line: dict[str, object] = {"job": handle.id, "state": handle.state.name}
    if handle.done() and not handle.cancelled() and handle.exception() is not None:
        # This handler waited for the job, so asyncpool counted the failure as
        # seen by it (it does not go to on_error): report it here.
        line["error"] = repr(handle.exception())
    return json.dumps(line).encode() + b"\n"


async def queue_job(request: web.Request) -> web.StreamResponse:
    """Queue a `RecordedSleep`; answer with its id, or follow it with `follow=1`."""
    job = RecordedSleep(request.app[RECORD_KEY], _seconds(request))
    handle = await asyncpool.aiohttp.spawn(request, job)
    job.job_id = handle.id
    if "follow" not in request.query:
        return web.json_response({"job": handle.id}, status=202)

    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    await response.write(_state_line(handle))
    try:
        # asyncio.wait, not `await handle`: awaiting the handle would tie the
        # job to this request, since a cancelled awaiter cancels the future it
        # awaits. asyncio.wait never cancels what it waits for.
        await asyncio.wait([handle])
    except asyncio.CancelledError:
        logger.info("job %d: the client went away; the job goes on", handle.id)
        raise
    await response.write(_state_line(handle))
    await response.write_eof()
    return response


async def stats(request: web.Request) -> web.Response:
    """The dispatcher's counters, as JSON."""
    snapshot = asyncpool.aiohttp.get_dispatcher(request).stats()
    return web.json_response(dataclasses.asdict(snapshot))


def make_app(record_path: Path, *, grace: float, workers: int) -> web.Application:
    """Build the application.

    Raises:
        TypeError: as `asyncpool.aiohttp.setup`.
        ValueError: as `asyncpool.aiohttp.setup` (`grace` < 0, `workers` < 1).
    """
    app = web.Application()
    record = CompletionRecord(record_path)
    app[RECORD_KEY] = record

    async def keep_record_open(app: web.Application) -> AsyncIterator[None]:
        record.open()
        yield
        record.close()

    # Cleanup runs in reverse order: registered before setup(), the record is
    # closed only after the dispatcher has drained, so late jobs can write.
    app.cleanup_ctx.append(keep_record_open)
    asyncpool.aiohttp.setup(app, grace=grace, workers=workers, name="example")
    app.router.add_post("/jobs", queue_job)
    app.router.add_get("/stats", stats)
    return app


def _non_negative(text: str) -> float:
    value = float(text)
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.aiohttp_app",
        description="An aiohttp app that queues background jobs on an asyncpool dispatcher.",
    )
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (8080)")
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop (asyncio)"
    )
    parser.add_argument(
        "--grace",
        type=_non_negative,
        default=asyncpool.aiohttp.DEFAULT_GRACE,
        help="seconds to let jobs finish at shutdown before cancelling them (%(default)s)",
    )
    parser.add_argument("--workers", type=_positive_int, default=8, help="workers (8)")
    parser.add_argument(
        "--record",
        type=Path,
        default=Path(os.environ.get(RECORD_ENV) or Path(tempfile.gettempdir(), RECORD_NAME)),
        help=f"file that gets the id of each completed job (${RECORD_ENV}, else %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the server until SIGTERM or Ctrl+C."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = make_app(args.record, grace=args.grace, workers=args.workers)
    if args.loop == "uvloop":
        import uvloop  # optional: only needed for --loop uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    # run_app runs the app on this loop, turns SIGTERM and SIGINT into a
    # graceful shutdown (which runs the cleanup that drains the dispatcher),
    # and closes the loop at the end.
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        loop=loop,
        handler_cancellation=True,
        shutdown_timeout=HANDLER_SHUTDOWN_TIMEOUT,
        access_log=None,
        print=functools.partial(print, flush=True),
    )


if __name__ == "__main__":
    main()
