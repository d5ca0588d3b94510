"""The instrument seam (asyncpool._telemetry): which hooks are called, when, with what.

A recording instrument logs every hook; the jobs are real, through a real
dispatcher (or its intake, standing in for a broker worker).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from asyncpool import Dispatcher, JobTimeout, Retry
from asyncpool._telemetry import BrokerEvent, Instrument, JobRun, Origin, tell_broker_event
from tests._jobs import Flaky, Gate, check_stats, guarded

# Set by a test in the submitting task; a worker never sees that value.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


class Recorder(Instrument):
    """An instrument that logs each hook as `(name, hook, detail)` and keeps each JobRun."""

    def __init__(self, name: str, log: list[tuple[str, str, object]]) -> None:
        self.name = name
        self.log = log
        self.runs: list[JobRun] = []
        self.errors: list[BaseException] = []

    def bind(self, dispatcher: Dispatcher) -> None:
        self.log.append((self.name, "bind", dispatcher.name))

    def capture(self, carrier: dict[str, str]) -> None:
        carrier[self.name] = request_id.get()
        self.log.append((self.name, "capture", request_id.get()))

    def job_queued(self, job: JobRun) -> None:
        self.log.append((self.name, "queued", job.attempt))

    async def run(self, job: JobRun, call: Callable[[], Awaitable[Any]]) -> Any:
        self.runs.append(job)
        self.log.append((self.name, "enter", job.attempt))
        try:
            return await call()
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            self.log.append((self.name, "exit", job.attempt))

    def broker_event(self, event: BrokerEvent) -> None:
        self.log.append((self.name, "broker", event.kind))


async def add(x: int, y: int = 0) -> int:
    return x + y


async def test_hooks_are_called_in_order_with_the_submitters_capture() -> None:
    """bind at construction, capture in the submitter's context, job_queued, then run per try."""
    log: list[tuple[str, str, object]] = []
    recorder = Recorder("a", log)
    d = Dispatcher(workers=1, name="pool", instruments=[recorder])
    assert log == [("a", "bind", "pool")]
    assert d.instruments == (recorder,)

    async def job(x: int) -> int:
        log.append(("job", "ran", request_id.get()))
        return x

    async with d:
        request_id.set("req-1")  # after start: the workers do not see it
        handle = await d.submit(job, 3)
        assert await guarded(handle) == 3
    assert log[1:] == [
        ("a", "capture", "req-1"),
        ("a", "queued", 0),
        ("a", "enter", 1),
        ("job", "ran", "unset"),
        ("a", "exit", 1),
    ]
    [run] = recorder.runs
    assert (run.dispatcher, run.job_id, run.task, run.attempt) == (
        "pool",
        str(handle.id),
        "test_hooks_are_called_in_order_with_the_submitters_capture.<locals>.job",
        1,
    )
    assert (run.lane, run.carrier, tuple(run.args), run.handle) == (
        None,
        {"a": "req-1"},
        (3,),
        handle,
    )


async def test_each_instruments_run_nests_the_first_outermost() -> None:
    """With instruments [a, b], a's run wraps b's, which wraps the try."""
    log: list[tuple[str, str, object]] = []

    async def job() -> None:
        log.append(("job", "ran", None))

    async with Dispatcher(workers=1, instruments=(Recorder("a", log), Recorder("b", log))) as d:
        await guarded(await d.submit(job))
    assert [entry for entry in log if entry[1] in ("enter", "exit", "ran")] == [
        ("a", "enter", 1),
        ("b", "enter", 1),
        ("job", "ran", None),
        ("b", "exit", 1),
        ("a", "exit", 1),
    ]


async def test_a_default_timeout_is_kept_and_seen_by_the_instruments(fast_clock: None) -> None:
    """A job under the dispatcher's default timeout is still instrumented; run sees JobTimeout."""
    log: list[tuple[str, str, object]] = []
    recorder = Recorder("a", log)
    never = asyncio.Event()
    async with Dispatcher(workers=1, timeout=5, instruments=[recorder]) as d:
        handle = await d.submit(never.wait)
        with pytest.raises(JobTimeout):
            await guarded(handle)
    assert [type(e) for e in recorder.errors] == [JobTimeout]
    assert [entry[1] for entry in log[1:]] == ["capture", "queued", "enter", "exit"]
    assert check_stats(d).timed_out == 1


async def test_each_try_of_a_retried_job_is_run_with_its_attempt() -> None:
    """A job queued once and tried twice: job_queued once, run at attempt 1 then 2."""
    log: list[tuple[str, str, object]] = []
    recorder = Recorder("a", log)
    async with Dispatcher(workers=1, instruments=[recorder]) as d:
        handle = await d.submit(Flaky(failures=1), retry=Retry(attempts=2, backoff=0))
        assert await guarded(handle) == 2
    assert [entry[1:] for entry in log[1:]] == [
        ("capture", "unset"),
        ("queued", 0),
        ("enter", 1),
        ("exit", 1),
        ("enter", 2),
        ("exit", 2),
    ]
    assert [type(e) for e in recorder.errors] == [ConnectionError]


async def test_local_jobs_are_named_by_function_never_by_address() -> None:
    """A task name is a qualified name (a callable object's class), never a repr with an id."""
    recorder = Recorder("a", [])
    gate = Gate(value=1)
    gate.release()
    async with Dispatcher(workers=1, instruments=[recorder]) as d:
        await guarded(await d.submit(Flaky(failures=0)))
        await guarded(await d.submit(functools.partial(functools.partial(add, 1), 2)))
        await guarded(await d.submit(gate))
        await guarded(await d.submit(add(1)))
    assert [run.task for run in recorder.runs] == ["Flaky", "add", "Gate.process", "add"]


async def test_an_intake_job_is_named_by_its_origin_and_told_to_the_brokers_instruments() -> None:
    """A remote job carries its origin and carrier; the broker's instruments join, once each."""
    log: list[tuple[str, str, object]] = []
    own, brokers = Recorder("own", log), Recorder("broker", log)
    origin = Origin(job_id="j-1", task="resize", lane="high", attempt=3, args=("a.png",), kwargs={})
    async with Dispatcher(workers=1, name="w", instruments=[own]) as d:
        ended = asyncio.Event()

        class Observer:
            def job_started(self, handle: object) -> None:
                pass

            def job_ended(self, handle: object) -> None:
                ended.set()

        async with d.intake() as intake:
            await intake.capacity()
            intake.put(
                add,
                1,
                2,
                observer=Observer(),
                origin=origin,
                carrier={"traceparent": "00-x"},
                instruments=(own, brokers),
            )
            await guarded(ended.wait())
    for recorder in (own, brokers):
        [run] = recorder.runs
        assert (run.dispatcher, run.job_id, run.task, run.lane, run.attempt) == (
            "w",
            "j-1",
            "resize",
            "high",
            3,  # the third delivery: its first local try is attempt 3
        )
        assert (run.carrier, tuple(run.args)) == ({"traceparent": "00-x"}, ("a.png",))
    assert [e for e in log if e[1] == "enter"] == [("own", "enter", 3), ("broker", "enter", 3)]


@pytest.mark.parametrize(
    ("instruments", "message"),
    [
        ("metrics", "instruments must be a sequence of asyncpool.Instrument"),
        (Instrument(), "instruments must be a sequence of asyncpool.Instrument"),
        (42, "instruments must be a sequence of asyncpool.Instrument"),
        ([Instrument(), object()], "instruments must hold asyncpool.Instrument objects"),
    ],
)
def test_bad_instruments_are_refused_naming_the_argument(instruments: Any, message: str) -> None:
    """A Dispatcher refuses instruments that are not a sequence of Instrument, at construction."""
    with pytest.raises(TypeError, match=message):
        Dispatcher(instruments=instruments)


async def test_without_instruments_a_plain_job_carries_no_options() -> None:
    """No instrument, no options (the fast path); any instrument gives each job its options."""
    instrument = Instrument()
    async with (
        Dispatcher(workers=1) as plain,
        Dispatcher(workers=1, instruments=[instrument]) as instrumented,
    ):
        fast = await plain.submit(add, 1)
        slow = await instrumented.submit(add, 1)
        assert (await guarded(fast), await guarded(slow)) == (1, 1)
    assert fast._opts is None
    assert slow._opts is not None
    assert slow._opts.instruments == (instrument,)
    assert plain.instruments == ()


class Broken(Instrument):
    """An instrument whose every hook but `run` raises."""

    def capture(self, carrier: dict[str, str]) -> None:
        raise RuntimeError("capture is broken")

    def job_queued(self, job: JobRun) -> None:
        raise RuntimeError("job_queued is broken")

    def broker_event(self, event: BrokerEvent) -> None:
        raise RuntimeError("broker_event is broken")


async def test_a_hook_that_raises_costs_its_numbers_not_the_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """capture and job_queued raising are logged; the job runs, stats add up, close() ends."""

    async def double(x: int) -> int:
        return 2 * x

    async with Dispatcher(workers=2, instruments=[Broken()]) as dispatcher:
        handle = await dispatcher.submit(double, 21)
        assert await guarded(handle) == 42
        check_stats(dispatcher)
    assert dispatcher.stats().succeeded == 1
    failed = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("failed in capture()" in m for m in failed)
    assert any("failed in job_queued()" in m for m in failed)


def test_a_broker_event_hook_that_raises_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """tell_broker_event logs a failing instrument and still tells the next one."""
    seen: list[BrokerEvent] = []

    class Seeing(Instrument):
        def broker_event(self, event: BrokerEvent) -> None:
            seen.append(event)

    event = BrokerEvent("acked", "w", "resize", "high")
    tell_broker_event((Broken(), Seeing()), event)
    assert seen == [event]
    assert any("failed in broker_event()" in r.getMessage() for r in caplog.records)
