"""The engine-neutral Broker (asyncpool._broker) on an in-memory transport: no server.

`MemoryBroker` keeps what an engine keeps in dicts and lists: published jobs,
create-once terminal records, cancellation requests, and watches (the
origin-wide one a broker opens for its own jobs, and the per-job ones
`broker.handle(id)` asks for). It tests the neutral layer's own logic;
real-server behaviour is tested in tests/brokers/.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from asyncpool import Dispatcher, JobState, Retry
from asyncpool._broker import OPTION_NAMES, Broker
from asyncpool._codecs import JsonCodec, MsgpackCodec, PayloadError, PickleCodec
from asyncpool._envelope import Envelope, Outcome
from asyncpool._errors import RemoteJobError
from asyncpool._lanes_info import LaneInfo
from asyncpool._remote import error_record
from asyncpool._tasks import JobClass, Task, UnknownTask
from asyncpool._transport import Delivery

Deliver = Callable[[str, bytes], None]


class MemoryTransport:
    """A Transport in dicts and lists: what a broker engine stores, without the engine."""

    recheck_interval: float = 1.0
    lease_period: float = 1.0

    def __init__(self) -> None:
        self.published: list[tuple[Envelope, bytes, str]] = []
        self.outcomes: dict[str, bytes] = {}
        self.cancels: list[str] = []
        self.watched: list[str] = []
        self.watching = asyncio.Event()
        self.fail_publish: BaseException | None = None
        self.worker_statuses: dict[str, bytes] = {}
        self._watches: list[tuple[str, Deliver]] = []

    def watch_prefix(self, prefix: str, deliver: Deliver) -> None:
        """Deliver every record whose job id starts with `prefix`."""
        self._watches.append((prefix, deliver))

    def write(self, job_id: str, data: bytes) -> bool:
        """Write a record if the job has none (create-once), and tell whoever watches it."""
        if job_id in self.outcomes:
            return False
        self.outcomes[job_id] = data
        for prefix, deliver in list(self._watches):
            if job_id.startswith(prefix):
                deliver(job_id, data)
        return True

    async def publish(self, envelope: Envelope, data: bytes, codec_name: str) -> None:
        if self.fail_publish is not None:
            raise self.fail_publish
        self.published.append((envelope, data, codec_name))

    async def fetch(self, most: int) -> list[Delivery]:
        return []

    async def hand_back_strays(self) -> None:
        return None

    async def wait_for_work(self, timeout: float) -> None:
        return None

    async def create_outcome(self, job_id: str, data: bytes) -> bool:
        return self.write(job_id, data)

    async def finish(self, delivery: Any, job_id: str, record: bytes | None) -> None:
        if record is not None:
            self.write(job_id, record)

    async def read_outcome(self, job_id: str) -> bytes | None:
        return self.outcomes.get(job_id)

    async def watch_outcome(self, job_id: str, deliver: Deliver) -> None:
        self.watched.append(job_id)
        self.watching.set()
        self.watch_prefix(job_id, deliver)

    async def request_cancel(self, job_id: str) -> None:
        self.cancels.append(job_id)

    async def watch_cancels(
        self, cancelled: Callable[[str], None], caught_up: Callable[[], None]
    ) -> None:
        caught_up()

    async def dead_letter(self, delivery: Any, letter: dict[str, Any]) -> None:
        return None

    async def lane_counts(self) -> list[LaneInfo]:
        return [LaneInfo("normal", len(self.published), 0)]

    async def put_status(self, worker: str, data: bytes, ttl: float) -> None:
        self.worker_statuses[worker] = data  # no clock here: it never expires

    async def statuses(self) -> list[bytes]:
        return list(self.worker_statuses.values())

    async def drop_status(self, worker: str) -> None:
        self.worker_statuses.pop(worker, None)


class MemoryBroker(Broker):
    """A Broker whose engine is a `MemoryTransport` (shareable, like one server)."""

    def __init__(self, transport: MemoryTransport | None = None, **options: Any) -> None:
        super().__init__(**options)
        self._transport = MemoryTransport() if transport is None else transport
        self.opened = 0
        self.shut = 0

    @property
    def transport(self) -> MemoryTransport:
        return self._transport

    async def _open(self) -> None:
        self.opened += 1
        # Like an engine: one watch on the records of the jobs this broker submits.
        self._transport.watch_prefix(f"{self._origin}.", self._outcome_arrived)

    async def _shut(self) -> None:
        self.shut += 1

    def finish(self, job_id: str, outcome: Outcome) -> bool:
        """What a worker does at a job's end: write its one terminal record."""
        return self._transport.write(job_id, outcome.encode(self.codec))

    def last_envelope(self) -> Envelope:
        envelope, data, codec_name = self._transport.published[-1]
        assert codec_name == self.codec.name
        assert Envelope.decode(data, self.codec) == envelope
        return envelope


async def add(x: int, y: int) -> int:
    return x + y


def mul(x: int, y: int) -> int:
    return x * y


class QuotaExceeded(Exception):
    """A job's own error, registered to come back as itself."""


# -- construction -----------------------------------------------------


def test_broker_defaults_json_codec_and_five_deliveries() -> None:
    """A broker defaults to the json codec, no retry, at most 5 deliveries, no tasks."""
    broker = MemoryBroker()
    assert isinstance(broker.codec, JsonCodec)
    assert broker.default_retry is None
    assert broker.max_deliver == 5
    assert len(broker.registry) == 0


def test_broker_takes_codec_by_name_or_instance() -> None:
    """codec= takes 'msgpack' or a Codec instance, and refuses pickle by name."""
    assert isinstance(MemoryBroker(codec="msgpack").codec, MsgpackCodec)
    pickled = PickleCodec(b"0123456789abcdef")
    assert MemoryBroker(codec=pickled).codec is pickled
    with pytest.raises(ValueError, match=r"PickleCodec\(secret=\.\.\.\)"):
        MemoryBroker(codec="pickle")


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_deliver": 0}, ValueError, "max_deliver must be an int >= 1, got 0"),
        ({"max_deliver": True}, ValueError, "max_deliver must be an int >= 1, got True"),
        ({"max_deliver": 2.0}, ValueError, "max_deliver must be an int >= 1, got 2.0"),
        ({"retry": 3}, TypeError, "retry must be an asyncpool.Retry or None"),
        ({"codec": "yaml"}, ValueError, "codec must be 'json', 'msgpack' or a Codec"),
    ],
    ids=repr,
)
def test_broker_refuses_bad_options(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each wrong broker option raises when the broker is made, naming it."""
    with pytest.raises(error, match=message):
        MemoryBroker(**options)


# -- @broker.task -------------------------------------------------------


def test_task_decorator_bare_on_async_and_sync_functions() -> None:
    """Bare @broker.task registers a function under module.qualname and returns a Task."""
    broker = MemoryBroker()
    async_task = broker.task(add)
    sync_task = broker.task(mul)
    assert isinstance(async_task, Task)
    assert (async_task.name, async_task.fn, async_task.is_async) == (
        "tests.test_broker.add",
        add,
        True,
    )
    assert (sync_task.name, sync_task.is_async) == ("tests.test_broker.mul", False)
    assert broker.registry.names() == ["tests.test_broker.add", "tests.test_broker.mul"]
    assert broker.registry.named("tests.test_broker.add") is async_task


async def test_task_decorator_keeps_the_function_callable_here() -> None:
    """A registered task still calls its function directly."""
    broker = MemoryBroker()

    @broker.task
    async def double(x: int) -> int:
        return 2 * x

    assert await double(4) == 8
    assert (
        double.name
        == "tests.test_broker.test_task_decorator_keeps_the_function_callable_here.<locals>.double"
    )


def test_task_decorator_with_arguments_sets_name_and_defaults() -> None:
    """@broker.task(...) registers under name= with the given defaults."""
    broker = MemoryBroker()
    retry = Retry(attempts=3, backoff=0.5)

    @broker.task(name="slow", timeout=10, retry=retry, priority=1, key="k", max_deliver=7)
    async def slow(seconds: float) -> str:
        return "done"

    assert isinstance(slow, Task)
    assert (slow.name, slow.timeout, slow.retry, slow.priority, slow.key, slow.max_deliver) == (
        "slow",
        10,
        retry,
        1,
        "k",
        7,
    )
    assert broker.registry.named("slow") is slow


def test_task_decorator_on_a_dataclass_job_returns_the_class_unchanged() -> None:
    """@broker.task on a Job class registers it and returns the class itself."""
    broker = MemoryBroker()

    @dataclasses.dataclass
    class Resize:
        path: str

        async def process(self) -> int:
            return len(self.path)

    registered = broker.task(Resize)
    assert registered is Resize
    entry = broker.registry.of_class(Resize)
    assert isinstance(entry, JobClass)
    assert entry.name.endswith(".<locals>.Resize")
    assert entry.name.startswith("tests.test_broker.")


def test_task_decorator_with_arguments_on_a_job_class() -> None:
    """@broker.task(name=..., priority=...) on a class keeps the class and records defaults."""
    broker = MemoryBroker()

    @broker.task(name="resize", priority=-1, timeout=3)
    @dataclasses.dataclass
    class Resize:
        path: str

        def process(self) -> str:
            return self.path

    assert Resize("a").process() == "a"
    entry = broker.registry.of_class(Resize)
    assert entry == JobClass(Resize, "resize", timeout=3, priority=-1)


def test_task_decorator_refuses_a_class_without_process() -> None:
    """A class with no process() method is no Job class: TypeError naming it."""
    broker = MemoryBroker()

    class NotAJob:
        process = "not callable"

    with pytest.raises(TypeError, match=r"needs a Job class .* NotAJob has none"):
        broker.task(NotAJob)
    with pytest.raises(TypeError, match="dict has none"):
        broker.task(name="d")(dict)
    assert len(broker.registry) == 0


def test_task_decorator_refuses_a_task_and_a_non_callable() -> None:
    """Registering a Task again, or something not callable, is a TypeError."""
    broker = MemoryBroker()
    task = broker.task(add)
    with pytest.raises(TypeError, match="is already a registered task"):
        broker.task(task)
    with pytest.raises(TypeError, match="takes a function or a Job class, got 42"):
        broker.task(name="n")(42)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("defaults", "error", "message"),
    [
        ({"name": ""}, ValueError, "task name must be a non-empty str"),
        ({"timeout": -1}, ValueError, "timeout must be > 0"),
        ({"retry": "3"}, TypeError, "retry must be an asyncpool.Retry"),
        ({"priority": True}, TypeError, "priority must be an int"),
        ({"key": 1.5}, TypeError, "key of a remote job must be a str or an int"),
        ({"max_deliver": 0}, ValueError, "max_deliver must be an int >= 1"),
    ],
    ids=repr,
)
def test_task_decorator_refuses_bad_defaults_before_registering(
    defaults: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A wrong task default raises at decoration, naming it; nothing is registered."""
    broker = MemoryBroker()
    with pytest.raises(error, match=message):
        broker.task(**defaults)
    assert len(broker.registry) == 0


def test_task_decorator_refuses_a_name_taken_by_another_function() -> None:
    """Two functions under one name: ValueError; the first keeps the name."""
    broker = MemoryBroker()
    first = broker.task(name="same")(add)
    with pytest.raises(ValueError, match="task name 'same' is already registered"):
        broker.task(name="same")(mul)
    assert broker.registry.named("same") is first


# -- submit -------------------------------------------------------------


async def test_submit_requires_an_open_broker() -> None:
    """submit and handle on a broker that is not open raise RuntimeError."""
    broker = MemoryBroker()
    task = broker.task(add)
    with pytest.raises(RuntimeError, match="is not open: use `async with broker:` first"):
        await broker.submit(task, 1, 2)
    with pytest.raises(RuntimeError, match="is not open"):
        broker.handle("abc.1")


async def test_broker_opens_once_and_closes() -> None:
    """async with opens then shuts the engine; opening an open broker is a RuntimeError."""
    broker = MemoryBroker()
    async with broker as opened:
        assert opened is broker
        with pytest.raises(RuntimeError, match="is already open"):
            await broker.__aenter__()
    assert (broker.opened, broker.shut) == (1, 1)


async def test_submit_publishes_an_envelope_with_the_task_and_arguments() -> None:
    """submit stores one envelope naming the task, with its args and kwargs, under the codec."""
    broker = MemoryBroker()
    task = broker.task(add)
    async with broker:
        handle = await broker.submit(task, 1, y=2)
        envelope = broker.last_envelope()
    assert envelope.id == handle.id
    assert (envelope.task, envelope.args, envelope.kwargs) == (
        "tests.test_broker.add",
        [1],
        {"y": 2},
    )
    assert (envelope.timeout, envelope.retry, envelope.priority, envelope.key) == (
        None,
        None,
        0,
        None,
    )
    assert (envelope.max_deliver, envelope.result) == (None, True)


async def test_submit_gives_unique_ids_per_broker_and_process() -> None:
    """Job ids are '<origin>.<n>', counting up; two brokers never share an origin."""
    one, two = MemoryBroker(), MemoryBroker()
    task_one, task_two = one.task(add), two.task(add)
    async with one, two:
        ids = [(await one.submit(task_one, i, i)).id for i in range(3)]
        other = (await two.submit(task_two, 0, 0)).id
    origins = {job_id.rsplit(".", 1)[0] for job_id in ids}
    assert len(origins) == 1
    assert [job_id.rsplit(".", 1)[1] for job_id in ids] == ["1", "2", "3"]
    assert other.rsplit(".", 1)[0] not in origins


async def test_submit_fills_options_from_the_task_defaults() -> None:
    """A job without options takes its task's timeout, priority and key."""
    broker = MemoryBroker()
    task = broker.task(timeout=5, priority=2, key="shared", retry=Retry(attempts=9))(add)
    async with broker:
        await broker.submit(task, 1, 2)
    envelope = broker.last_envelope()
    assert (envelope.timeout, envelope.priority, envelope.key) == (5, 2, "shared")
    assert envelope.retry is None  # the task's retry stays with the task, on the worker


async def test_submit_options_override_the_task_defaults() -> None:
    """Per-job timeout, retry, priority, key, max_deliver win over the task's."""
    broker = MemoryBroker()
    task = broker.task(timeout=5, priority=2, key="shared", max_deliver=3)(add)
    async with broker:
        await broker.submit(
            task, 1, 2, timeout=1.5, retry=Retry(attempts=2), priority=-1, key=7, max_deliver=9
        )
    envelope = broker.last_envelope()
    assert (envelope.timeout, envelope.priority, envelope.key, envelope.max_deliver) == (
        1.5,
        -1,
        7,
        9,
    )
    assert envelope.retry is not None
    assert envelope.retry["attempts"] == 2
    assert envelope.args == [1, 2]
    assert envelope.kwargs == {}


async def test_submit_key_function_of_the_task_sees_the_arguments() -> None:
    """A task's key= function is called with the job's arguments (options taken out)."""
    broker = MemoryBroker()
    task = broker.task(key=lambda x, y: f"user-{x}")(add)
    async with broker:
        await broker.submit(task, 7, y=1, priority=1)
    assert broker.last_envelope().key == "user-7"


async def test_submit_option_names_are_reserved() -> None:
    """timeout, retry, priority, key, max_deliver and result are options, never job arguments."""
    broker = MemoryBroker()

    @broker.task
    async def lookup(key: str, timeout: float = 1.0) -> str:
        return key

    async with broker:
        await broker.submit(lookup, key="k", timeout=2.0)
    envelope = broker.last_envelope()
    assert envelope.kwargs == {}
    assert (envelope.key, envelope.timeout) == ("k", 2.0)
    assert {"timeout", "retry", "priority", "key", "max_deliver", "result"} == OPTION_NAMES


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"timeout": 0}, ValueError, "timeout must be > 0"),
        ({"timeout": "1"}, TypeError, "timeout must be a number"),
        ({"retry": 3}, TypeError, "retry must be an asyncpool.Retry or None"),
        ({"retry": Retry(attempts=2, on=KeyError)}, ValueError, "cannot carry on="),
        ({"priority": True}, TypeError, "priority must be an int, got True"),
        ({"priority": "high"}, TypeError, "priority must be an int"),
        ({"key": 1.5}, TypeError, "key of a remote job must be a str or an int .*got float"),
        ({"key": ("a", 1)}, TypeError, "key of a remote job must be a str or an int .*got tuple"),
        ({"key": False}, TypeError, "key of a remote job must be a str or an int .*got bool"),
        ({"max_deliver": 0}, ValueError, "max_deliver must be an int >= 1"),
        ({"result": 0}, TypeError, "result must be a bool, got 0"),
    ],
    ids=repr,
)
async def test_submit_refuses_bad_options_and_publishes_nothing(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A wrong per-job option raises, naming it, before anything is published."""
    broker = MemoryBroker()
    task = broker.task(add)
    async with broker:
        with pytest.raises(error, match=message):
            await broker.submit(task, 1, 2, **options)
    assert broker.transport.published == []


async def test_submit_refuses_an_unregistered_target() -> None:
    """A plain function, or an object of an unregistered class, is a TypeError."""
    broker = MemoryBroker()

    @dataclasses.dataclass
    class Unregistered:
        path: str

        def process(self) -> str:
            return self.path

    async with broker:
        with pytest.raises(TypeError, match="submit\\(\\) takes a task registered with"):
            await broker.submit(add, 1, 2)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="or an instance of a registered Job class"):
            await broker.submit(Unregistered("a"))
    assert broker.transport.published == []


async def test_submit_refuses_a_job_class_itself() -> None:
    """Submitting a registered Job *class* (not an instance) is a TypeError."""
    broker = MemoryBroker()

    @broker.task
    @dataclasses.dataclass
    class Resize:
        path: str

        def process(self) -> str:
            return self.path

    async with broker:
        with pytest.raises(TypeError, match="submit\\(\\) takes a task registered with"):
            await broker.submit(Resize)  # type: ignore[call-overload]


async def test_submit_refuses_a_task_of_another_broker() -> None:
    """A Task registered with another broker (and unknown to this one) is a TypeError."""
    here, there = MemoryBroker(), MemoryBroker()
    foreign = there.task(add)
    async with here:
        with pytest.raises(TypeError, match="registered with another broker"):
            await here.submit(foreign, 1, 2)


async def test_submit_refuses_a_task_shadowed_under_its_name() -> None:
    """A Task whose name this broker gave to another Task object is a TypeError, not sent."""
    here, there = MemoryBroker(), MemoryBroker()
    foreign = there.task(name="shared")(add)
    here.task(name="shared")(add)
    async with here:
        with pytest.raises(TypeError, match="registered with another broker"):
            await here.submit(foreign, 1, 2)
    assert here.transport.published == []


async def test_submit_still_takes_a_task_registered_twice() -> None:
    """Registering the same function twice (accepted) leaves the first Task submittable."""
    broker = MemoryBroker()
    first = broker.task(add)
    broker.task(add)
    async with broker:
        handle = await broker.submit(first, 1, 2)
    assert broker.last_envelope().id == handle.id


async def test_submit_refuses_json_unencodable_arguments_naming_the_task() -> None:
    """An argument the codec cannot write is a TypeError naming the task; nothing is published."""
    broker = MemoryBroker()
    task = broker.task(name="app.store")(add)
    async with broker:
        with pytest.raises(
            TypeError, match=r"the arguments of 'app\.store' cannot be sent"
        ) as caught:
            await broker.submit(task, b"bytes", 2)
        assert isinstance(caught.value.__cause__, TypeError)
        assert "json codec" in str(caught.value)
    assert broker.transport.published == []


async def test_submit_with_msgpack_codec_sends_bytes() -> None:
    """With codec='msgpack', bytes arguments travel."""
    broker = MemoryBroker(codec="msgpack")
    task = broker.task(add)
    async with broker:
        await broker.submit(task, b"\x00\x01", 2)
    assert broker.last_envelope().args == [b"\x00\x01", 2]


async def test_submit_a_job_object_sends_its_fields() -> None:
    """A Job object travels as its class's name and fields (as kwargs), with the class defaults."""
    broker = MemoryBroker()

    @broker.task(name="resize", priority=1, key=lambda path, width: path)
    @dataclasses.dataclass
    class Resize:
        path: str
        width: int = 10

        async def process(self) -> int:
            return self.width

    async with broker:
        await broker.submit(Resize("a.png", width=3), timeout=4)
    envelope = broker.last_envelope()
    assert (envelope.task, envelope.args, envelope.kwargs) == (
        "resize",
        [],
        {"path": "a.png", "width": 3},
    )
    assert (envelope.priority, envelope.key, envelope.timeout) == (1, "a.png", 4)


async def test_submit_a_job_object_refuses_arguments_beside_it() -> None:
    """A Job object carries its own arguments: extra ones are a TypeError."""
    broker = MemoryBroker()

    @broker.task
    @dataclasses.dataclass
    class Resize:
        path: str

        def process(self) -> str:
            return self.path

    async with broker:
        with pytest.raises(TypeError, match="a Job object carries its own arguments"):
            await broker.submit(Resize("a"), "extra")


async def test_submit_failed_publish_raises_and_leaves_no_handle_waiting() -> None:
    """If the engine cannot store the job, submit raises the engine's error."""
    broker = MemoryBroker()
    task = broker.task(add)
    async with broker:
        broker.transport.fail_publish = ConnectionError("server gone")
        with pytest.raises(ConnectionError, match="server gone"):
            await broker.submit(task, 1, 2)
        broker.transport.fail_publish = None
        handle = await broker.submit(task, 1, 2)
        assert handle.id.endswith(".2")  # the failed job's id is not reused


# -- handles ------------------------------------------------------------


async def test_handle_resolves_when_the_record_arrives() -> None:
    """A submitted job's handle resolves from the origin-wide watch, with no read of its own."""
    broker = MemoryBroker()
    task = broker.task(add)
    async with broker:
        handle = await broker.submit(task, 1, 2)
        assert handle.state is JobState.QUEUED
        waiter = asyncio.create_task(_await(handle))
        assert broker.finish(handle.id, Outcome("succeeded", value=3, attempts=1, worker="w:1"))
        assert await waiter == 3
        assert (handle.state, handle.attempts, handle.result()) == (JobState.SUCCEEDED, 1, 3)
        assert await handle == 3
    assert broker.transport.watched == []  # the per-job watch was not needed


async def _await(handle: Any) -> Any:
    return await handle


async def test_handle_by_id_reads_a_record_written_before() -> None:
    """broker.handle(id) in another process finds a record that is already written."""
    shared = MemoryTransport()
    submitter, other = MemoryBroker(shared), MemoryBroker(shared)
    task = submitter.task(add)
    async with submitter, other:
        job_id = (await submitter.submit(task, 1, 2)).id
        submitter.finish(job_id, Outcome("succeeded", value=3, attempts=2))
        handle = other.handle(job_id)
        assert handle.state is JobState.QUEUED  # not read until awaited
        assert await handle == 3
        assert handle.attempts == 2
    assert shared.watched == [job_id]


async def test_handle_by_id_resolves_when_the_record_is_written_later() -> None:
    """broker.handle(id) watches the job and resolves when a worker writes its record."""
    shared = MemoryTransport()
    submitter, other = MemoryBroker(shared), MemoryBroker(shared)
    task = submitter.task(add)
    async with submitter, other:
        job_id = (await submitter.submit(task, 1, 2)).id
        handle = other.handle(job_id)
        waiter = asyncio.create_task(_await(handle))
        await shared.watching.wait()  # the waiter has attached
        assert shared.watched == [job_id]
        submitter.finish(job_id, Outcome("succeeded", value=3, attempts=1))
        assert await waiter == 3


async def test_handle_by_id_twice_shares_one_wait() -> None:
    """Two handles on one id in one process resolve from the same record."""
    broker = MemoryBroker()
    task = broker.task(add)
    async with broker:
        submitted = await broker.submit(task, 1, 2)
        again = broker.handle(submitted.id)
        broker.finish(submitted.id, Outcome("succeeded", value=3, attempts=1))
        assert again.done()
        assert (await submitted, await again) == (3, 3)


async def test_handle_failure_raises_remote_job_error() -> None:
    """A failed record raises RemoteJobError with the remote type, message and traceback."""
    broker = MemoryBroker()
    task = broker.task(add)
    async with broker:
        handle = await broker.submit(task, 1, 2)
        try:
            raise QuotaExceeded("over", 3)
        except QuotaExceeded as exc:
            record = error_record(exc)
        broker.finish(handle.id, Outcome("failed", error=record, attempts=3))
        with pytest.raises(RemoteJobError) as caught:
            await handle
    error = caught.value
    assert (error.job_id, error.type_name, error.attempts) == (
        handle.id,
        "tests.test_broker.QuotaExceeded",
        3,
    )
    assert error.message == "('over', 3)"
    assert "raise QuotaExceeded" in error.traceback
    assert handle.state is JobState.FAILED


async def test_register_error_rebuilds_the_job_exception() -> None:
    """A class passed to register_error comes back as itself, caused by the RemoteJobError."""
    broker = MemoryBroker()
    assert broker.register_error(QuotaExceeded) is QuotaExceeded
    task = broker.task(add)
    async with broker:
        handle = await broker.submit(task, 1, 2)
        record = error_record(QuotaExceeded("over", 3))
        broker.finish(handle.id, Outcome("failed", error=record, attempts=1))
        with pytest.raises(QuotaExceeded) as caught:
            await handle
    assert caught.value.args == ("over", 3)
    assert isinstance(caught.value.__cause__, RemoteJobError)
    assert caught.value.__cause__.job_id == handle.id


def test_register_error_works_as_a_decorator_and_refuses_non_exceptions() -> None:
    """@broker.register_error returns the class; a non-Exception is a TypeError."""
    broker = MemoryBroker()

    @broker.register_error
    class Mine(Exception):
        pass

    assert issubclass(Mine, Exception)
    with pytest.raises(TypeError, match="takes an Exception subclass"):
        broker.register_error(int)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="takes an Exception subclass"):
        broker.register_error(SystemExit)


async def test_handle_with_undecodable_record_raises_payload_error() -> None:
    """A record that does not decode fails the awaiter with PayloadError."""
    broker = MemoryBroker()
    task = broker.task(add)
    async with broker:
        handle = await broker.submit(task, 1, 2)
        broker.transport.write(handle.id, b"not a record")
        with pytest.raises(PayloadError, match="not a JSON payload"):
            await handle


async def test_fire_and_forget_handle_raises_runtime_error() -> None:
    """result=False: the envelope says so, and awaiting the handle raises RuntimeError."""
    broker = MemoryBroker()
    task = broker.task(add)
    async with broker:
        handle = await broker.submit(task, 1, 2, result=False)
        assert broker.last_envelope().result is False
        assert handle.state is JobState.QUEUED
        assert not handle.done()
        with pytest.raises(
            RuntimeError, match=f"remote job {handle.id} was submitted with result=False"
        ):
            await handle
        with pytest.raises(RuntimeError, match="result=False"):
            await handle


async def test_fire_and_forget_handle_needs_no_awaiter() -> None:
    """A fire-and-forget handle dropped unawaited reports no lost exception."""
    broker = MemoryBroker()
    task = broker.task(add)
    async with broker:
        await broker.submit(task, 1, 2, result=False)
    # The leak guard fails the test if the handle's exception was never retrieved.


async def test_closing_the_broker_cancels_waiting_handles() -> None:
    """A handle still waiting when the broker closes raises CancelledError."""
    broker = MemoryBroker()
    task = broker.task(add)
    async with broker:
        handle = await broker.submit(task, 1, 2)
    with pytest.raises(asyncio.CancelledError):
        await handle


# -- cancel -------------------------------------------------------------


async def test_cancel_writes_the_cancelled_record_and_tells_workers() -> None:
    """cancel() of an unfinished job writes a cancelled record, asks workers to stop, is True."""
    broker = MemoryBroker()
    task = broker.task(add)
    async with broker:
        handle = await broker.submit(task, 1, 2)
        assert await handle.cancel() is True
        assert broker.transport.cancels == [handle.id]
        record = Outcome.decode(broker.transport.outcomes[handle.id], broker.codec)
        assert record.state == "cancelled"
        assert handle.state is JobState.CANCELLED
        with pytest.raises(asyncio.CancelledError):
            await handle
        assert await handle.cancel() is True
        assert broker.transport.cancels == [handle.id]  # asked once
        # The worker's later record loses: the cancelled one was written first.
        assert not broker.finish(handle.id, Outcome("succeeded", value=3, attempts=1))


async def test_cancel_after_the_job_ended_returns_false_and_resolves() -> None:
    """cancel() of a job whose record was already written returns False and takes that record."""
    shared = MemoryTransport()
    submitter, other = MemoryBroker(shared), MemoryBroker(shared)
    task = submitter.task(add)
    async with submitter, other:
        job_id = (await submitter.submit(task, 1, 2)).id
        handle = other.handle(job_id)
        submitter.finish(job_id, Outcome("succeeded", value=3, attempts=1))
        assert await handle.cancel() is False
        assert shared.cancels == []
        assert handle.state is JobState.SUCCEEDED
        assert await handle == 3


async def test_cancel_of_a_job_already_cancelled_elsewhere_returns_true() -> None:
    """cancel() finding a cancelled record written by someone else returns True."""
    shared = MemoryTransport()
    submitter, other = MemoryBroker(shared), MemoryBroker(shared)
    task = submitter.task(add)
    async with submitter, other:
        handle = await submitter.submit(task, 1, 2)
        assert await other.handle(handle.id).cancel() is True
        assert handle.state is JobState.CANCELLED  # the origin watch brought the record
        assert await handle.cancel() is True
    assert shared.cancels == [handle.id]


async def test_unknown_task_name_is_unknown_task_in_the_registry() -> None:
    """The registry of a broker refuses names it does not know (what a worker dead-letters)."""
    broker = MemoryBroker()
    broker.task(add)
    with pytest.raises(UnknownTask):
        broker.registry.named("tests.test_broker.mul")


class _LateCancels(MemoryTransport):
    """Its cancellation watch has read the old cancellations only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.fetched = asyncio.Event()
        self.cancelled_before_fetch: list[str] = []
        self._known: list[str] = []

    async def watch_cancels(
        self, cancelled: Callable[[str], None], caught_up: Callable[[], None]
    ) -> None:
        await self.release.wait()
        cancelled("old.1")
        self._known.append("old.1")
        caught_up()
        await asyncio.Event().wait()

    async def fetch(self, most: int) -> list[Delivery]:
        self.cancelled_before_fetch = list(self._known)
        self.fetched.set()
        return []

    async def wait_for_work(self, timeout: float) -> None:
        await asyncio.Event().wait()


# Regression: serve took jobs before its cancellation watch had read the
# cancellations already made, so a job cancelled while queued could run.
async def test_serve_takes_no_job_before_it_knows_the_cancellations_made() -> None:
    """The first fetch comes only after the watch has passed on every old cancellation."""
    transport = _LateCancels()
    broker = MemoryBroker(transport)
    stop = asyncio.Event()
    async with asyncio.timeout(10), broker, Dispatcher(workers=2) as dispatcher:
        serving = asyncio.create_task(broker.serve(dispatcher, stop=stop))
        for _ in range(20):  # many chances to fetch too early
            await asyncio.sleep(0)
        assert not transport.fetched.is_set()
        transport.release.set()
        await transport.fetched.wait()
        assert transport.cancelled_before_fetch == ["old.1"]
        stop.set()
        report = await serving
    assert report.taken == 0


async def test_serve_stopped_before_the_cancellations_are_read_returns() -> None:
    """A stop while the cancellation watch is still reading ends serve; nothing is fetched."""
    transport = _LateCancels()
    broker = MemoryBroker(transport)
    stop = asyncio.Event()
    async with asyncio.timeout(10), broker, Dispatcher(workers=2) as dispatcher:
        serving = asyncio.create_task(broker.serve(dispatcher, stop=stop))
        for _ in range(5):
            await asyncio.sleep(0)
        stop.set()
        report = await serving
    assert report.taken == 0
    assert not transport.fetched.is_set()
