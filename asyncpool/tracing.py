"""`OpenTelemetryTracing`: a span around each try of a job, a child of the span that submitted it.

```python
from asyncpool import Dispatcher
from asyncpool.tracing import OpenTelemetryTracing

tracing = OpenTelemetryTracing()  # the global tracer provider, unless given one
dispatcher = Dispatcher(workers=16, name="thumbnails", instruments=[tracing])
```

A job runs in a worker's task, not in the context of the code that
submitted it, so the trace context has to travel with the job: at submit,
`capture` writes the submitter's context into the job's carrier with the
global propagator (W3C `traceparent` and `baggage` by default); through a
broker the carrier rides in the job's envelope, to another process or
machine. Around each try, `run` takes the parent from that carrier, and
only from it: a job submitted outside any span starts a trace of its own,
whatever span was current when the dispatcher started. The try's span is
the current span while the job runs, so spans the job opens are its
children.

`asyncpool` itself never imports this module; opentelemetry-api comes with
the `otel` extra (`pip install 'asyncpool-dispatch[otel]'`). Spans are
recorded only where an SDK (opentelemetry-sdk) is set up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
except ModuleNotFoundError as exc:
    # The bare error ("No module named 'opentelemetry'") does not say that
    # an extra of asyncpool brings it.
    raise ModuleNotFoundError(
        f"asyncpool.tracing needs opentelemetry-api ({exc}): "
        "pip install 'asyncpool-dispatch[otel]'",
        name=exc.name,
    ) from exc

from ._errors import JobTimeout
from ._telemetry import Instrument, JobRun

__all__ = ("OpenTelemetryTracing",)

_SCOPE = "asyncpool"
_EMPTY = Context()  # immutable: the context of a job that brought none


class OpenTelemetryTracing(Instrument):
    """An instrument that traces each try of a job as an OpenTelemetry span.

    Give it to a dispatcher (`Dispatcher(instruments=[tracing])`), and to a
    broker (`JetStreamBroker(..., instruments=[tracing])`) so that its
    `submit()` sends the trace context along and its `serve()` continues it.

    Each try is a span named `asyncpool.run <task>`, of kind CONSUMER,
    current while the try runs, with the attributes `asyncpool.job.id`,
    `asyncpool.task`, `asyncpool.attempt` (1 for the first try),
    `asyncpool.dispatcher` (its name, "" without one), `asyncpool.lane`
    (for a job from a broker lane) and `asyncpool.outcome`: `succeeded`,
    `failed`, `timed_out` or `cancelled`. A failed or timed-out try records
    its exception and has the status ERROR; a cancelled one keeps an unset
    status (cancelling is not an error), and its `CancelledError` goes on
    unchanged. A retried job has one span per try, each a child of the
    submitter's span.

    Args:
        tracer_provider: Where the spans go; the global tracer provider
            (`opentelemetry.trace.set_tracer_provider`) when None, looked
            up when the first span starts, so it may be set later.

    Raises:
        TypeError: `tracer_provider` is not an OpenTelemetry `TracerProvider`.
    """

    def __init__(self, *, tracer_provider: TracerProvider | None = None) -> None:
        if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
            raise TypeError(
                "tracer_provider must be an opentelemetry.trace.TracerProvider or None, "
                f"got {tracer_provider!r}"
            )
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)

    def capture(self, carrier: dict[str, str]) -> None:
        """Write the submitter's trace context into the job's carrier."""
        propagate.inject(carrier)

    async def run(self, job: JobRun, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run the try inside its span, a child of the context the job's carrier holds."""
        carrier = job.carrier
        # From an empty context, not the worker's: the worker task copied the
        # context current when the dispatcher started, which is nobody's
        # parent. The carrier's baggage comes along with its span.
        parent = propagate.extract(carrier, context=_EMPTY) if carrier else _EMPTY
        attributes: dict[str, str | int] = {
            "asyncpool.job.id": job.job_id,
            "asyncpool.task": job.task,
            "asyncpool.attempt": job.attempt,
            "asyncpool.dispatcher": job.dispatcher,
        }
        if job.lane is not None:
            attributes["asyncpool.lane"] = job.lane
        span = self._tracer.start_span(
            f"asyncpool.run {job.task}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        # Made current by hand rather than with `start_as_current_span`: one
        # context switch instead of two per job, and the outcome is recorded
        # here (that context manager would take a cancellation for an error).
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            result = await call()
        except asyncio.CancelledError:
            span.set_attribute("asyncpool.outcome", "cancelled")
            raise
        except BaseException as exc:
            outcome = "timed_out" if isinstance(exc, JobTimeout) else "failed"
            span.set_attribute("asyncpool.outcome", outcome)
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        else:
            span.set_attribute("asyncpool.outcome", "succeeded")
        finally:
            otel_context.detach(token)
            span.end()
        return result

    def __repr__(self) -> str:
        return "<OpenTelemetryTracing>"
