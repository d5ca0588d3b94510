"""asyncpool.tracing: `OpenTelemetryTracing`, recorded by the SDK's in-memory exporter.

Each test gives the instrument a `TracerProvider` of its own (the global
provider is never set); the trace context travels through the global
propagator (W3C traceparent), as it does in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from asyncpool import Dispatcher, JobTimeout, Retry
from asyncpool._telemetry import Origin
from asyncpool.tracing import OpenTelemetryTracing
from tests._jobs import Flaky, Gate, guarded


class Traces:
    """A tracer provider of the test's own and the spans it finished."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]


@pytest.fixture
def traces() -> Iterator[Traces]:
    """Spans recorded in memory; the provider is shut down after the test."""
    recorded = Traces()
    yield recorded
    recorded.provider.shutdown()


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


async def succeed(x: int) -> int:
    return x


async def test_a_job_submitted_in_a_span_runs_in_a_child_span(traces: Traces) -> None:
    """The run span is a CONSUMER child of the submitter's span, with the job's attributes."""
    tracing = OpenTelemetryTracing(tracer_provider=traces.provider)
    async with Dispatcher(workers=1, name="pool", instruments=[tracing]) as d:
        with traces.tracer.start_as_current_span("request"):
            handle = await d.submit(succeed, 1)
        assert await guarded(handle) == 1
    [request] = traces.named("request")
    [run] = traces.named("asyncpool.run succeed")
    assert ids(run)[0] == ids(request)[0]
    assert parent_id(run) == ids(request)[1]
    assert run.kind is SpanKind.CONSUMER
    assert dict(run.attributes or {}) == {
        "asyncpool.job.id": str(handle.id),
        "asyncpool.task": "succeed",
        "asyncpool.attempt": 1,
        "asyncpool.dispatcher": "pool",
        "asyncpool.outcome": "succeeded",
    }
    assert run.status.status_code is StatusCode.UNSET


async def test_a_span_opened_by_the_job_is_a_child_of_its_run_span(traces: Traces) -> None:
    """The run span is current while the job runs: the job's own spans nest under it."""
    tracing = OpenTelemetryTracing(tracer_provider=traces.provider)

    async def job() -> None:
        with traces.tracer.start_as_current_span("inside"):
            await asyncio.sleep(0)

    async with Dispatcher(workers=1, instruments=[tracing]) as d:
        await guarded(await d.submit(job))
    [inside] = traces.named("inside")
    [run] = [span for span in traces.spans() if span.name.startswith("asyncpool.run")]
    assert ids(inside)[0] == ids(run)[0]
    assert parent_id(inside) == ids(run)[1]


async def test_a_job_without_a_carrier_has_no_parent(traces: Traces) -> None:
    """A job submitted outside any span starts its own trace, even if the pool started in one."""
    tracing = OpenTelemetryTracing(tracer_provider=traces.provider)
    d = Dispatcher(workers=1, instruments=[tracing])
    with traces.tracer.start_as_current_span("lifespan"):
        await d.start()  # the workers' context holds this span
    try:
        handle = await d.submit(succeed, 1)
        assert handle._opts is not None
        assert handle._opts.carrier is None
        assert await guarded(handle) == 1
    finally:
        await d.close()
    [run] = traces.named("asyncpool.run succeed")
    assert run.parent is None


async def test_each_try_of_a_retried_job_has_its_span(traces: Traces) -> None:
    """A retried job gives one span per try, attempts 1 and 2, both children of the submitter."""
    tracing = OpenTelemetryTracing(tracer_provider=traces.provider)
    async with Dispatcher(workers=1, instruments=[tracing]) as d:
        with traces.tracer.start_as_current_span("request"):
            handle = await d.submit(Flaky(failures=1), retry=Retry(backoff=0))
        assert await guarded(handle) == 2
    [request] = traces.named("request")
    tries = traces.named("asyncpool.run Flaky")
    assert [(span.attributes or {}).get("asyncpool.attempt") for span in tries] == [1, 2]
    assert [(span.attributes or {}).get("asyncpool.outcome") for span in tries] == [
        "failed",
        "succeeded",
    ]
    assert {parent_id(span) for span in tries} == {ids(request)[1]}
    assert [span.status.status_code for span in tries] == [StatusCode.ERROR, StatusCode.UNSET]


async def test_a_failure_sets_error_status_and_records_the_exception(traces: Traces) -> None:
    """A failed try is an ERROR span with an `exception` event naming the error."""
    tracing = OpenTelemetryTracing(tracer_provider=traces.provider)

    async def fail() -> None:
        raise ValueError("boom")

    async with Dispatcher(workers=1, instruments=[tracing]) as d:
        handle = await d.submit(fail)
        with pytest.raises(ValueError, match="boom"):
            await guarded(handle)
    [run] = [span for span in traces.spans() if span.name.startswith("asyncpool.run")]
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == "ValueError: boom"
    assert (run.attributes or {}).get("asyncpool.outcome") == "failed"
    [event] = run.events
    assert event.name == "exception"
    assert dict(event.attributes or {})["exception.type"] == "ValueError"
    assert dict(event.attributes or {})["exception.message"] == "boom"


async def test_a_timeout_is_an_error_with_outcome_timed_out(
    traces: Traces, fast_clock: None
) -> None:
    """A try stopped by its timeout records the JobTimeout and says timed_out."""
    tracing = OpenTelemetryTracing(tracer_provider=traces.provider)
    never = asyncio.Event()
    async with Dispatcher(workers=1, instruments=[tracing]) as d:
        handle = await d.submit(never.wait, timeout=2)
        with pytest.raises(JobTimeout):
            await guarded(handle)
    [run] = traces.named("asyncpool.run Event.wait")
    assert run.status.status_code is StatusCode.ERROR
    assert (run.attributes or {}).get("asyncpool.outcome") == "timed_out"
    [event] = run.events
    assert dict(event.attributes or {})["exception.type"] == "asyncpool._errors.JobTimeout"


async def test_a_cancelled_job_is_not_an_error(traces: Traces) -> None:
    """A cancelled try says cancelled, keeps an unset status, and the job still ends cancelled."""
    tracing = OpenTelemetryTracing(tracer_provider=traces.provider)
    gate = Gate()
    async with Dispatcher(workers=1, instruments=[tracing]) as d:
        handle = await d.submit(gate)
        await guarded(gate.started.wait())
        handle.cancel()
        with pytest.raises(asyncio.CancelledError):
            await guarded(handle)
    assert gate.saw_cancel
    [run] = traces.named("asyncpool.run Gate.process")
    assert (run.attributes or {}).get("asyncpool.outcome") == "cancelled"
    assert run.status.status_code is StatusCode.UNSET
    assert run.events == ()
    assert d.stats().cancelled == 1


async def test_a_remote_job_continues_the_trace_of_its_carrier(traces: Traces) -> None:
    """A job from a broker lane takes its parent from the carrier it brought, with its lane."""
    tracing = OpenTelemetryTracing(tracer_provider=traces.provider)
    carrier: dict[str, str] = {}
    with traces.tracer.start_as_current_span("producer"):
        tracing.capture(carrier)
    [producer] = traces.named("producer")
    trace_id, span_id = ids(producer)
    assert list(carrier) == ["traceparent"]
    assert carrier["traceparent"].startswith(f"00-{trace_id:032x}-{span_id:016x}-")
    origin = Origin(job_id="j-9", task="resize", lane="low", attempt=2, args=(), kwargs={})
    ended = asyncio.Event()

    class Observer:
        def job_started(self, handle: object) -> None:
            pass

        def job_ended(self, handle: object) -> None:
            ended.set()

    async with Dispatcher(workers=1, name="w") as d, d.intake() as intake:
        await intake.capacity()
        intake.put(
            succeed, 1, observer=Observer(), origin=origin, carrier=carrier, instruments=(tracing,)
        )
        await guarded(ended.wait())
    [run] = traces.named("asyncpool.run resize")
    assert ids(run)[0] == trace_id
    assert parent_id(run) == span_id
    attributes = dict(run.attributes or {})
    assert (attributes["asyncpool.job.id"], attributes["asyncpool.lane"]) == ("j-9", "low")
    assert attributes["asyncpool.attempt"] == 2


def test_capture_outside_a_span_writes_nothing() -> None:
    """With no current span there is no trace context to send."""
    carrier: dict[str, str] = {}
    OpenTelemetryTracing(tracer_provider=trace.NoOpTracerProvider()).capture(carrier)
    assert carrier == {}


def test_a_bad_tracer_provider_is_refused_naming_it() -> None:
    """tracer_provider must be a TracerProvider: anything else fails at construction."""
    with pytest.raises(TypeError, match="tracer_provider must be an opentelemetry"):
        OpenTelemetryTracing(tracer_provider="global")  # type: ignore[arg-type]
