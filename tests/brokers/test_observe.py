"""What a broker shows of itself, on every engine: worker heartbeats, job look-ups, instruments.

`broker.workers()` lists the live workers from their heartbeats,
`broker.find_job()` finds a job in them (or in its record once they forgot
it), and a broker's instruments are told about each job `serve()` runs
(named by its remote id, lane and attempt, with the carrier its submitter
captured) and about what is done with each delivery.

Heartbeats are written once a second in real time, so the tests wait for
the store to show a state (`eventually`, with a deadline), never a fixed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from asyncpool import BrokerEvent, Instrument, JobRun, Retry
from asyncpool.brokers import RemoteJobError, current_job

from ._harness import Gate, register, serving

if TYPE_CHECKING:
    from ._engines import AnyBroker, Engine

pytestmark = pytest.mark.timeout(40)

T = TypeVar("T")


async def eventually(read: Callable[[], Awaitable[T]], ok: Callable[[T], bool]) -> T:
    """Read until `ok` holds (the test's timeout bounds it)."""
    while True:
        value = await read()
        if ok(value):
            return value
        await asyncio.sleep(0.1)


class Recorder(Instrument):
    """Remembers what it is told; captures a fixed carrier at submit."""

    def __init__(self) -> None:
        self.runs: list[JobRun] = []
        self.events: list[BrokerEvent] = []
        self.extended = asyncio.Event()

    def capture(self, carrier: dict[str, str]) -> None:
        carrier["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async def run(self, job: JobRun, call: Callable[[], Awaitable[Any]]) -> Any:
        self.runs.append(job)
        return await call()

    def broker_event(self, event: BrokerEvent) -> None:
        self.events.append(event)
        if event.kind == "lease_extended":
            self.extended.set()


def make_broker(engine: Engine, name: str, **options: Any) -> AnyBroker:
    return engine.broker(name, ack_wait=options.pop("ack_wait", 5), **options)


async def test_workers_shows_a_serving_worker_and_what_it_runs(
    engine: Engine, broker_name: str
) -> None:
    """A worker's heartbeat lists the job it runs, then the one it finished; it goes as it stops."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
        tasks = register(broker, gate)
        async with serving(broker):
            handle = await broker.submit(tasks["wait"])
            await gate.started.wait()
            statuses = await eventually(
                broker.workers,
                lambda found: any(r.id == handle.id for s in found for r in s.running),
            )
            assert len(statuses) == 1
            status = statuses[0]
            assert status.stats["busy"] == 1
            running = next(r for r in status.running if r.id == handle.id)
            assert (running.task, running.state, running.lane) == ("wait", "running", "normal")
            gate.release.set()
            assert await handle == "released"
            statuses = await eventually(
                broker.workers,
                lambda found: any(r.id == handle.id for s in found for r in s.recent),
            )
            done = next(r for r in statuses[0].recent if r.id == handle.id)
            assert (done.state, done.result, done.attempts) == ("succeeded", "'released'", 1)
            assert statuses[0].serve["succeeded"] == 1
        assert await broker.workers() == []


async def test_find_job_reads_heartbeats_then_records(engine: Engine, broker_name: str) -> None:
    """A job is found with its arguments while a worker remembers it, and by its record after."""
    gate = Gate()
    async with make_broker(engine, broker_name) as broker:
        tasks = register(broker, gate)
        async with serving(broker):
            handle = await broker.submit(tasks["add"], 2, 3)
            assert await handle == 5
            record = await eventually(
                lambda: broker.find_job(handle.id), lambda r: r is not None and r.args != ""
            )
            assert record is not None
            assert (record.args, record.state, record.result) == ("2, 3", "succeeded", "5")
            assert record.worker is not None
            assert record.started_at is not None
        # The worker stopped: its status is gone, the record stays.
        later = await broker.find_job(handle.id)
        assert later is not None
        assert (later.state, later.result, later.attempts, later.args) == ("succeeded", "5", 1, "")
        assert await broker.find_job("no-such-job") is None


async def test_find_job_shows_the_traceback_of_a_failed_job(
    engine: Engine, broker_name: str
) -> None:
    """A job whose last attempt failed is found with its error and traceback."""
    async with make_broker(engine, broker_name) as broker:

        @broker.task(name="boom", retry=Retry(attempts=1))
        async def boom(what: str) -> None:
            raise ValueError(f"bad {what}")

        async with serving(broker):
            handle = await broker.submit(boom, "input")
            with pytest.raises(RemoteJobError):
                await handle
            record = await eventually(
                lambda: broker.find_job(handle.id),
                lambda r: r is not None and r.state == "failed" and r.args != "",
            )
        assert record is not None
        assert record.error is not None
        assert record.error["type"] == "builtins.ValueError"
        assert "bad input" in record.error["traceback"]


async def test_instruments_see_remote_jobs_and_deliveries(engine: Engine, broker_name: str) -> None:
    """Instruments get a remote job's id, lane, attempt and carrier, and each delivery's fate."""
    recorder = Recorder()
    async with make_broker(engine, broker_name, ack_wait=1.5, instruments=[recorder]) as broker:
        release = asyncio.Event()

        @broker.task(name="slow")
        async def slow() -> int:
            await release.wait()
            return current_job().attempt

        @broker.task(name="fails", retry=Retry(attempts=2, backoff=0.01, jitter=0))
        async def fails() -> None:
            raise RuntimeError("no")

        async with serving(broker):
            handle = await broker.submit(slow, priority=1)
            await recorder.extended.wait()  # a lease kept while the job runs
            release.set()
            assert await handle == 1
            failing = await broker.submit(fails)
            with pytest.raises(RemoteJobError):
                await failing
        run = next(r for r in recorder.runs if r.job_id == handle.id)
        assert (run.task, run.lane, run.attempt) == ("slow", "high", 1)
        assert run.carrier == {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        }
        attempts = [r.attempt for r in recorder.runs if r.job_id == failing.id]
        assert attempts == [1, 2]
        kinds = [(e.kind, e.task) for e in recorder.events]
        assert kinds.count(("fetched", "slow")) == 1
        assert ("lease_extended", "slow") in kinds
        assert kinds.count(("acked", "slow")) == 1
        assert kinds.count(("redelivered", "fails")) == 1
        assert kinds.count(("dead_lettered", "fails")) == 1
        assert kinds.count(("acked", "fails")) == 1
        assert [e.kind for e in recorder.events].count("fetched") == 3
        assert {e.lane for e in recorder.events if e.task == "slow"} == {"high"}


async def test_an_unregistered_task_name_is_not_passed_to_instruments(
    engine: Engine, broker_name: str
) -> None:
    """A delivery naming a task the worker does not know is reported with task None."""
    recorder = Recorder()
    async with (
        make_broker(engine, broker_name) as producer,
        make_broker(engine, broker_name, instruments=[recorder]) as worker,
    ):

        @producer.task(name="ghost-task-made-up-by-a-producer")
        async def ghost() -> None:
            pass

        async with serving(worker):
            handle = await producer.submit(ghost)
            with pytest.raises(RemoteJobError):
                await handle
            await eventually(
                worker.dead_letters, lambda letters: any(d.id == handle.id for d in letters)
            )
        kinds = [(e.kind, e.task) for e in recorder.events]
        assert ("fetched", None) in kinds
        assert ("dead_lettered", None) in kinds
        assert all(task is None for _, task in kinds)
