"""The instrument seam: what metrics, tracing and the job log are told, and when.

An `Instrument` is given to a dispatcher (`Dispatcher(instruments=[...])`)
or to a broker (`JetStreamBroker(..., instruments=[...])`, for the jobs its
`serve()` runs and the trace context its `submit()` sends). It is told:

* `bind(dispatcher)`: once, when a dispatcher that uses it is made;
* `capture(carrier)`: when a job is submitted, in the submitter's context
  (a tracer writes the current trace context into `carrier`; through a
  broker the carrier travels in the job's envelope);
* `job_queued(job)`: when a job is queued (a job log starts its record and
  watches the handle for the end);
* `run(job, call)`: around each try, in the worker that runs it (a tracer
  opens a span around `call()`, metrics time it);
* `broker_event(event)`: what a broker worker does with deliveries
  (fetched, acked, redelivered, dead-lettered, lease extended).

Zero cost when unused: a dispatcher without instruments keeps its fast
paths (a job without options carries nothing); a dispatcher with
instruments gives every job options, so its jobs take the options path,
which is where `run` is called. Nothing here imports a telemetry library:
`asyncpool.metrics` and `asyncpool.tracing` do, behind their extras.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher
    from ._handle import JobHandle
    from ._options import JobOptions

_log = logging.getLogger("asyncpool")

__all__ = (
    "BrokerEvent",
    "Instrument",
    "JobRun",
    "Origin",
    "announce_queued",
    "capture_all",
    "hook_failed",
    "tell_broker_event",
    "check_instruments",
    "job_run",
    "listens",
    "run_instrumented",
    "task_name",
)

BrokerEventKind = Literal["fetched", "acked", "redelivered", "dead_lettered", "lease_extended"]


@dataclasses.dataclass(slots=True)
class JobRun:
    """One job as an instrument sees it (at `job_queued`, and at each try in `run`).

    Made per try: not frozen, since a frozen dataclass's `__init__` costs
    several times more; instruments read it and must not change it.

    Attributes:
        dispatcher: The name of the dispatcher that runs it ("" without one).
        job_id: The job's id: a local handle's id as a string, or a remote
            job's id.
        task: The job's name (a function's qualified name, or a remote task's).
        attempt: The try this is (1 for the first; 0 at `job_queued`).
        lane: The broker lane it came from, None for a local job.
        carrier: What the submitter's instruments captured (a trace context),
            or None.
        args: The job's positional arguments (a remote job's, as sent).
        kwargs: The job's keyword arguments (a remote job's, as sent).
        handle: The job's local handle.
        submitted_at: When a remote job was submitted (seconds since the
            epoch, on the submitter's clock); None for a local job (its
            handle's `queued_at` says when, on the loop's clock).
    """

    dispatcher: str
    job_id: str
    task: str
    attempt: int
    lane: str | None
    carrier: Mapping[str, str] | None
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    handle: JobHandle[Any]
    submitted_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    """Where a remote job came from: how its instruments should name it."""

    job_id: str
    task: str
    lane: str | None
    attempt: int
    """Its delivery count: the attempt its first local try is."""
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    submitted_at: float | None = None
    """When it was submitted (seconds since the epoch, the submitter's clock)."""


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerEvent:
    """Something a broker worker did with one delivery.

    Attributes:
        kind: "fetched", "acked", "redelivered" (fetched again after an
            earlier delivery), "dead_lettered" or "lease_extended".
        dispatcher: The name of the dispatcher serving the broker.
        task: The task named in the job's envelope (None when it did not decode).
        lane: The lane the delivery came from (None when the engine does not say).
    """

    kind: BrokerEventKind
    dispatcher: str
    task: str | None
    lane: str | None


class Instrument:
    """The base class of instruments: every hook does nothing.

    Subclass it and override the hooks you need. Hooks run on the event
    loop, in the dispatcher's own code paths: keep them short, and never
    let them raise (an exception from `run` other than the job's own would
    fail the job).
    """

    def bind(self, dispatcher: Dispatcher) -> None:
        """A dispatcher that uses this instrument was made."""

    def capture(self, carrier: dict[str, str]) -> None:
        """A job is being submitted: write what should travel with it into `carrier`."""

    def job_queued(self, job: JobRun) -> None:
        """A job was queued (`job.attempt` is 0)."""

    async def run(self, job: JobRun, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run one try of the job: `return await call()`, with whatever goes around it."""
        return await call()

    def broker_event(self, event: BrokerEvent) -> None:
        """A broker worker fetched, acked, dead-lettered a delivery, or extended its lease."""


def check_instruments(instruments: object, name: str = "instruments") -> tuple[Instrument, ...]:
    """The instruments as a tuple, each checked to be an `Instrument`.

    Raises:
        TypeError: `instruments` is not a sequence of `asyncpool.Instrument`.
    """
    if isinstance(instruments, (str, bytes)) or not isinstance(instruments, Sequence):
        raise TypeError(
            f"{name} must be a sequence of asyncpool.Instrument (a list or tuple), "
            f"got {instruments!r}"
        )
    for item in instruments:
        if not isinstance(item, Instrument):
            raise TypeError(f"{name} must hold asyncpool.Instrument objects, got {item!r}")
    return tuple(instruments)


async def run_instrumented(
    instruments: tuple[Instrument, ...], job: JobRun, call: Callable[[], Awaitable[Any]]
) -> Any:
    """Run `call` inside every instrument's `run`, the first one outermost."""
    if len(instruments) == 1:
        return await instruments[0].run(job, call)
    for instrument in reversed(instruments):
        call = _wrapped(instrument, job, call)
    return await call()


def _wrapped(
    instrument: Instrument, job: JobRun, call: Callable[[], Awaitable[Any]]
) -> Callable[[], Awaitable[Any]]:
    def around() -> Awaitable[Any]:
        return instrument.run(job, call)

    return around


def job_run(handle: JobHandle[Any], opts: JobOptions, dispatcher: str, attempt: int) -> JobRun:
    """The `JobRun` of a job with instruments, at its `attempt` (0: just queued)."""
    origin = opts.origin
    if origin is None:
        task = task_name(handle.fn)
        return JobRun(
            dispatcher,
            str(handle.id),
            task,
            attempt,
            None,
            opts.carrier,
            handle.args,
            handle.kwargs,
            handle,
        )
    return JobRun(
        dispatcher,
        origin.job_id,
        origin.task,
        origin.attempt + attempt - 1 if attempt else 0,
        origin.lane,
        opts.carrier,
        origin.args,
        origin.kwargs,
        handle,
        origin.submitted_at,
    )


def task_name(fn: object) -> str:
    """How instruments name a local job: its function's qualified name.

    Never a `repr` with an address in it: the name is a metric label and a
    span name, so one per object would grow them without bound. A callable
    object is named by its class.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else type(fn).__qualname__


def announce_queued(handle: JobHandle[Any], opts: JobOptions, dispatcher: str) -> None:
    """Tell a job's instruments it was queued (those that listen: see `listens`)."""
    job = None
    for instrument in opts.instruments:
        if listens(instrument, "job_queued"):
            if job is None:
                job = job_run(handle, opts, dispatcher, 0)
            try:
                instrument.job_queued(job)
            except Exception:
                hook_failed(instrument, "job_queued")


def capture_all(instruments: tuple[Instrument, ...]) -> dict[str, str] | None:
    """What `instruments` capture for a job submitted now (None for nothing)."""
    carrier: dict[str, str] = {}
    for instrument in instruments:
        if listens(instrument, "capture"):
            try:
                instrument.capture(carrier)
            except Exception:
                hook_failed(instrument, "capture")
    return carrier or None


def tell_broker_event(instruments: tuple[Instrument, ...], event: BrokerEvent) -> None:
    """Tell `instruments` what a broker worker did with a delivery."""
    for instrument in instruments:
        try:
            instrument.broker_event(event)
        except Exception:
            hook_failed(instrument, "broker_event")


def hook_failed(instrument: Instrument, hook: str) -> None:
    """An instrument's hook raised: say so, and go on as if it had not been called.

    A broken instrument must cost its own numbers, never a job or a delivery.
    """
    _log.exception(
        "asyncpool: instrument %r failed in %s(); it is skipped this time", instrument, hook
    )


def listens(instrument: Instrument, hook: str) -> bool:
    """Whether `instrument`'s class overrides `hook` (the base class's hooks do nothing)."""
    return getattr(type(instrument), hook) is not getattr(Instrument, hook)
