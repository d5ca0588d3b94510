"""A small FastAPI app whose routes queue jobs in an asyncpool Dispatcher.

Run it (from the repository root, with the `fastapi` extra and uvicorn installed):

    ASYNCPOOL_EXAMPLE_RECORD=/tmp/done.txt uvicorn examples.fastapi_app:app

then queue a job and see it recorded:

    curl -X POST 'http://127.0.0.1:8000/orders/7/receipt?seconds=0.5'
    cat /tmp/done.txt

(Without the variable, the record file is `asyncpool-example-completed-jobs.txt`
in the system's temporary directory, `tempfile.gettempdir()`: `/tmp` on most
Linux systems.)

Routes:

* `POST /orders/{order_id}/receipt?seconds=0.1`: queues a job that takes
  `seconds` (it stands for rendering and mailing a receipt), then appends
  `receipt <order_id>` to the record file. Answers 202 with the id of the
  job it accepted: `{"job_id": 1, "order_id": 7}`.
* `POST /orders/{order_id}/receipt/follow?seconds=0.1`: the same job, but the
  response streams its progress as JSON lines: first the job id, then its
  final state (`{"job_id": 1, "state": "succeeded"}`). A client that goes
  away stops following; the job goes on. If the server begins to shut down
  first, the last line says so instead, with the job's state then
  (`{"job_id": 1, "state": "running", "server": "shutting down"}`), and the
  stream ends: the job goes on for the grace period, and then is either in
  the record file or in the shutdown log.
* `POST /orders/{order_id}/notify`: the FastAPI `BackgroundTasks` way, from
  `asyncpool.fastapi`: a blocking function, submitted once the response is
  sent, that appends `notified <order_id>` to the record file.
* `GET /stats`: the dispatcher's counters, and its latencies in seconds,
  rounded to microseconds.

Settings, from the environment:

* `ASYNCPOOL_EXAMPLE_RECORD`: the append-only file where finished jobs write
  their line (default `asyncpool-example-completed-jobs.txt` in
  `tempfile.gettempdir()`, not in the working directory);
* `ASYNCPOOL_EXAMPLE_WORKERS`: how many jobs run at once (default 8);
* `ASYNCPOOL_EXAMPLE_GRACE`: at shutdown, how many seconds jobs get to finish
  before the rest are cancelled (default 10).

On SIGTERM or Ctrl+C, uvicorn finishes the requests in flight, then runs the
lifespan's shutdown: queued and running jobs get the grace period, the rest
are cancelled, and every job that did not finish is logged at WARNING on the
`asyncpool` logger with its id, so that each job id a client was given either
appears in the record file or in the log. uvicorn waits for the open
connections before it runs the lifespan's shutdown, so the `/follow` streams
end as soon as the signal arrives (they wait for `shutting_down`); without
that, one client following a long job would keep the server up for as long
as the job runs, and the grace period would never start. So the server
exits about `ASYNCPOOL_EXAMPLE_GRACE` seconds after the signal at most.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from asyncpool.fastapi import BackgroundTasks, DispatcherDep, dispatcher_lifespan, shutting_down

# uvicorn configures its own loggers only; this makes the asyncpool shutdown
# report (and this module's lines) reach stderr with their logger names.
logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
logger = logging.getLogger(__name__)

RECORD = Path(
    os.environ.get("ASYNCPOOL_EXAMPLE_RECORD")
    or Path(tempfile.gettempdir()) / "asyncpool-example-completed-jobs.txt"
)
WORKERS = int(os.environ.get("ASYNCPOOL_EXAMPLE_WORKERS", "8"))
GRACE = float(os.environ.get("ASYNCPOOL_EXAMPLE_GRACE", "10"))

Seconds = Annotated[float, Query(ge=0.0, le=60.0, description="how long the job takes")]


def record(line: str) -> None:
    """Append one line to the record file.

    One small write to a file opened for appending: lines from concurrent
    jobs never interleave, and a line is on disk once the job has returned.
    """
    with RECORD.open("a", encoding="utf-8") as file:
        file.write(line + "\n")


async def send_receipt(order_id: int, seconds: float) -> None:
    """The job: take `seconds`, then record that the receipt went out."""
    await asyncio.sleep(seconds)  # stands for rendering and mailing the receipt
    # Nothing is awaited after this point, so a job that wrote its line has
    # finished: it cannot be cancelled afterwards and reported unfinished too.
    record(f"receipt {order_id}")


def send_notification(order_id: int) -> None:
    """A blocking background task: it runs in one of the dispatcher's worker threads."""
    record(f"notified {order_id}")


class Accepted(BaseModel):
    """The answer to a queued job: the id the dispatcher gave it."""

    job_id: int
    order_id: int


class Queued(BaseModel):
    """The answer to a notification: it will be submitted after this response."""

    order_id: int


app = FastAPI(
    title="asyncpool example",
    lifespan=dispatcher_lifespan(workers=WORKERS, grace=GRACE, name="example"),
)


@app.post("/orders/{order_id}/receipt", status_code=202)
async def queue_receipt(
    order_id: int, dispatcher: DispatcherDep, seconds: Seconds = 0.1
) -> Accepted:
    """Queue the receipt job and answer with its id at once."""
    # When the job queue is full, this waits for room: the client waits
    # too, which is the backpressure. Use submit_nowait and answer 503 to
    # refuse instead.
    handle = await dispatcher.submit(send_receipt, order_id, seconds)
    return Accepted(job_id=handle.id, order_id=order_id)


@app.post("/orders/{order_id}/receipt/follow", status_code=202)
async def follow_receipt(
    order_id: int, request: Request, dispatcher: DispatcherDep, seconds: Seconds = 0.1
) -> StreamingResponse:
    """Queue the receipt job, then stream its id and, when it ends, its state."""
    handle = await dispatcher.submit(send_receipt, order_id, seconds)

    async def progress() -> AsyncIterator[str]:
        yield json.dumps({"job_id": handle.id, "order_id": order_id}) + "\n"
        try:
            # Not `await handle`: a task awaiting a handle cancels the job
            # when it is cancelled itself, as it would an asyncio.Task, and
            # Starlette cancels this generator when the client disconnects.
            # asyncio.wait leaves the job alone. The server waits for this
            # stream before it runs the lifespan's shutdown, which gives the
            # job its grace period; so the stream also ends when the server
            # begins to shut down.
            await asyncio.wait(
                [handle, shutting_down(request)], return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            logger.info("client stopped following job %d; the job goes on", handle.id)
            raise
        if not handle.done():
            logger.info("stopped following job %d: the server is shutting down", handle.id)
            notice = {"job_id": handle.id, "state": handle.state.value, "server": "shutting down"}
            yield json.dumps(notice) + "\n"
            return
        outcome = {"job_id": handle.id, "state": handle.state.value}
        if not handle.cancelled() and handle.exception() is not None:
            outcome["error"] = repr(handle.exception())
        yield json.dumps(outcome) + "\n"

    return StreamingResponse(progress(), status_code=202, media_type="application/x-ndjson")


@app.post("/orders/{order_id}/notify", status_code=202)
async def notify(order_id: int, background_tasks: BackgroundTasks) -> Queued:
    """Add a background task; the dispatcher gets it once this response is sent."""
    background_tasks.add_task(send_notification, order_id)
    return Queued(order_id=order_id)


@app.get("/stats")
async def stats(dispatcher: DispatcherDep) -> dict[str, Any]:
    """The dispatcher's counters (workers, idle, busy, queued, submitted, ...) and latencies."""
    return to_microseconds(dataclasses.asdict(dispatcher.stats()))


def to_microseconds(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with every float (a latency in seconds) rounded to microseconds, nested too.

    The loop's clock gives durations such as 0.0049999999999954525; six
    decimals are all that mean anything in a latency, and all a reader wants.
    """
    rounded: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, float):
            rounded[name] = round(value, 6)
        elif isinstance(value, dict):
            rounded[name] = to_microseconds(value)  # a Latency's percentiles
        else:
            rounded[name] = value
    return rounded
