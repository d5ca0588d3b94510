"""The broker contract once for every engine: JetStream and Redis, on real servers.

Every test here takes `engine` (conftest.py), so it runs on JetStream on the
machine's NATS (`jetstream-2.9`) and on the bundled nats-server release
(`jetstream-bundled`), and on Redis (`redis`); a test that needs the
machine's servers only takes `machine_engine`. The assertions are the
contract, the same for every engine; where a test must touch the server past
the broker under test (put garbage in a lane, count what a lane holds, see
what is stored) it asks the engine's helpers in _engines.py.

Producer and worker share the process here (_harness.py), so a job can
signal the test through events. Worker processes, kills and restarts are in
test_chaos.py; what only one engine does (its connection, its setup on the
server) is in test_jetstream.py, test_redis.py and test_redis_counterparts.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from asyncpool import Dispatcher, JobState, Retry
from asyncpool._envelope import Envelope
from asyncpool._transport import STATUS_TTL_MAX
from asyncpool.brokers import (
    LaneInfo,
    MsgpackCodec,
    PickleCodec,
    RemoteJobError,
)

from ._engines import KINDS, Engine, broker_class
from ._harness import Gate, Greet, register, serving

if TYPE_CHECKING:
    from ._engines import AnyBroker

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")


def make_broker(engine: Engine, name: str, **options: Any) -> AnyBroker:
    """The engine's broker named `name`, with a 5 s lease unless `options` say otherwise."""
    return engine.broker(name, ack_wait=options.pop("ack_wait", 5), **options)


async def until(read: Callable[[], Awaitable[T]], ok: Callable[[T], bool], within: float = 10) -> T:
    """Read the server's state again until `ok(state)`: it changes and tells nobody (bounded)."""
    deadline = time.monotonic() + within
    while not ok(state := await read()):
        assert time.monotonic() < deadline, f"still {state!r} after {within} s"
        await asyncio.sleep(0.05)
    return state


def lane_rows(
    high: tuple[int, int] = (0, 0),
    normal: tuple[int, int] = (0, 0),
    low: tuple[int, int] = (0, 0),
    keys: tuple[int, int] = (0, 0),
) -> list[LaneInfo]:
    """What `broker.lanes()` says when each lane holds (waiting, running) and nothing is delayed."""
    return [
        LaneInfo(name, *counts)
        for name, counts in (("high", high), ("normal", normal), ("low", low), ("keys", keys))
    ]


async def test_submit_returns_results_of_every_kind_of_task(
    engine: Engine, broker_name: str
) -> None:
    """Async functions, sync functions and Job classes all come back with their results."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
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


async def test_msgpack_codec_round_trips_bytes(engine: Engine, broker_name: str) -> None:
    """With codec='msgpack', bytes arguments and results travel as they are."""
    async with make_broker(engine, broker_name, codec="msgpack") as broker:
        assert isinstance(broker.codec, MsgpackCodec)

        @broker.task(name="rev")
        async def rev(data: bytes) -> bytes:
            return data[::-1]

        async with serving(broker):
            assert await (await broker.submit(rev, b"\x00\x01\xff")) == b"\xff\x01\x00"


async def test_failure_is_retried_through_the_broker_with_its_attempt(
    engine: Engine, broker_name: str
) -> None:
    """A failing job runs again (handed back with its backoff); each run knows its attempt."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
        tasks = register(broker, gate)
        async with serving(broker) as reports:
            handle = await broker.submit(tasks["flaky"], 3)
            assert await handle == 3
        assert [attempt for _, attempt in gate.runs] == [1, 2, 3]
        assert handle.attempts == 3
        assert reports[0].retried == 2
        assert reports[0].succeeded == 1


async def test_last_failure_is_a_remote_error_and_a_dead_letter_that_requeues(
    engine: Engine, broker_name: str
) -> None:
    """After its last attempt a job fails with the remote traceback, lands in the dead
    letters, and a requeue runs it again."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
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


async def test_registered_error_class_is_rebuilt(engine: Engine, broker_name: str) -> None:
    """A job's own exception class, registered as safe, is raised again by the awaiter."""

    class OutOfStock(Exception):
        pass

    async with make_broker(engine, broker_name) as broker:
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
    engine: Engine, broker_name: str
) -> None:
    """A name the worker did not register, and bytes that are no envelope, become dead
    letters; the next job still runs."""
    gate = Gate()
    async with (
        make_broker(engine, broker_name) as worker_side,
        make_broker(engine, broker_name) as other,
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
            await engine.publish_raw(broker_name, b"\xffgarbage")
            assert await (await worker_side.submit(tasks["add"], 1, 1)) == 2
        reasons = sorted(d.reason for d in await worker_side.dead_letters())
        assert reasons == ["undecodable", "unknown task"]
        assert reports[0].refused == 2


# Regression: a payload the worker could not read got no record, so the
# submitter's handle waited for ever.
async def test_payload_the_worker_cannot_read_still_ends_its_handle(
    engine: Engine, broker_name: str
) -> None:
    """A pickle signed with another secret is a dead letter, and its submitter hears so."""
    gate = Gate()
    async with (
        make_broker(engine, broker_name, codec=PickleCodec(secret=b"worker" * 4)) as worker,
        make_broker(engine, broker_name, codec=PickleCodec(secret=b"other" * 4)) as producer,
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
    engine: Engine, broker_name: str
) -> None:
    """A msgpack producer and a JSON worker: the result still reaches the producer."""
    gate = Gate()
    async with (
        make_broker(engine, broker_name) as worker,
        make_broker(engine, broker_name, codec="msgpack") as producer,
    ):
        register(worker, gate)
        tasks = register(producer, gate)
        async with serving(worker):
            assert await (await producer.submit(tasks["add"], 2, 3)) == 5


# Regression: a job whose result could not be encoded was counted as succeeded.
async def test_result_that_cannot_travel_is_a_failure_everywhere(
    engine: Engine, broker_name: str
) -> None:
    """The submitter gets a TypeError naming the problem, and the report counts a failure."""
    async with make_broker(engine, broker_name) as broker:

        @broker.task(name="unsendable")
        async def unsendable() -> object:
            return object()

        async with serving(broker) as reports:
            with pytest.raises(RemoteJobError, match="cannot be sent") as caught:
                await (await broker.submit(unsendable))
        assert caught.value.type_name == "builtins.TypeError"
        assert (reports[0].succeeded, reports[0].failed) == (0, 1)


# Regression: the message named the worker's internal wrapper, not the task.
async def test_remote_timeout_names_the_task(engine: Engine, broker_name: str) -> None:
    """A job past its timeout fails with JobTimeout, and the message names its task."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
        tasks = register(broker, gate)
        async with serving(broker):
            handle = await broker.submit(tasks["wait"], timeout=0.05)
            with pytest.raises(RemoteJobError) as caught:
                await handle
        assert caught.value.type_name.endswith("JobTimeout")
        assert "(wait) ran longer than its timeout of 0.05 s" in str(caught.value)
        assert "partial" not in str(caught.value)


async def test_fire_and_forget_stores_no_record(engine: Engine, broker_name: str) -> None:
    """result=False runs the job and keeps nothing; its handle cannot be awaited."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
        tasks = register(broker, gate)
        async with serving(broker):
            handle = await broker.submit(tasks["add"], 1, 2, result=False)
            # A later job in the same lane runs after it: then it has run.
            assert await (await broker.submit(tasks["add"], 0, 0)) == 0
        assert gate.runs[0][0] == handle.id
        assert await broker.transport.read_outcome(handle.id) is None
        with pytest.raises(RuntimeError, match="result=False"):
            await handle


async def test_cancel_queued_job_never_runs(engine: Engine, broker_name: str) -> None:
    """A job cancelled before any worker took it never runs; its awaiter sees cancellation."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
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
            async with make_broker(engine, broker_name) as worker:
                register(worker, gate)
                async with serving(worker, workers=20) as reports:
                    after = await broker.submit(tasks["record"], f"after {round_}")
                    assert await after == f"after {round_}"
            assert reports[0].skipped == 20
        assert [label for label, _ in gate.runs] == ["after 0", "after 1", "after 2"]


async def test_cancel_running_job_cancels_it_on_its_worker(
    engine: Engine, broker_name: str
) -> None:
    """Cancelling a running remote job cancels its coroutine on the worker."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
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


async def test_cancel_after_the_end_is_refused(engine: Engine, broker_name: str) -> None:
    """A job that already succeeded cannot be cancelled; its result stands."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
        tasks = register(broker, gate)
        async with serving(broker):
            handle = await broker.submit(tasks["add"], 1, 1)
            assert await handle == 2
        other_view = broker.handle(handle.id)
        assert await other_view.cancel() is False
        assert await other_view == 2


async def test_handle_reattaches_from_another_broker(engine: Engine, broker_name: str) -> None:
    """Another process (another broker object) gets the result by id, before or after it ends."""
    gate = Gate()
    async with (
        make_broker(engine, broker_name) as broker,
        make_broker(engine, broker_name) as elsewhere,
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


async def test_priority_lanes_run_higher_first(engine: Engine, broker_name: str) -> None:
    """Jobs waiting in the broker start by lane: priority > 0, then 0, then < 0."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
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
    engine: Engine, broker_name: str
) -> None:
    """With one free worker, a waiting keyed job is taken before waiting normal ones."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
        tasks = register(broker, gate)
        handles = [await broker.submit(tasks["record"], f"plain {n}") for n in range(5)]
        handles.append(await broker.submit(tasks["record"], "keyed", key="k"))
        async with serving(broker, workers=1):
            for handle in handles:
                await handle
        assert gate.runs[0][0] == "keyed"


async def test_keyed_jobs_run_one_at_a_time_in_order(engine: Engine, broker_name: str) -> None:
    """Jobs of one key never overlap and run in submission order, with workers to spare."""
    running: dict[str, int] = {}
    overlaps: list[str] = []
    order: dict[str, list[int]] = {}
    async with make_broker(engine, broker_name, key_partitions=2) as broker:

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
    engine: Engine, broker_name: str
) -> None:
    """With 2 workers busy, the other jobs stay in the broker (not prefetched)."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
        tasks = register(broker, gate)
        handles = [await broker.submit(tasks["wait"]) for _ in range(6)]
        async with serving(broker, workers=2):
            await gate.started.wait()
            held, waiting = await engine.lane_counts(broker_name)
            assert held == 2
            assert waiting == 4
            gate.release.set()
            assert await asyncio.gather(*handles) == ["released"] * 6


async def test_stop_hands_unstarted_jobs_back_at_once(engine: Engine, broker_name: str) -> None:
    """A stopping serve hands back what it holds but has not started; another takes them now."""
    gate = Gate()
    async with make_broker(engine, broker_name, ack_wait=60) as broker:
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


async def test_duplicate_publish_enqueues_once(engine: Engine, broker_name: str) -> None:
    """Publishing the same job twice (a retried publish) enqueues it once."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
        tasks = register(broker, gate)
        handle = await broker.submit(tasks["record"], "once")
        # The job as the broker stored it, published again as a retried publish would.
        [stored] = await engine.stored_jobs(broker_name)
        assert stored.job_id == handle.id
        envelope = Envelope.decode(stored.data, broker.codec)
        await broker.transport.publish(envelope, stored.data, stored.codec or broker.codec.name)
        assert len(await engine.stored_jobs(broker_name)) == 1
        async with serving(broker):
            assert await handle == "once"
            assert await (await broker.submit(tasks["record"], "next")) == "next"
        assert [label for label, _ in gate.runs] == ["once", "next"]


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
    machine_engine: Engine,
    broker_name: str,
    call: Callable[[AnyBroker, Any], Any],
    error: type[Exception],
    match: str,
) -> None:
    """A wrong option or argument raises at submit, naming it; no job is stored."""
    gate = Gate()
    async with make_broker(machine_engine, broker_name) as broker:
        tasks = register(broker, gate)
        with pytest.raises(error, match=match):
            await call(broker, tasks["add"])
        assert await machine_engine.jobs_stored(broker_name) == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"name": "has.dot"}, "name"),
        ({"name": "n" * 33}, "name"),
        ({"ack_wait": 0.5}, "ack_wait"),
        ({"ack_wait": 10**10}, "ack_wait"),
        ({"key_partitions": 0}, "key_partitions"),
        ({"key_partitions": 257}, "key_partitions"),
        ({"result_ttl": -1}, "result_ttl"),
        ({"codec": "pickle"}, "PickleCodec"),
        ({"max_deliver": 0}, "max_deliver"),
    ],
)
def test_bad_broker_arguments_are_refused_by_name(
    kind: str, options: dict[str, Any], match: str
) -> None:
    """Each engine's broker checks its arguments at construction and names the wrong one."""
    with pytest.raises((TypeError, ValueError), match=match):
        broker_class(kind)(**options)


async def test_broker_must_be_open_to_submit(machine_engine: Engine, broker_name: str) -> None:
    """Submitting through a broker that is not open says so."""
    broker = make_broker(machine_engine, broker_name)
    tasks = register(broker, Gate())
    with pytest.raises(RuntimeError, match="not open"):
        await broker.submit(tasks["add"], 1, 2)


@pytest.mark.slow
async def test_result_is_gone_once_its_ttl_has_passed(engine: Engine, broker_name: str) -> None:
    """A terminal record is kept after the job ends, and is gone once result_ttl has passed."""
    gate = Gate()
    async with make_broker(engine, broker_name, result_ttl=1) as broker:
        tasks = register(broker, gate)
        async with serving(broker):
            handle = await broker.submit(tasks["add"], 1, 2)
            assert await handle == 3
        ended = time.monotonic()
        assert await broker.transport.read_outcome(handle.id) is not None
        # The server's clock expires it, and tells nobody: look again (bounded).
        while await broker.transport.read_outcome(handle.id) is not None:
            assert time.monotonic() - ended < 10, "the record outlived its 1 s TTL by 9 s"
            await asyncio.sleep(0.1)


async def test_destroy_leaves_nothing_of_the_broker_on_its_server(
    engine: Engine, broker_name: str
) -> None:
    """After destroy(): no job, record, cancellation or dead letter of the broker is left."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
        tasks = register(broker, gate)
        async with serving(broker):
            assert await (await broker.submit(tasks["add"], 1, 2)) == 3
            failing = await broker.submit(tasks["flaky"], 5, retry=Retry(attempts=1))
            with pytest.raises(RemoteJobError):
                await failing
        cancelled = await broker.submit(tasks["record"], "cancelled")
        assert await cancelled.cancel() is True
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await broker.submit(tasks["record"], "queued", key="k", result=False)
        await broker.submit(tasks["record"], "queued")
        await broker.transport.put_status("host:1", b"up", 60)
        assert [letter.id for letter in await broker.dead_letters()] == [failing.id]
        assert await engine.leftovers(broker_name) != []
        await broker.destroy()
    assert await engine.leftovers(broker_name) == []


# -- what a dashboard reads: lanes, workers' statuses, dead letters -----------


async def test_lanes_count_waiting_then_running_then_nothing(
    engine: Engine, broker_name: str
) -> None:
    """Each lane counts its jobs waiting, then the one a worker holds as running, then none."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
        tasks = register(broker, gate)
        assert await broker.lanes() == lane_rows()
        first = await broker.submit(tasks["record"], "high", priority=1)
        keyed = await broker.submit(tasks["record"], "keyed", key="k")
        low = await broker.submit(tasks["record"], "low", priority=-1)
        held = [await broker.submit(tasks["wait"]) for _ in range(2)]
        assert await broker.lanes() == lane_rows(
            high=(1, 0), normal=(2, 0), low=(1, 0), keys=(1, 0)
        )
        # One worker: high, then the key lane, then normal, where it stays on a held job.
        async with serving(broker, workers=1):
            assert await first == "high"
            assert await keyed == "keyed"
            await gate.started.wait()
            running = lane_rows(normal=(1, 1), low=(1, 0))
            await until(broker.lanes, lambda rows: rows == running)
            gate.release.set()
            assert await asyncio.gather(*held, low) == ["released", "released", "low"]
            await until(broker.lanes, lambda rows: rows == lane_rows())


async def test_lanes_count_a_retry_waiting_out_its_backoff(
    engine: Engine, broker_name: str
) -> None:
    """A job handed back with a backoff is counted, not waiting: delayed on Redis, running
    on JetStream (its server keeps it delivered until then)."""
    failed = asyncio.Event()
    async with make_broker(engine, broker_name) as broker:

        @broker.task(name="fails", retry=Retry(attempts=2, backoff=30, jitter=0))
        async def fails() -> None:
            failed.set()
            raise ValueError("fails")

        async with serving(broker) as reports:
            await broker.submit(fails)
            await failed.wait()
        # serve has settled the failure: the job is handed back for 30 s.
        assert reports[0].retried == 1
        [high, normal, low, keys] = await broker.lanes()
        assert (normal.name, normal.waiting, normal.running + normal.delayed) == ("normal", 0, 1)
        if engine.kind == "redis":
            assert normal.delayed == 1
        else:
            assert normal.running == 1
        assert [high, low, keys] == [lane_rows()[0], *lane_rows()[2:]]


async def test_lanes_and_dead_letter_deletion_need_an_open_broker(
    machine_engine: Engine, broker_name: str
) -> None:
    """Counting lanes or deleting a dead letter through a broker that is not open says so."""
    broker = make_broker(machine_engine, broker_name)
    with pytest.raises(RuntimeError, match="not open"):
        await broker.lanes()
    with pytest.raises(RuntimeError, match="not open"):
        await broker.delete_dead_letter("a.1")


async def test_worker_status_is_listed_replaced_and_dropped(
    engine: Engine, broker_name: str
) -> None:
    """A put status is listed (by any broker of the name), a put replaces it, a drop removes it."""
    async with (
        make_broker(engine, broker_name) as broker,
        make_broker(engine, broker_name) as elsewhere,
    ):
        transport = broker.transport
        assert await transport.statuses() == []
        await transport.put_status("host-a:1", b"a first", 60)
        await transport.put_status("host-b:2", b"b", 60)
        assert sorted(await elsewhere.transport.statuses()) == [b"a first", b"b"]
        await transport.put_status("host-a:1", b"a again", 60)
        assert sorted(await transport.statuses()) == [b"a again", b"b"]
        await elsewhere.transport.drop_status("host-a:1")
        assert await transport.statuses() == [b"b"]
        await transport.drop_status("host-a:1")  # gone already: no error
        await transport.drop_status("host-b:2")
        assert await transport.statuses() == []


@pytest.mark.slow
async def test_worker_status_expires_after_its_ttl(engine: Engine, broker_name: str) -> None:
    """A status not put again within its TTL is gone by itself; a longer one stays."""
    async with make_broker(engine, broker_name) as broker:
        transport = broker.transport
        put = time.monotonic()
        await transport.put_status("killed:1", b"killed", 1)
        await transport.put_status("alive:2", b"alive", 60)
        assert sorted(await transport.statuses()) == [b"alive", b"killed"]
        await until(transport.statuses, lambda found: found == [b"alive"])
        assert time.monotonic() - put >= 0.5, "the status expired well before its 1 s TTL"
        # Put again after it expired, it is back.
        await transport.put_status("killed:1", b"restarted", 60)
        assert sorted(await transport.statuses()) == [b"alive", b"restarted"]


@pytest.mark.parametrize(
    ("worker", "ttl", "error"),
    [
        ("host:1", 0, ValueError),
        ("host:1", -1, ValueError),
        ("host:1", STATUS_TTL_MAX + 1, ValueError),
        ("host:1", float("nan"), ValueError),
        ("host:1", "10", TypeError),
        ("", 10, ValueError),
        (None, 10, TypeError),
    ],
)
async def test_worker_status_with_a_bad_ttl_or_name_is_refused(
    machine_engine: Engine, broker_name: str, worker: Any, ttl: Any, error: type[Exception]
) -> None:
    """put_status refuses a TTL out of (0, STATUS_TTL_MAX] or an empty name; nothing is kept."""
    async with make_broker(machine_engine, broker_name) as broker:
        with pytest.raises(error):
            await broker.transport.put_status(worker, b"status", ttl)
        assert await broker.transport.statuses() == []


async def test_deleted_dead_letter_is_gone_and_never_runs(engine: Engine, broker_name: str) -> None:
    """A deleted dead letter is listed no more, cannot be requeued or deleted again, and its
    job does not run again."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
        tasks = register(broker, gate)
        async with serving(broker):
            dead = await broker.submit(tasks["flaky"], 5, retry=Retry(attempts=1))
            with pytest.raises(RemoteJobError):
                await dead
            kept = await broker.submit(tasks["flaky"], 5, retry=Retry(attempts=1))
            with pytest.raises(RemoteJobError):
                await kept
        [letter, kept_letter] = await broker.dead_letters()
        assert (letter.id, kept_letter.id) == (dead.id, kept.id)
        await broker.delete_dead_letter(dead.id)
        assert await broker.dead_letters() == [kept_letter]
        for gone in (dead.id, letter):
            with pytest.raises(LookupError):
                await broker.requeue(gone)
            with pytest.raises(LookupError):
                await broker.delete_dead_letter(gone)
        await broker.delete_dead_letter(kept_letter)
        assert await broker.dead_letters() == []
        async with serving(broker):
            # A later job in the same lane runs after anything requeued there.
            assert await (await broker.submit(tasks["add"], 1, 1)) == 2
        assert [job_id for job_id, _ in gate.runs] == [dead.id, kept.id, gate.runs[-1][0]]
