"""`BrokerSource` over an in-memory broker: workers, jobs and rates from the heartbeats.

The broker here is `tests.test_broker.MemoryBroker`, whose transport keeps
the workers' statuses in a dict (as a server keeps them), with fixed lane
counts. What the real engines store and count is the conformance suite's
business (tests/brokers/); this checks what the dashboard makes of it.
"""

from __future__ import annotations

import time
from typing import Any

from asyncpool._dashboard_sources import FORGET_AFTER, BrokerSource
from asyncpool._joblog import JobRecord
from asyncpool._lanes_info import LaneInfo
from asyncpool._status import WorkerStatus
from asyncpool.dashboard import create_app
from tests.test_broker import MemoryBroker
from tests.test_dashboard import TOKEN, serving


class LanesBroker(MemoryBroker):
    """A MemoryBroker whose lanes hold fixed counts."""

    async def lanes(self) -> list[LaneInfo]:
        return [LaneInfo("high", 0, 0), LaneInfo("normal", 5, 2, 1), LaneInfo("keys", 1, 1)]


def record(job_id: str, state: str, at: float, lane: str = "normal", **more: Any) -> JobRecord:
    """A job record whose times are all `at`."""
    return JobRecord(
        id=job_id,
        task="app.resize",
        state=state,
        attempts=1,
        queued_at=at,
        started_at=at,
        finished_at=at if state in ("succeeded", "failed", "cancelled") else None,
        args="'a.png'",
        lane=lane,
        **more,
    )


async def beat(
    broker: MemoryBroker,
    worker: str,
    *,
    succeeded: int = 0,
    failed: int = 0,
    running: list[JobRecord] | None = None,
    recent: list[JobRecord] | None = None,
    at: float | None = None,
) -> None:
    """Put a heartbeat of `worker` (written now, or `at`) where the broker reads them."""
    now = time.time() if at is None else at
    stats = {"workers": 4, "idle": 4 - len(running or []), "busy": len(running or []), "queued": 0}
    stats |= {"succeeded": succeeded, "failed": failed, "cancelled": 0}
    status = WorkerStatus(
        worker=worker,
        at=now,
        started_at=now - 100,
        dispatcher="worker",
        stats=stats,
        serve={},
        running=running or [],
        recent=recent or [],
    )
    await broker.transport.put_status(worker, status.encode(), 10.0)


async def test_workers_come_from_the_heartbeats() -> None:
    """One row per live worker, with its counters."""
    async with LanesBroker() as broker:
        await beat(broker, "b:2", succeeded=7, failed=1, running=[record("x.1", "running", 1.0)])
        await beat(broker, "a:1", succeeded=3)
        rows = await BrokerSource(broker).workers()
    assert [(r.name, r.busy, r.idle, r.succeeded, r.failed) for r in rows] == [
        ("a:1", 0, 4, 3, 0),
        ("b:2", 1, 3, 7, 1),
    ]


async def test_recent_jobs_are_every_workers_running_and_recent_newest_first() -> None:
    """The union of the heartbeats' jobs, newest first; a job seen twice shows its latest record."""
    now = time.time()
    async with LanesBroker() as broker:
        first_try = record("j.1", "failed", now - 30)
        await beat(broker, "a:1", recent=[record("j.2", "succeeded", now - 20), first_try])
        await beat(broker, "b:2", running=[record("j.1", "running", now - 5)])
        source = BrokerSource(broker)
        jobs = await source.jobs()
        failed = await source.jobs("failed")
        limited = await source.jobs(limit=1)
    assert [(r.id, r.state) for r in jobs] == [("j.1", "running"), ("j.2", "succeeded")]
    assert failed == []
    assert [r.id for r in limited] == ["j.1"]


async def test_finished_count_only_grows_as_workers_come_and_go() -> None:
    """The count grows by what each worker finished since last seen; a restart does not lower it."""
    async with LanesBroker() as broker:
        source = BrokerSource(broker, cache_for=0)
        await beat(broker, "a:1", succeeded=10)
        assert await source.finished() == 0  # a baseline: what finished before is not counted
        await beat(broker, "a:1", succeeded=14, failed=1)
        assert await source.finished() == 5
        await beat(broker, "a:1", succeeded=2)  # restarted under the same name
        await beat(broker, "b:2", succeeded=50)
        assert await source.finished() == 5
        await beat(broker, "b:2", succeeded=53)
        assert await source.finished() == 8


async def test_an_older_heartbeat_read_late_is_not_counted_again() -> None:
    """Two overlapping reads may end out of order: the older heartbeat is skipped."""
    async with LanesBroker() as broker:
        source = BrokerSource(broker, cache_for=0)
        await beat(broker, "a:1", succeeded=10, at=100.0)
        assert await source.finished() == 0
        await beat(broker, "a:1", succeeded=12, at=110.0)
        assert await source.finished() == 2
        await beat(broker, "a:1", succeeded=11, at=105.0)  # read by a slower request
        assert await source.finished() == 2
        await beat(broker, "a:1", succeeded=15, at=120.0)
        assert await source.finished() == 5


async def test_lanes_come_from_the_broker_with_rates_from_recent_jobs() -> None:
    """Lane counts are the broker's; a lane's rate counts its jobs finished in the last 10 s."""
    now = time.time()
    async with LanesBroker() as broker:
        recent = [record(f"n.{i}", "succeeded", now - i) for i in range(5)]
        recent += [record("old.1", "succeeded", now - 60)]
        recent += [record("k.1", "succeeded", now - 1, lane="keys")]
        await beat(broker, "a:1", recent=recent)
        lanes = await BrokerSource(broker).lanes()
    assert [(lane.name, lane.waiting, lane.running, lane.delayed) for lane in lanes] == [
        ("high", 0, 0, 0),
        ("normal", 5, 2, 1),
        ("keys", 1, 1, 0),
    ]
    assert [lane.rate for lane in lanes] == [0.0, 0.5, 0.1]


class NamedLanesBroker(MemoryBroker):
    """A MemoryBroker whose engine has lanes of its own beside the priority lanes."""

    async def lanes(self) -> list[LaneInfo]:
        return [LaneInfo("low", 0, 0), LaneInfo("bulk_low", 0, 0), LaneInfo("key_accounts", 0, 0)]


async def test_a_lanes_rate_counts_records_of_exactly_its_name() -> None:
    """Records name their lane as deliveries do, as `broker.lanes()` does: matched as they are."""
    now = time.time()
    async with NamedLanesBroker() as broker:
        recent = [record("l.1", "succeeded", now - 1, lane="low")]
        recent += [record(f"b.{i}", "succeeded", now - 1, lane="bulk_low") for i in range(2)]
        recent += [record(f"k.{i}", "succeeded", now - 1, lane="key_accounts") for i in range(3)]
        await beat(broker, "a:1", recent=recent)
        lanes = await BrokerSource(broker).lanes()
    assert [(lane.name, lane.rate) for lane in lanes] == [
        ("low", 0.1),
        ("bulk_low", 0.2),
        ("key_accounts", 0.3),
    ]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_workers_gone_for_long_are_forgotten_and_the_count_stays() -> None:
    """Restarted workers (a new name each time) are forgotten once unseen for FORGET_AFTER."""
    clock = Clock()
    async with LanesBroker() as broker:
        source = BrokerSource(broker, cache_for=0, clock=clock)
        for pid in range(20):  # a worker restarting: each life a new "host:pid"
            name = f"host:{pid}"
            await beat(broker, name, succeeded=0, at=float(pid * 2))
            await source.finished()
            await beat(broker, name, succeeded=3, at=float(pid * 2 + 1))
            assert await source.finished() == 3 * (pid + 1)
            await broker.transport.drop_status(name)
            clock.now += 60.0
        total = await source.finished()
        # Each was last seen 60 s after the one before: those of the last
        # FORGET_AFTER seconds are remembered, the older ones forgotten.
        remembered = {f"host:{pid}" for pid in range(20 - int(FORGET_AFTER // 60.0), 20)}
        assert set(source._seen) == remembered
        clock.now += FORGET_AFTER + 1
        assert await source.finished() == total == 60
        assert source._seen == {}
        # A worker that comes back after that starts from a new baseline.
        await beat(broker, "host:19", succeeded=10, at=100.0)
        assert await source.finished() == 60
        await beat(broker, "host:19", succeeded=12, at=101.0)
        assert await source.finished() == 62


async def test_a_worker_seen_again_is_not_forgotten() -> None:
    """A worker whose heartbeats keep coming stays known however long it runs."""
    clock = Clock()
    async with LanesBroker() as broker:
        source = BrokerSource(broker, cache_for=0, clock=clock)
        await beat(broker, "a:1", succeeded=1, at=1.0)
        await source.finished()
        for i in range(5):
            clock.now += FORGET_AFTER / 2
            await beat(broker, "a:1", succeeded=2 + i, at=2.0 + i)
            assert await source.finished() == 1 + i
        assert list(source._seen) == ["a:1"]


async def test_cancel_goes_through_the_brokers_handle() -> None:
    """Cancelling a remote job writes its cancelled record and asks the workers to stop it."""
    async with LanesBroker() as broker:
        source = BrokerSource(broker)
        assert await source.cancel("abc.1") is True
        assert broker.transport.cancels == ["abc.1"]
        assert await source.cancel("abc.1") is True  # already cancelled: still cancelled


async def test_a_broker_without_dead_letters_says_so() -> None:
    """A broker with no dead-letter methods lists none, and its page says there are none."""
    async with LanesBroker() as broker:
        source = BrokerSource(broker)
        assert not source.keeps_dead_letters
        assert await source.dead_letters() == []
        async with serving(create_app(broker, token=TOKEN)) as client:
            page = (await client.get("/dead-letters")).text
            overview = (await client.get("/api/overview")).json()
    assert 'data-testid="no-dead-letters"' in page
    assert [lane["name"] for lane in overview["lanes"]] == ["high", "normal", "keys"]
