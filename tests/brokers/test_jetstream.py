"""The JetStream broker's contract in one process, on real servers (machine 2.9 and bundled).

Producer and worker share the process here (a `Dispatcher` and
`broker.serve()` beside `broker.submit()`), so a job can signal the test
through events. Worker processes, kills and restarts are in
test_jetstream_chaos.py, but for the last section: a server that is not
there or goes away (the broker's connect, close and log lines, and what
`python -m asyncpool worker` and `dead-letters` do about it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest

from asyncpool import Dispatcher, JobState, Retry
from asyncpool.brokers import (
    MsgpackCodec,
    PickleCodec,
    RemoteJobError,
    ServeReport,
    current_job,
)
from asyncpool.jetstream import JetStreamBroker

from ._servers import (
    ENV_ACK_WAIT,
    ENV_NAME,
    ENV_RECORDS,
    ENV_URL,
    ROOT,
    WORKER_TARGET,
    WorkerFleet,
    WorkerProcess,
    free_port,
    read_records,
    runs_by_id,
    wait_for_records,
)
from .chaos_tasks import ChaosApp
from .conftest import PrivateNats

pytestmark = pytest.mark.timeout(30)


class Gate:
    """Events a job waits on and sets, shared between the test and its tasks."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.runs: list[tuple[str, int]] = []


@asynccontextmanager
async def serving(
    broker: JetStreamBroker, workers: int = 4, stop: asyncio.Event | None = None
) -> AsyncIterator[list[ServeReport]]:
    """Serve `broker` on a dispatcher for the body; stop gracefully after it."""
    reports: list[ServeReport] = []
    stop = stop or asyncio.Event()
    async with Dispatcher(workers=workers) as dispatcher:
        task = asyncio.create_task(broker.serve(dispatcher, stop=stop))
        try:
            yield reports
        finally:
            stop.set()
            reports.append(await task)


def make_broker(url: str, name: str, **options: Any) -> JetStreamBroker:
    return JetStreamBroker(url, name=name, ack_wait=options.pop("ack_wait", 5), **options)


def register(broker: JetStreamBroker, gate: Gate) -> dict[str, Any]:
    """The test tasks, registered on `broker`."""

    @broker.task(name="add")
    async def add(x: int, y: int) -> int:
        gate.runs.append((current_job().id, current_job().attempt))
        return x + y

    @broker.task(name="mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @broker.task(name="flaky", retry=Retry(attempts=3, backoff=0.05, jitter=0))
    async def flaky(succeed_on: int) -> int:
        attempt = current_job().attempt
        gate.runs.append((current_job().id, attempt))
        if attempt < succeed_on:
            raise ValueError(f"attempt {attempt} fails")
        return attempt

    @broker.task(name="wait")
    async def wait() -> str:
        gate.started.set()
        try:
            await gate.release.wait()
        except asyncio.CancelledError:
            gate.cancelled.set()
            raise
        return "released"

    @broker.task(name="record")
    async def record(label: str) -> str:
        gate.runs.append((label, current_job().attempt))
        return label

    return {"add": add, "mul": mul, "flaky": flaky, "wait": wait, "record": record}


@dataclasses.dataclass
class Greet:
    """A Job class: rebuilt on the worker from its fields."""

    name: str

    async def process(self) -> str:
        return f"hello {self.name}"


async def test_submit_returns_results_of_every_kind_of_task(
    nats_server: str, broker_name: str
) -> None:
    """Async functions, sync functions and Job classes all come back with their results."""
    gate = Gate()
    async with make_broker(nats_server, broker_name) as broker:
        tasks = register(broker, gate)
        broker.task(Greet)
        async with serving(broker):
            add = await broker.submit(tasks["add"], 2, 3)
            mul = await broker.submit(tasks["mul"], 4, 5)
            greet = await broker.submit(Greet("ada"))
            assert (await add, await mul, await greet) == (5, 20, "hello ada")
        assert add.state is JobState.SUCCEEDED
        assert add.attempts == 1
        assert gate.runs == [(add.id, 1)]


async def test_msgpack_codec_round_trips_bytes(nats_server: str, broker_name: str) -> None:
    """With codec='msgpack', bytes arguments and results travel as they are."""
    async with make_broker(nats_server, broker_name, codec="msgpack") as broker:
        assert isinstance(broker.codec, MsgpackCodec)

        @broker.task(name="rev")
        async def rev(data: bytes) -> bytes:
            return data[::-1]

        async with serving(broker):
            assert await (await broker.submit(rev, b"\x00\x01\xff")) == b"\xff\x01\x00"


async def test_failure_is_retried_through_the_broker_with_its_attempt(
    nats_server: str, broker_name: str
) -> None:
    """A failing job runs again (nak with backoff); each run knows its attempt."""
    gate = Gate()
    async with make_broker(nats_server, broker_name) as broker:
        tasks = register(broker, gate)
        async with serving(broker) as reports:
            handle = await broker.submit(tasks["flaky"], 3)
            assert await handle == 3
        assert [attempt for _, attempt in gate.runs] == [1, 2, 3]
        assert handle.attempts == 3
        assert reports[0].retried == 2
        assert reports[0].succeeded == 1


async def test_last_failure_is_a_remote_error_and_a_dead_letter_that_requeues(
    nats_server: str, broker_name: str
) -> None:
    """After its last attempt a job fails with the remote traceback, lands in the dead
    letters, and a requeue runs it again."""
    gate = Gate()
    async with make_broker(nats_server, broker_name) as broker:
        tasks = register(broker, gate)
        async with serving(broker):
            handle = await broker.submit(tasks["flaky"], 5, retry=Retry(attempts=2, backoff=0))
            with pytest.raises(RemoteJobError) as caught:
                await handle
            assert caught.value.type_name == "builtins.ValueError"
            assert caught.value.attempts == 2
            assert "attempt 2 fails" in caught.value.traceback
            assert handle.state is JobState.FAILED
            letters = await broker.dead_letters()
            assert [(d.id, d.reason, d.attempts) for d in letters] == [(handle.id, "failed", 2)]
            await broker.requeue(handle.id)
            again = broker.handle(handle.id)
            # Requeued, it is delivered anew (attempt 1) and fails its two attempts again.
            with pytest.raises(RemoteJobError):
                await again
        assert [a for _, a in gate.runs] == [1, 2, 1, 2]
        assert [d.id for d in await broker.dead_letters()] == [handle.id]


async def test_registered_error_class_is_rebuilt(nats_server: str, broker_name: str) -> None:
    """A job's own exception class, registered as safe, is raised again by the awaiter."""

    class OutOfStock(Exception):
        pass

    async with make_broker(nats_server, broker_name) as broker:
        broker.register_error(OutOfStock)

        @broker.task(name="buy")
        async def buy(item: str) -> None:
            raise OutOfStock(item)

        async with serving(broker):
            with pytest.raises(OutOfStock) as caught:
                await (await broker.submit(buy, "socks"))
        assert caught.value.args == ("socks",)
        assert isinstance(caught.value.__cause__, RemoteJobError)


async def test_unknown_task_and_poison_payload_are_dead_letters_and_serving_goes_on(
    nats_server: str, broker_name: str
) -> None:
    """A name the worker did not register, and bytes that are no envelope, become dead
    letters; the next job still runs."""
    gate = Gate()
    async with (
        make_broker(nats_server, broker_name) as worker_side,
        make_broker(nats_server, broker_name) as other,
    ):
        tasks = register(worker_side, gate)

        @other.task(name="only-elsewhere")
        async def only_elsewhere() -> None:
            pass

        async with serving(worker_side) as reports:
            stranger = await other.submit(only_elsewhere)
            with pytest.raises(RemoteJobError) as caught:
                await stranger
            assert caught.value.state == "dead"
            assert caught.value.type_name.endswith("UnknownTask")
            assert worker_side._nc is not None
            await worker_side._nc.jetstream().publish(worker_side.subject_for(), b"\xffgarbage")
            assert await (await worker_side.submit(tasks["add"], 1, 1)) == 2
        reasons = sorted(d.reason for d in await worker_side.dead_letters())
        assert reasons == ["undecodable", "unknown task"]
        assert reports[0].refused == 2


# Regression: a payload the worker could not read got no record, so the
# submitter's handle waited for ever.
async def test_payload_the_worker_cannot_read_still_ends_its_handle(
    nats_server: str, broker_name: str
) -> None:
    """A pickle signed with another secret is a dead letter, and its submitter hears so."""
    gate = Gate()
    async with (
        make_broker(nats_server, broker_name, codec=PickleCodec(secret=b"worker" * 4)) as worker,
        make_broker(nats_server, broker_name, codec=PickleCodec(secret=b"other" * 4)) as producer,
    ):
        register(worker, gate)
        tasks = register(producer, gate)
        async with serving(worker) as reports:
            handle = await producer.submit(tasks["add"], 1, 2)
            with pytest.raises(RemoteJobError) as caught:
                await handle
        assert caught.value.state == "dead"
        assert [letter.id for letter in await worker.dead_letters()] == [handle.id]
        assert reports[0].refused == 1
        assert gate.runs == []


# Regression: the worker wrote the record in its own codec, which a producer
# using another one could not read.
async def test_record_goes_back_in_the_codec_the_job_came_in(
    nats_server: str, broker_name: str
) -> None:
    """A msgpack producer and a JSON worker: the result still reaches the producer."""
    gate = Gate()
    async with (
        make_broker(nats_server, broker_name) as worker,
        make_broker(nats_server, broker_name, codec="msgpack") as producer,
    ):
        register(worker, gate)
        tasks = register(producer, gate)
        async with serving(worker):
            assert await (await producer.submit(tasks["add"], 2, 3)) == 5


# Regression: a job whose result could not be encoded was counted as succeeded.
async def test_result_that_cannot_travel_is_a_failure_everywhere(
    nats_server: str, broker_name: str
) -> None:
    """The submitter gets a TypeError naming the problem, and the report counts a failure."""
    async with make_broker(nats_server, broker_name) as broker:

        @broker.task(name="unsendable")
        async def unsendable() -> object:
            return object()

        async with serving(broker) as reports:
            with pytest.raises(RemoteJobError, match="cannot be sent") as caught:
                await (await broker.submit(unsendable))
        assert caught.value.type_name == "builtins.TypeError"
        assert (reports[0].succeeded, reports[0].failed) == (0, 1)


# Regression: the message named the worker's internal wrapper, not the task.
async def test_remote_timeout_names_the_task(nats_server: str, broker_name: str) -> None:
    """A job past its timeout fails with JobTimeout, and the message names its task."""
    gate = Gate()
    async with make_broker(nats_server, broker_name) as broker:
        tasks = register(broker, gate)
        async with serving(broker):
            handle = await broker.submit(tasks["wait"], timeout=0.05)
            with pytest.raises(RemoteJobError) as caught:
                await handle
        assert caught.value.type_name.endswith("JobTimeout")
        assert "(wait) ran longer than its timeout of 0.05 s" in str(caught.value)
        assert "partial" not in str(caught.value)


async def test_fire_and_forget_stores_no_record(nats_server: str, broker_name: str) -> None:
    """result=False runs the job and keeps nothing; its handle cannot be awaited."""
    gate = Gate()
    async with make_broker(nats_server, broker_name) as broker:
        tasks = register(broker, gate)
        async with serving(broker):
            handle = await broker.submit(tasks["add"], 1, 2, result=False)
            # A later job in the same lane runs after it: then it has run.
            assert await (await broker.submit(tasks["add"], 0, 0)) == 0
        assert gate.runs[0][0] == handle.id
        assert await broker.transport.read_outcome(handle.id) is None
        with pytest.raises(RuntimeError, match="result=False"):
            await handle


async def test_cancel_queued_job_never_runs(nats_server: str, broker_name: str) -> None:
    """A job cancelled before any worker took it never runs; its awaiter sees cancellation."""
    gate = Gate()
    async with make_broker(nats_server, broker_name) as broker:
        tasks = register(broker, gate)
        # Regression: a worker that took jobs before its cancellation watch
        # had read the cancellations already made ran some of them (a fresh
        # worker process; here a second broker, opened after the cancels).
        for round_ in range(3):
            handles = [await broker.submit(tasks["record"], f"cancelled {n}") for n in range(20)]
            for handle in handles:
                assert await handle.cancel() is True
                with pytest.raises(asyncio.CancelledError):
                    await handle
                assert handle.state is JobState.CANCELLED
            async with make_broker(nats_server, broker_name) as worker:
                register(worker, gate)
                async with serving(worker, workers=20) as reports:
                    after = await broker.submit(tasks["record"], f"after {round_}")
                    assert await after == f"after {round_}"
            assert reports[0].skipped == 20
        assert [label for label, _ in gate.runs] == ["after 0", "after 1", "after 2"]


async def test_cancel_running_job_cancels_it_on_its_worker(
    nats_server: str, broker_name: str
) -> None:
    """Cancelling a running remote job cancels its coroutine on the worker."""
    gate = Gate()
    async with make_broker(nats_server, broker_name) as broker:
        tasks = register(broker, gate)
        async with serving(broker) as reports:
            handle = await broker.submit(tasks["wait"])
            await gate.started.wait()
            assert await handle.cancel() is True
            await gate.cancelled.wait()
            with pytest.raises(asyncio.CancelledError):
                await handle
        assert reports[0].cancelled == 1
        assert await handle.cancel() is True  # already cancelled: still True


async def test_cancel_after_the_end_is_refused(nats_server: str, broker_name: str) -> None:
    """A job that already succeeded cannot be cancelled; its result stands."""
    gate = Gate()
    async with make_broker(nats_server, broker_name) as broker:
        tasks = register(broker, gate)
        async with serving(broker):
            handle = await broker.submit(tasks["add"], 1, 1)
            assert await handle == 2
        other_view = broker.handle(handle.id)
        assert await other_view.cancel() is False
        assert await other_view == 2


async def test_handle_reattaches_from_another_broker(nats_server: str, broker_name: str) -> None:
    """Another process (another broker object) gets the result by id, before or after it ends."""
    gate = Gate()
    async with (
        make_broker(nats_server, broker_name) as broker,
        make_broker(nats_server, broker_name) as elsewhere,
    ):
        tasks = register(broker, gate)
        waiting = await broker.submit(tasks["wait"])
        early = elsewhere.handle(waiting.id)
        early_wait = asyncio.ensure_future(early)
        async with serving(broker):
            await gate.started.wait()
            gate.release.set()
            assert await waiting == "released"
        assert await early_wait == "released"
        late = elsewhere.handle(waiting.id)
        assert await late == "released"
        assert late.attempts == 1


async def test_priority_lanes_run_higher_first(nats_server: str, broker_name: str) -> None:
    """Jobs waiting in the broker start by lane: priority > 0, then 0, then < 0."""
    gate = Gate()
    async with make_broker(nats_server, broker_name) as broker:
        tasks = register(broker, gate)
        record = tasks["record"]
        handles = [
            await broker.submit(record, "low", priority=-1),
            await broker.submit(record, "normal"),
            await broker.submit(record, "high", priority=5),
        ]
        async with serving(broker, workers=1):
            await asyncio.gather(*handles)
        assert [label for label, _ in gate.runs] == ["high", "normal", "low"]


# Regression: key lanes were pulled after every priority lane, so a steady
# flow of unkeyed jobs held keyed ones back.
async def test_keyed_job_is_not_held_back_behind_unkeyed_ones(
    nats_server: str, broker_name: str
) -> None:
    """With one free worker, a waiting keyed job is taken before waiting normal ones."""
    gate = Gate()
    async with make_broker(nats_server, broker_name) as broker:
        tasks = register(broker, gate)
        handles = [await broker.submit(tasks["record"], f"plain {n}") for n in range(5)]
        handles.append(await broker.submit(tasks["record"], "keyed", key="k"))
        async with serving(broker, workers=1):
            for handle in handles:
                await handle
        assert gate.runs[0][0] == "keyed"


async def test_keyed_jobs_run_one_at_a_time_in_order(nats_server: str, broker_name: str) -> None:
    """Jobs of one key never overlap and run in submission order, with workers to spare."""
    running: dict[str, int] = {}
    overlaps: list[str] = []
    order: dict[str, list[int]] = {}
    async with make_broker(nats_server, broker_name, key_partitions=2) as broker:

        @broker.task(name="step")
        async def step(user: str, n: int) -> None:
            running[user] = running.get(user, 0) + 1
            if running[user] > 1:
                overlaps.append(user)
            order.setdefault(user, []).append(n)
            await asyncio.sleep(0)
            running[user] -= 1

        handles = [
            await broker.submit(step, user, n, key=user)
            for n in range(6)
            for user in ("ann", "bob", "cy")
        ]
        async with serving(broker, workers=8):
            await asyncio.gather(*handles)
        assert overlaps == []
        assert order == {user: list(range(6)) for user in ("ann", "bob", "cy")}


async def test_worker_never_holds_more_than_its_free_workers(
    nats_server: str, broker_name: str
) -> None:
    """With 2 workers busy, the other jobs stay in the broker (not prefetched)."""
    gate = Gate()
    async with make_broker(nats_server, broker_name) as broker:
        tasks = register(broker, gate)
        handles = [await broker.submit(tasks["wait"]) for _ in range(6)]
        async with serving(broker, workers=2):
            await gate.started.wait()
            assert broker._nc is not None
            jsm = broker._nc.jetstream()
            info = await jsm.consumer_info(broker.stream, f"{broker_name}_normal")
            assert info.num_ack_pending == 2
            assert info.num_pending == 4
            gate.release.set()
            assert await asyncio.gather(*handles) == ["released"] * 6


async def test_stop_hands_unstarted_jobs_back_at_once(nats_server: str, broker_name: str) -> None:
    """A stopping serve hands back what it holds but has not started; another takes them now."""
    gate = Gate()
    async with make_broker(nats_server, broker_name, ack_wait=60) as broker:
        tasks = register(broker, gate)
        stop = asyncio.Event()
        blocker = await broker.submit(tasks["wait"])
        async with Dispatcher(workers=2, queue_size=0) as dispatcher:
            serve = asyncio.create_task(broker.serve(dispatcher, stop=stop))
            await gate.started.wait()
            # Make the second worker take a job it cannot start: keep it busy locally.
            local = await dispatcher.submit(gate.release.wait)
            queued = await broker.submit(tasks["record"], "handed back")
            stop.set()
            gate.release.set()
            report = await serve
            await local
        assert await blocker == "released"
        # Taken or not, the recorded job was never started here...
        assert gate.runs == []
        # ...and is taken at once by the next serve: its lease (60 s) is not waited out.
        async with serving(broker):
            assert await queued == "handed back"
        assert report.handed_back_running == []


async def test_duplicate_publish_enqueues_once(nats_server: str, broker_name: str) -> None:
    """Publishing the same job twice (a retried publish) enqueues it once (Nats-Msg-Id)."""
    gate = Gate()
    async with make_broker(nats_server, broker_name) as broker:
        tasks = register(broker, gate)
        handle = await broker.submit(tasks["record"], "once")
        # The envelope as the broker wrote it, published again as a retry would.
        assert broker._nc is not None
        js = broker._nc.jetstream()
        stored = await js.get_msg(broker.stream, 1)
        await js.publish(
            broker.subject_for(), stored.data or b"", headers=dict(stored.headers or {})
        )
        async with serving(broker):
            assert await handle == "once"
            assert await (await broker.submit(tasks["record"], "next")) == "next"
        assert [label for label, _ in gate.runs] == ["once", "next"]


# Regression: opening a broker re-added its consumers, so the last process to
# connect set everyone's lease; a shorter one expired under live workers.
async def test_the_lease_on_the_server_is_kept_and_extended_for_the_shortest(
    nats_server: str, broker_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A second broker of the same name keeps the server's lease, warns, and extends for it."""
    async with JetStreamBroker(nats_server, name=broker_name, ack_wait=30) as first:
        assert first.transport.lease_period == 10
        assert first._nc is not None
        js = first._nc.jetstream()
        async with JetStreamBroker(nats_server, name=broker_name, ack_wait=3) as shorter:
            consumer = await js.consumer_info(first.stream, f"{broker_name}_normal")
            assert consumer.config.ack_wait == 30
            assert shorter.transport.lease_period == 1
        async with JetStreamBroker(nats_server, name=broker_name, ack_wait=90) as longer:
            # Its jobs' leases run out after the server's 30 s: extended for that.
            assert longer.transport.lease_period == 10
            assert longer.transport.recheck_interval == 0.5
        warnings = [r.getMessage() for r in caplog.records if "keep 30 s" in r.getMessage()]
        assert len(warnings) == 2, warnings
        assert "ack_wait=3 s" in warnings[0]
        assert "ack_wait=90 s" in warnings[1]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda b, t: b.submit(t, 1, 2, timeout=-1), ValueError, "timeout"),
        (lambda b, t: b.submit(t, 1, 2, key=("a",)), TypeError, "key"),
        (lambda b, t: b.submit(t, 1, 2, retry=Retry(on=KeyError)), ValueError, "on="),
        (lambda b, t: b.submit(t, object(), 2), TypeError, "cannot be sent"),
        (lambda b, t: b.submit(len, "x"), TypeError, "registered"),
    ],
)
async def test_bad_submit_is_refused_before_anything_is_sent(
    nats_url: str,
    broker_name: str,
    call: Callable[[JetStreamBroker, Any], Any],
    error: type[Exception],
    match: str,
) -> None:
    """A wrong option or argument raises at submit, naming it; the stream stays empty."""
    gate = Gate()
    async with make_broker(nats_url, broker_name) as broker:
        tasks = register(broker, gate)
        with pytest.raises(error, match=match):
            await call(broker, tasks["add"])
        assert broker._nc is not None
        info = await broker._nc.jetstream().stream_info(broker.stream)
        assert info.state.messages == 0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"name": "has.dot"}, "name"),
        ({"ack_wait": 0.5}, "ack_wait"),
        ({"key_partitions": 0}, "key_partitions"),
        ({"result_ttl": -1}, "result_ttl"),
        ({"codec": "pickle"}, "PickleCodec"),
        ({"max_deliver": 0}, "max_deliver"),
    ],
)
def test_bad_broker_arguments_are_refused_by_name(options: dict[str, Any], match: str) -> None:
    """JetStreamBroker checks its arguments at construction and names the wrong one."""
    with pytest.raises((TypeError, ValueError), match=match):
        JetStreamBroker(**options)


async def test_broker_must_be_open_to_submit(nats_url: str, broker_name: str) -> None:
    """Submitting through a broker that is not open says so."""
    broker = make_broker(nats_url, broker_name)
    tasks = register(broker, Gate())
    with pytest.raises(RuntimeError, match="not open"):
        await broker.submit(tasks["add"], 1, 2)


# -- a server that is not there, or goes away ------------------------------------


class LogLines(logging.Handler):
    """Every record that reaches the root logger (WARNING and up), and a wake-up for each."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._arrived = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        # The NATS client's callbacks run on the event loop: setting the event is safe.
        self.records.append(record)
        self._arrived.set()

    def count(self, text: str) -> int:
        return sum(text in record.getMessage() for record in self.records)

    async def wait_for(self, text: str, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not self.count(text):
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            seen = [f"{r.name} {r.levelname}: {r.getMessage()}" for r in self.records]
            raise AssertionError(f"no log line with {text!r} within {timeout} s: {seen}") from None


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """The records logged during the test (a handler on the root logger)."""
    handler = LogLines()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


async def test_open_without_a_server_raises_connection_error_after_the_connect_timeout() -> None:
    """Nobody at the address: opening raises ConnectionError once connect_timeout has passed."""
    url = f"nats://127.0.0.1:{free_port()}"
    broker = JetStreamBroker(url, name="nobody", connect_options={"connect_timeout": 1})
    started = time.monotonic()
    # Bounded here, so that the old behaviour (trying for ever) fails this test alone.
    async with asyncio.timeout(10):
        with pytest.raises(ConnectionError) as raised:
            async with broker:
                pass
    assert str(raised.value).startswith(f"cannot connect to NATS at {url} (tried for 1 s): ")
    assert 0.9 <= time.monotonic() - started < 5
    assert repr(broker).startswith("<JetStreamBroker 'nobody' closed")


async def test_lost_and_regained_server_is_one_warning_line_each(
    private_nats: PrivateNats, broker_name: str, log_lines: LogLines
) -> None:
    """A server restart under an open broker: one WARNING when lost, one when back; no traceback."""
    server = private_nats()
    async with make_broker(server.url, broker_name) as broker:
        await asyncio.to_thread(server.stop)
        await log_lines.wait_for("lost its connection to NATS", timeout=10)
        await asyncio.to_thread(server.start)
        await log_lines.wait_for("reconnected to NATS", timeout=15)
        # Connected again: the broker works.
        tasks = register(broker, Gate())
        async with serving(broker):
            assert await (await broker.submit(tasks["add"], 1, 2)) == 3
    assert log_lines.count(f"broker {broker_name!r} lost its connection to NATS") == 1
    assert log_lines.count(f"broker {broker_name!r} reconnected to NATS") == 1
    # nats-py's own default logs every failed attempt with its traceback.
    assert [r.getMessage() for r in log_lines.records if r.exc_info] == []
    assert [r.getMessage() for r in log_lines.records if r.name.startswith("nats")] == []


async def test_connect_options_win_over_the_broker_callbacks(
    private_nats: PrivateNats, broker_name: str, log_lines: LogLines
) -> None:
    """A disconnected_cb in connect_options replaces the broker's (its line is not logged)."""
    server = private_nats()
    lost = asyncio.Event()

    async def disconnected() -> None:
        lost.set()

    broker = make_broker(server.url, broker_name, connect_options={"disconnected_cb": disconnected})
    with pytest.raises(ConnectionError):
        async with broker:
            await asyncio.to_thread(server.stop)
            async with asyncio.timeout(10):
                await lost.wait()
    assert log_lines.count("lost its connection") == 0


async def test_close_with_the_server_gone_raises_connection_error_promptly(
    private_nats: PrivateNats, broker_name: str
) -> None:
    """Closed while its server is away: ConnectionError at once, and nothing keeps reconnecting."""
    server = private_nats()
    lost = asyncio.Event()

    async def disconnected() -> None:
        lost.set()

    broker = make_broker(server.url, broker_name, connect_options={"disconnected_cb": disconnected})
    with pytest.raises(ConnectionError) as raised:
        async with broker:
            await asyncio.to_thread(server.stop)
            async with asyncio.timeout(10):
                await lost.wait()
            closing = time.monotonic()
    assert time.monotonic() - closing < 3
    assert str(raised.value) == (
        f"broker {broker_name!r} closed while its NATS server ({server.url}) was unreachable: "
        "what it sent since the connection was lost (acks, results, jobs handed back) never "
        "reached the server"
    )
    assert repr(broker).startswith(f"<JetStreamBroker {broker_name!r} closed")


async def _wait_for_stderr(worker: WorkerProcess, text: str, timeout: float) -> None:
    """Until the worker's stderr has `text` (bounded polling: it is another process's file)."""
    deadline = time.monotonic() + timeout
    while text not in worker.stderr():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} within {timeout} s: {worker.describe()}")
        await asyncio.sleep(0.02)


WORKER_GRACE = 1.0
STOP_BOUND = 5.0
"""The most an unreachable server may add to the grace of a stopping worker (seconds)."""


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_worker_cli_sigterm_with_its_server_gone_exits_1_within_the_bound(
    private_nats: PrivateNats, broker_name: str, worker_fleet: WorkerFleet, tmp_path: Path
) -> None:
    """SIGTERM, server gone: exit 1 within grace + 5 s, saying its jobs come back (they do)."""
    server = private_nats()
    records = tmp_path / "runs.jsonl"
    env = {ENV_URL: server.url, ENV_NAME: broker_name, ENV_ACK_WAIT: "2", ENV_RECORDS: str(records)}
    gate = tmp_path / "gate"
    worker = worker_fleet.start(env, workers=2, grace=WORKER_GRACE, label="orphaned")
    app = ChaosApp(server.url, broker_name, ack_wait=2.0)
    async with app.broker:
        job_id = (await app.broker.submit(app.hold, str(gate))).id
    await wait_for_records(
        records,
        lambda runs: any(r.ev == "start" and r.id == job_id for r in runs),
        timeout=20,
        what="the gated job running on the worker",
        describe=worker_fleet.describe,
    )
    await asyncio.to_thread(server.stop)
    await _wait_for_stderr(worker, "lost its connection to NATS", timeout=10)
    sent = time.monotonic()
    worker.terminate()
    status = await worker.wait(WORKER_GRACE + STOP_BOUND)
    took = time.monotonic() - sent
    err = worker.stderr()
    assert status == 1, f"exit status {status} {took:.1f} s after SIGTERM:\n{err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert sum("lost its connection to NATS" in line for line in lines) == 1, err
    assert lines[-1].startswith("python -m asyncpool worker: error: the server of <JetStreamBroker")
    assert re.search(
        r"was unreachable as the worker stopped: the jobs this worker held and could not "
        r"settle there are redelivered by the server once their lease runs out$",
        lines[-1],
    ), lines[-1]
    # What the message promises: the server, back, delivers the job again after its lease.
    gate.touch()
    await asyncio.to_thread(server.start)
    worker_fleet.start(env, workers=2, label="after")
    async with app.broker:
        async with asyncio.timeout(30):
            assert await app.broker.handle(job_id) == job_id
    runs = runs_by_id(read_records(records))[job_id]
    assert [(run.pid == worker.pid, run.attempt) for run in runs] == [(True, 1), (False, 2)]


@pytest.mark.slow
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_dead_letters_cli_stream_set_up_otherwise_is_one_line_exit_1(
    nats_url: str, broker_name: str
) -> None:
    """A stream of the broker's name with other subjects: one error line, exit 1, no traceback."""
    nc = await nats.connect(nats_url, connect_timeout=2, allow_reconnect=False)
    try:
        await nc.jetstream().add_stream(name=f"{broker_name}_jobs", subjects=["elsewhere.>"])
    finally:
        await nc.close()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asyncpool",
        "dead-letters",
        WORKER_TARGET,
        cwd=ROOT,
        env={**os.environ, ENV_URL: nats_url, ENV_NAME: broker_name},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        out, err = await process.communicate()
    assert process.returncode == 1, err.decode()
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1, err.decode()
    assert lines[0].startswith("python -m asyncpool dead-letters: error: cannot open <")
    assert f"a JetStream stream named '{broker_name}_jobs' exists with another setup" in lines[0]
