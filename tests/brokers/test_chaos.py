"""Chaos: the distributed guarantees of every broker engine under killed workers and a restart.

Each test runs once per engine (`machine_engine`: JetStream on the machine's
NATS, Redis on the machine's Redis; the restart test on a private server of
its own, a Redis one with its append-only file on) with real `python -m
asyncpool worker tests.brokers.chaos_tasks:broker` processes, and judges what
happened from two witnesses that do not trust each other: the outcomes the
submitting process gets from its `RemoteHandle`s, and the record file every
run appends to (chaos_tasks.py).

Times: the broker's lease (`ack_wait`) is short (1-2 s) where a test waits
for redeliveries, and long (30 s) where a test must prove that nothing waited
for a lease to run out. Nothing sleeps to synchronize: the tests wait on
handles, on process exits, or (bounded) on the record file, which other
processes write and so gives no event to wait on. The two `asyncio.sleep`s
that remain are a load generator's pace and the chaos jitter of a kill.

The test process's event loop plays no part in what is tested (the workers
are other processes), so these tests run on the default loop only.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
import pytest

from asyncpool.brokers import RemoteHandle, RemoteJobError

from ._engines import KINDS, Engine
from ._servers import (
    ENV_ACK_WAIT,
    ENV_NAME,
    ENV_RECORDS,
    REDIS_ERRORS,
    Run,
    RunRecord,
    WorkerFleet,
    WorkerProcess,
    read_records,
    runs_by_id,
    wait_for_records,
)
from .chaos_tasks import MAX_ATTEMPTS, ChaosApp
from .conftest import PrivateNats, PrivateRedis

if TYPE_CHECKING:
    from ._engines import AnyBroker

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_factories=["asyncio"])]

T = TypeVar("T")


# -- the rig ------------------------------------------------------------------


@dataclass
class Rig:
    """One test's engine and server, broker name, record file and worker processes."""

    engine: Engine
    name: str
    records: Path
    fleet: WorkerFleet
    ack_wait: float

    def env(self) -> dict[str, str]:
        return {
            **self.engine.worker_env(),
            ENV_NAME: self.name,
            ENV_ACK_WAIT: str(self.ack_wait),
            ENV_RECORDS: str(self.records),
        }

    def start_worker(
        self, *, workers: int = 4, grace: float | None = None, label: str | None = None
    ) -> WorkerProcess:
        return self.fleet.start(self.env(), workers=workers, grace=grace, label=label)

    def client(self) -> ChaosApp:
        """The submitting side: the same broker name and tasks, plus `chaos.unknown`."""
        return ChaosApp(
            self.engine.url, self.name, self.ack_wait, client=True, engine=self.engine.kind
        )

    def read(self) -> list[RunRecord]:
        return read_records(self.records)

    async def diagnose(self, job_ids: list[str]) -> str:
        """For a failure message: the runs of `job_ids`, their records, the workers' stderr."""
        runs = runs_by_id(self.read())
        lines = [f"{job_id}: runs {runs.get(job_id, [])}" for job_id in job_ids]
        try:
            records = await self.engine.terminal_records(self.name, job_ids)
            lines += [f"{job_id}: record in {where}" for job_id, where in records.items()]
        except (*REDIS_ERRORS, nats.errors.Error) as exc:
            lines.append(f"(could not read the records on the server: {exc!r})")
        return "\n".join([*lines, self.fleet.describe()])

    async def wait_for(
        self, ready: Callable[[list[RunRecord]], bool], *, timeout: float, what: str
    ) -> list[RunRecord]:
        return await wait_for_records(
            self.records, ready, timeout=timeout, what=what, describe=self.fleet.describe
        )


@dataclass
class Outcome:
    """What awaiting one RemoteHandle gave: a value or an exception."""

    value: object = None
    error: Exception | None = None


async def collect(
    handles: Mapping[str, RemoteHandle[T]], *, timeout: float, rig: Rig
) -> dict[str, Outcome]:
    """Await every handle (bounded); fail listing the ids that reached no outcome, and why."""
    outcomes: dict[str, Outcome] = {}

    async def one(job_id: str, handle: RemoteHandle[T]) -> None:
        try:
            outcomes[job_id] = Outcome(value=await handle)
        except Exception as exc:  # an outcome under test: kept, then judged
            outcomes[job_id] = Outcome(error=exc)

    try:
        async with asyncio.timeout(timeout):
            async with asyncio.TaskGroup() as group:
                for job_id, handle in handles.items():
                    group.create_task(one(job_id, handle))
    except TimeoutError:
        missing = sorted(set(handles) - set(outcomes))
        raise AssertionError(
            f"{len(missing)} of {len(handles)} jobs reached no outcome within {timeout} s "
            f"(lost?): {missing[:20]}\n{await rig.diagnose(missing[:20])}"
        ) from None
    return outcomes


def report(counts: dict[str, Any], path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Write the counts as JSON to `path` and print them past pytest's capture."""
    path.write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")
    with capsys.disabled():
        print(f"\n{path.stem}: {json.dumps(counts, sort_keys=True)} ({path})")


def check_run_sequence(
    job_id: str, runs: list[Run], killed: Mapping[int, float], submitted: float
) -> int:
    """Check one job's runs against at-least-once; return how many deliveries never started.

    * attempts count deliveries: they grow with every run and never pass MAX_ATTEMPTS;
      a run's attempt is its place among the job's runs, unless a delivery
      went to a worker that was killed before it started the job (prefetched):
      such a gap needs a kill between the runs;
    * every run but the last was on a worker that was later SIGKILLed (a
      duplicate only after a death), and a run starts only after the one
      before it ended or its worker was killed (never two at once).
    """
    assert len(runs) <= MAX_ATTEMPTS, f"{job_id} ran {len(runs)} times: {runs}"
    kill_times = sorted(killed.values())
    skipped = 0
    previous_attempt, previous_time = 0, submitted
    for position, run in enumerate(runs):
        assert previous_attempt < run.attempt <= MAX_ATTEMPTS, (
            f"{job_id}: run {position + 1} has attempt {run.attempt} "
            f"after {previous_attempt}: {runs}"
        )
        if run.attempt != previous_attempt + 1:
            assert any(previous_time <= k <= run.start.t for k in kill_times), (
                f"{job_id}: attempt {run.attempt} follows {previous_attempt} with no kill "
                f"in between: a delivery went missing: {runs}"
            )
            skipped += run.attempt - previous_attempt - 1
        if position < len(runs) - 1:
            assert run.pid in killed, (
                f"{job_id} ran again although its run on live pid {run.pid} ended: {runs}"
            )
            ended = run.end.t if run.end is not None else killed[run.pid]
            following = runs[position + 1]
            assert following.start.t >= ended, (
                f"{job_id}: a run started on pid {following.pid} while the one on pid "
                f"{run.pid} was still going: {runs}"
            )
        previous_attempt = run.attempt
        previous_time = run.start.t
    return skipped


# -- a. SIGKILL mid-job, many rounds ---------------------------------------------

KILL_ROUNDS = 24
KILL_ACK_WAIT = 2.0
PRODUCER_PACE = 0.05  # seconds between submissions: ~20 jobs/s, below what 8 slots run
PRODUCER_MOST = 2000  # the producer's bound; the rounds end long before


@pytest.mark.timeout(180)
async def test_sigkill_mid_job_every_job_reaches_one_outcome(
    machine_engine: Engine,
    broker_name: str,
    worker_fleet: WorkerFleet,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Workers SIGKILLed mid-job, round on round: one outcome per job, reruns only after a kill."""
    started = time.monotonic()
    rig = Rig(machine_engine, broker_name, tmp_path / "runs.jsonl", worker_fleet, KILL_ACK_WAIT)
    rng = random.Random(1729)
    slots = [rig.start_worker(label="a0"), rig.start_worker(label="b0")]
    app = rig.client()
    handles: dict[str, RemoteHandle[str]] = {}
    submitted_at: dict[str, float] = {}
    done_producing = asyncio.Event()

    async def produce(broker: AnyBroker) -> None:
        for _ in range(PRODUCER_MOST):
            if done_producing.is_set():
                return
            before = time.time()
            handle = await broker.submit(app.work, rng.uniform(0.05, 0.3))
            handles[handle.id], submitted_at[handle.id] = handle, before
            await asyncio.sleep(PRODUCER_PACE)  # the load's pace, not a synchronization

    async with app.broker:
        broker = app.broker
        async with asyncio.TaskGroup() as group:
            group.create_task(produce(broker))
            seen = 0
            for round_no in range(KILL_ROUNDS):
                slot = round_no % 2  # the other slot keeps serving meanwhile
                victim = slots[slot]

                def first_run_on_victim(
                    records: list[RunRecord], pid: int = victim.pid, seen: int = seen
                ) -> bool:
                    return any(
                        r.ev == "start" and r.pid == pid and r.attempt == 1 for r in records[seen:]
                    )

                records = await rig.wait_for(
                    first_run_on_victim,
                    timeout=30,
                    what=f"round {round_no}: a first run starting on {victim.label}",
                )
                seen = len(records)
                # Chaos, not synchronization: land the kill at varied points of the jobs.
                await asyncio.sleep(rng.uniform(0, 0.15))
                victim.kill()
                slots[slot] = rig.start_worker(label=f"{'ab'[slot]}{round_no // 2 + 1}")
            done_producing.set()
        outcomes = await collect(handles, timeout=60, rig=rig)

    killed = worker_fleet.killed_pids
    runs = runs_by_id(rig.read())
    skipped = dead = 0
    for job_id, handle in handles.items():
        job_runs = runs.get(job_id, [])
        outcome = outcomes[job_id]
        skipped += check_run_sequence(job_id, job_runs, killed, submitted_at[job_id])
        if outcome.error is not None:
            # The only way this job may fail: every delivery died with its worker.
            assert all(r.pid in killed for r in job_runs), (
                f"{job_id} failed with {outcome.error!r} though not every run was killed: "
                f"{job_runs}"
            )
            dead += 1
            continue
        assert job_runs, f"{job_id} has a result but never ran: {outcome.value!r}"
        last = job_runs[-1]
        assert last.end is not None, f"{job_id}: its last run never ended: {job_runs}"
        assert outcome.value == f"{job_id}:{last.attempt}", (
            f"{job_id}: the result {outcome.value!r} is not its last run's: {job_runs}"
        )
        assert handle.attempts == last.attempt, (
            f"{job_id}: handle.attempts {handle.attempts} but the last run was attempt "
            f"{last.attempt}"
        )
    all_runs = [run for job_runs in runs.values() for run in job_runs]
    killed_mid_job = sum(1 for run in all_runs if run.pid in killed and run.end is None)
    duplicated = sum(1 for job_id in handles if len(runs.get(job_id, [])) > 1)
    counts = {
        "rounds": KILL_ROUNDS,
        "jobs": len(handles),
        "kills": len(killed),
        "runs": len(all_runs),
        "runs_killed_mid_job": killed_mid_job,
        "jobs_run_more_than_once": duplicated,
        "extra_runs": len(all_runs) - len(runs),
        "deliveries_never_started": skipped,
        "dead_after_max_deliveries": dead,
        "succeeded": len(handles) - dead,
        "lost": 0,
        "max_attempts": MAX_ATTEMPTS,
        "ack_wait": KILL_ACK_WAIT,
        "seconds": round(time.monotonic() - started, 1),
    }
    report(counts, tmp_path / f"{machine_engine.kind}-chaos-sigkill.json", capsys)
    assert len(killed) == KILL_ROUNDS
    # The kills hit running jobs (else this test proved nothing).
    assert killed_mid_job >= KILL_ROUNDS // 2, counts
    assert duplicated >= 1, counts


# -- b. the server restarts mid-run -------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
async def test_server_restart_mid_run_loses_nothing(
    kind: str,
    broker_name: str,
    worker_fleet: WorkerFleet,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    """A server restart (same port and data) mid-run: every job still succeeds; workers go on."""
    started = time.monotonic()
    # A private server of the engine's kind: the machine's is never restarted.
    # (A private Redis writes every change to its append-only file first.)
    factory: PrivateNats | PrivateRedis = request.getfixturevalue(
        "private_nats" if kind == "jetstream" else "private_redis"
    )
    server = factory()
    engine = Engine(kind, server.url, f"{kind}-private")
    rig = Rig(engine, broker_name, tmp_path / "runs.jsonl", worker_fleet, ack_wait=2.0)
    rng = random.Random(31337)
    workers = [rig.start_worker(label="a"), rig.start_worker(label="b")]
    app = rig.client()
    handles: dict[str, RemoteHandle[str]] = {}
    resubmits = 0
    async with app.broker:
        broker = app.broker
        for _ in range(80):
            handle = await broker.submit(app.work, rng.uniform(0.05, 0.2))
            handles[handle.id] = handle
        await rig.wait_for(
            lambda records: sum(r.ev == "start" for r in records) >= 15,
            timeout=30,
            what="15 jobs started before the restart",
        )
        await asyncio.to_thread(server.restart)
        restarted_at = time.time()
        # Jobs submitted after the restart, while the clients reconnect: a
        # submit that raises was never promised durable, so it is tried again
        # (bounded); only a returned handle counts as submitted.
        deadline = time.monotonic() + 30
        for _ in range(20):
            while True:
                try:
                    handle = await broker.submit(app.work, 0.05)
                    break
                except Exception:  # not yet reconnected: counted and tried again
                    resubmits += 1
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            handles[handle.id] = handle
        outcomes = await collect(handles, timeout=60, rig=rig)
        collected_at = time.time()

    failures = {i: o.error for i, o in outcomes.items() if o.error is not None}
    assert not failures, f"jobs failed across the restart: {failures}\n{rig.fleet.describe()}"
    runs = runs_by_id(rig.read())
    for job_id in handles:
        job_runs = runs.get(job_id, [])
        assert 1 <= len(job_runs) <= MAX_ATTEMPTS, f"{job_id}: {job_runs}"
        assert job_runs[-1].end is not None, f"{job_id}: {job_runs}"
        assert outcomes[job_id].value == f"{job_id}:{job_runs[-1].attempt}", job_runs
    for worker in workers:
        assert worker.alive, f"a worker died with the server restart: {worker.describe()}"
    all_runs = [run for job_runs in runs.values() for run in job_runs]
    counts = {
        "jobs": len(handles),
        "submitted_after_restart": 20,
        "submit_retries_while_reconnecting": resubmits,
        "runs": len(all_runs),
        "jobs_run_more_than_once": sum(1 for r in runs.values() if len(r) > 1),
        "runs_started_after_restart": sum(1 for r in all_runs if r.start.t >= restarted_at),
        "server_starts": server.starts,
        "seconds_restart_to_last_run_end": round(
            max(r.end.t for r in all_runs if r.end is not None) - restarted_at, 2
        ),
        "seconds_restart_to_all_outcomes": round(collected_at - restarted_at, 2),
        "lost": 0,
        "seconds": round(time.monotonic() - started, 1),
    }
    report(counts, tmp_path / f"{kind}-chaos-restart.json", capsys)


# -- c. a long job on a live worker -------------------------------------------------


@pytest.mark.timeout(60)
async def test_job_of_five_leases_on_live_worker_runs_once(
    machine_engine: Engine, broker_name: str, worker_fleet: WorkerFleet, tmp_path: Path
) -> None:
    """A job running 5x ack_wait on a live worker is never redelivered: one run, attempt 1."""
    ack_wait = 1.0
    rig = Rig(machine_engine, broker_name, tmp_path / "runs.jsonl", worker_fleet, ack_wait)
    rig.start_worker(workers=2, label="a")
    rig.start_worker(workers=2, label="b")  # somewhere a redelivery could go
    app = rig.client()
    async with app.broker:
        broker = app.broker
        handles = {}
        for _ in range(3):
            handle = await broker.submit(app.work, 5 * ack_wait)
            handles[handle.id] = handle
        outcomes = await collect(handles, timeout=40, rig=rig)
    runs = runs_by_id(rig.read())
    assert set(runs) == set(handles), runs
    for job_id, handle in handles.items():
        assert outcomes[job_id].error is None, outcomes[job_id]
        assert len(runs[job_id]) == 1, f"{job_id} was redelivered: {runs[job_id]}"
        assert runs[job_id][0].attempt == 1
        assert outcomes[job_id].value == f"{job_id}:1"
        assert handle.attempts == 1


# -- d. graceful stop -------------------------------------------------------------

GRACE_ACK_WAIT = 30.0
# How soon after SIGTERM the jobs the stopped worker held must start elsewhere:
# far below GRACE_ACK_WAIT, so this cannot pass by waiting out the lease.
HANDBACK_BOUND = 8.0


@pytest.mark.timeout(40)
async def test_sigterm_hands_unstarted_jobs_back_at_once(
    machine_engine: Engine,
    broker_name: str,
    worker_fleet: WorkerFleet,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGTERM: unstarted jobs start elsewhere well within the lease; running ones finish; exit 0"""
    rig = Rig(machine_engine, broker_name, tmp_path / "runs.jsonl", worker_fleet, GRACE_ACK_WAIT)
    gate = tmp_path / "gate"
    stopping = rig.start_worker(workers=2, grace=20, label="stopping")
    app = rig.client()
    async with app.broker:
        broker = app.broker
        holds = {}
        for _ in range(2):
            handle = await broker.submit(app.hold, str(gate))
            holds[handle.id] = handle
        await rig.wait_for(
            lambda records: sum(r.ev == "start" and r.pid == stopping.pid for r in records) == 2,
            timeout=20,
            what="both gated jobs running on the worker to be stopped",
        )
        # That worker has no free slot now: what it takes of these (its
        # prefetch) it holds unstarted. With no prefetch it takes none and
        # the other worker gets them all; either way none may wait a lease.
        shorts = {}
        for _ in range(6):
            handle = await broker.submit(app.work, 0.05)
            shorts[handle.id] = handle
        other = rig.start_worker(workers=4, label="other")
        sent = stopping.terminate()

        def all_shorts_started(records: list[RunRecord]) -> bool:
            return set(shorts) <= {r.id for r in records if r.ev == "start"}

        records = await rig.wait_for(
            all_shorts_started,
            timeout=HANDBACK_BOUND,
            what=f"every unstarted job starting elsewhere within {HANDBACK_BOUND} s of SIGTERM "
            f"(ack_wait is {GRACE_ACK_WAIT} s)",
        )
        assert stopping.alive, (
            "the stopped worker should still be finishing its running jobs (grace 20 s): "
            + stopping.describe()
        )
        gate.touch()
        status = await stopping.wait(timeout=15)
        assert status == 0, stopping.describe()
        outcomes = await collect({**holds, **shorts}, timeout=15, rig=rig)

    runs = runs_by_id(rig.read())
    latest_start = 0.0
    for job_id in shorts:
        assert outcomes[job_id].error is None, outcomes[job_id]
        assert len(runs[job_id]) == 1, f"{job_id}: {runs[job_id]}"
        assert runs[job_id][0].pid == other.pid, f"{job_id} ran on the stopping worker"
        latest_start = max(latest_start, runs[job_id][0].start.t - sent)
    for job_id in holds:
        assert outcomes[job_id].error is None, outcomes[job_id]
        assert len(runs[job_id]) == 1, f"{job_id}: {runs[job_id]}"
        assert runs[job_id][0].pid == stopping.pid
        assert runs[job_id][0].end is not None
    stderr = stopping.stderr()
    assert re.search(r"(?i)shut ?down|stopp", stderr), f"no shutdown report on stderr:\n{stderr}"
    assert latest_start < HANDBACK_BOUND < GRACE_ACK_WAIT
    counts = {
        "report": [line for line in stderr.splitlines() if "stop" in line],
        "short_jobs": len(shorts),
        "seconds_from_sigterm_to_last_start_elsewhere": round(latest_start, 2),
        "ack_wait": GRACE_ACK_WAIT,
        "records_seen": len(records),
    }
    report(counts, tmp_path / f"{machine_engine.kind}-chaos-sigterm.json", capsys)


@pytest.mark.timeout(40)
async def test_sigterm_hands_running_jobs_back_when_grace_ends(
    machine_engine: Engine,
    broker_name: str,
    worker_fleet: WorkerFleet,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGTERM, short grace: running jobs are handed back when it ends, not after the lease."""
    grace = 1.0
    rig = Rig(machine_engine, broker_name, tmp_path / "runs.jsonl", worker_fleet, GRACE_ACK_WAIT)
    gate = tmp_path / "gate"
    stopping = rig.start_worker(workers=2, grace=grace, label="stopping")
    app = rig.client()
    async with app.broker:
        broker = app.broker
        holds = {}
        for _ in range(2):
            handle = await broker.submit(app.hold, str(gate))
            holds[handle.id] = handle
        await rig.wait_for(
            lambda records: sum(r.ev == "start" and r.pid == stopping.pid for r in records) == 2,
            timeout=20,
            what="both gated jobs running on the worker to be stopped",
        )
        other = rig.start_worker(workers=4, label="other")
        sent = stopping.terminate()
        status = await stopping.wait(timeout=grace + 10)
        assert status == 0, stopping.describe()

        def both_restarted(records: list[RunRecord]) -> bool:
            return sum(r.ev == "start" and r.pid == other.pid for r in records) == 2

        await rig.wait_for(
            both_restarted,
            timeout=HANDBACK_BOUND,
            what=f"the interrupted jobs starting on another worker within {HANDBACK_BOUND} s "
            f"(ack_wait is {GRACE_ACK_WAIT} s)",
        )
        gate.touch()
        outcomes = await collect(holds, timeout=15, rig=rig)

    runs = runs_by_id(rig.read())
    latest_start = 0.0
    for job_id in holds:
        assert outcomes[job_id].error is None, outcomes[job_id]
        first, second = runs[job_id]  # exactly two runs
        assert (first.pid, first.end) == (stopping.pid, None), runs[job_id]
        assert (second.pid, second.end is not None) == (other.pid, True), runs[job_id]
        latest_start = max(latest_start, second.start.t - sent)
    assert latest_start < HANDBACK_BOUND < GRACE_ACK_WAIT
    stderr = stopping.stderr()
    assert re.search(r"(?i)shut ?down|stopp", stderr), f"no shutdown report on stderr:\n{stderr}"
    counts = {
        "report": [line for line in stderr.splitlines() if "stop" in line],
        "grace": grace,
        "seconds_from_sigterm_to_last_start_elsewhere": round(latest_start, 2),
        "ack_wait": GRACE_ACK_WAIT,
    }
    report(counts, tmp_path / f"{machine_engine.kind}-chaos-grace.json", capsys)


# -- e. a redelivered job runs on one survivor at a time ----------------------------


@pytest.mark.timeout(90)
async def test_redelivered_job_never_runs_on_two_workers_at_once(
    machine_engine: Engine,
    broker_name: str,
    worker_fleet: WorkerFleet,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After kills, each redelivered job runs on exactly one surviving worker, never overlapping."""
    ack_wait = 1.5
    seconds = 4.0  # longer than two leases: the survivors must extend theirs
    rig = Rig(machine_engine, broker_name, tmp_path / "runs.jsonl", worker_fleet, ack_wait)
    fleet = [rig.start_worker(workers=2, label=label) for label in ("a", "b", "c")]
    app = rig.client()
    async with app.broker:
        broker = app.broker
        handles = {}
        submitted_at = time.time()
        for _ in range(6):
            handle = await broker.submit(app.work, seconds)
            handles[handle.id] = handle
        records = await rig.wait_for(
            lambda records: sum(r.ev == "start" for r in records) == 6,
            timeout=20,
            what="6 jobs running",
        )
        # Round 1: kill the worker running the most jobs.
        busiest = max(fleet, key=lambda w: sum(r.pid == w.pid for r in records))
        busiest.kill()
        survivors = [w for w in fleet if w is not busiest]
        seen = len(records)

        # Round 2: kill the survivor that starts a redelivered job, as it starts it.
        def redelivery_started(records: list[RunRecord]) -> bool:
            return any(r.ev == "start" and r.attempt >= 2 for r in records[seen:])

        records = await rig.wait_for(
            redelivery_started, timeout=30, what="a redelivered job starting on a survivor"
        )
        redelivered = next(r for r in records[seen:] if r.ev == "start" and r.attempt >= 2)
        second = next(w for w in survivors if w.pid == redelivered.pid)
        second.kill()
        last = next(w for w in survivors if w is not second)
        outcomes = await collect(handles, timeout=60, rig=rig)

    killed = worker_fleet.killed_pids
    runs = runs_by_id(rig.read())
    for job_id in handles:
        job_runs = runs[job_id]
        assert outcomes[job_id].error is None, outcomes[job_id]
        check_run_sequence(job_id, job_runs, killed, submitted_at)
        live_runs = [run for run in job_runs if run.pid not in killed]
        assert len(live_runs) <= 1, f"{job_id} ran on {len(live_runs)} survivors: {job_runs}"
        assert job_runs[-1].end is not None
    assert last.alive
    moved = [job_id for job_id in handles if len(runs[job_id]) > 1]
    assert len(moved) >= 2, f"the kills moved no jobs: {runs}"
    counts = {
        "jobs": len(handles),
        "kills": len(killed),
        "jobs_redelivered": len(moved),
        "runs": sum(len(r) for r in runs.values()),
        "ack_wait": ack_wait,
        "job_seconds": seconds,
    }
    report(counts, tmp_path / f"{machine_engine.kind}-chaos-redelivery.json", capsys)


# -- f. poison payloads and unknown tasks ----------------------------------------


@pytest.mark.timeout(60)
async def test_poison_and_unknown_tasks_are_dead_letters_worker_keeps_serving(
    machine_engine: Engine, broker_name: str, worker_fleet: WorkerFleet, tmp_path: Path
) -> None:
    """Garbage in a job lane and unknown task names are dead letters; the worker carries on."""
    rig = Rig(machine_engine, broker_name, tmp_path / "runs.jsonl", worker_fleet, ack_wait=5.0)
    worker = rig.start_worker(workers=2, label="a")
    app = rig.client()
    assert app.unknown is not None
    marker = broker_name.encode()
    garbage = [
        b"\x00\xff\xfe not an envelope " + marker,
        b'{"not": "a job", "marker": "' + marker + b'"}',
        b"[" + marker + b"",
    ]
    async with app.broker:
        broker = app.broker
        first = await broker.submit(app.work, 0.01)
        assert await asyncio.wait_for(first, 30) == f"{first.id}:1", "the worker does not serve"
        for payload in garbage:
            await machine_engine.publish_raw(broker_name, payload)
        unknown = await broker.submit(app.unknown)
        with pytest.raises(RemoteJobError):
            await asyncio.wait_for(unknown, 30)

        # Dead letters are listed, not announced: poll (bounded).
        deadline = time.monotonic() + 20
        while True:
            letters = await broker.dead_letters()
            poison = [d for d in letters if marker in d.payload]
            by_id = {d.id: d for d in letters}
            if len(poison) == len(garbage) and unknown.id in by_id:
                break
            assert time.monotonic() < deadline, (
                f"dead letters after 20 s: {letters}\n{worker.describe()}"
            )
            await asyncio.sleep(0.1)
        assert by_id[unknown.id].task == "chaos.unknown"
        later = {}
        for _ in range(5):
            handle = await broker.submit(app.work, 0.01)
            later[handle.id] = handle
        outcomes = await collect(later, timeout=30, rig=rig)
    assert all(o.error is None for o in outcomes.values()), outcomes
    assert worker.alive, worker.describe()


# -- g. keyed jobs across two workers ------------------------------------------------


@pytest.mark.timeout(60)
async def test_keyed_jobs_across_workers_never_overlap_and_keep_order(
    machine_engine: Engine, broker_name: str, worker_fleet: WorkerFleet, tmp_path: Path
) -> None:
    """One key's jobs never run at once, even on two processes, and run in submitted order."""
    rig = Rig(machine_engine, broker_name, tmp_path / "runs.jsonl", worker_fleet, ack_wait=5.0)
    # Both serving before the first job, and one of them with room for a
    # single job: then neither can run every key alone (a worker that came
    # up late, or that kept winning its own freed lanes, did).
    a = rig.start_worker(workers=1, label="a")
    b = rig.start_worker(workers=4, label="b")
    await a.wait_serving()
    await b.wait_serving()
    app = rig.client()
    keys = [f"user-{n}" for n in range(4)]
    per_key = 8
    rng = random.Random(7)
    async with app.broker:
        broker = app.broker
        handles = {}
        for seq in range(per_key):  # interleaved: user-0 #0, user-1 #0, ..., user-0 #1, ...
            for key in keys:
                handle = await broker.submit(app.keyed, key, seq, rng.uniform(0.02, 0.1), key=key)
                handles[handle.id] = handle
        try:
            outcomes = await collect(handles, timeout=40, rig=rig)
        except AssertionError:
            # Not all done: if what did run already broke the order, say that.
            check_keyed_order(rig.read(), keys, per_key, complete=False)
            raise
    assert all(o.error is None for o in outcomes.values()), outcomes
    records = rig.read()
    check_keyed_order(records, keys, per_key, complete=True)
    pids = {r.pid for r in records}
    assert len(pids) == 2, f"keyed jobs ran on {len(pids)} worker processes, expected both: {pids}"


def check_keyed_order(
    records: list[RunRecord], keys: list[str], per_key: int, *, complete: bool
) -> None:
    """Per key, the record file reads start #0, end #0, start #1, ... (a prefix if incomplete).

    File order is causal: a run's end is written before its job is acked, so
    the next job of the key can only start after it.
    """
    for key in keys:
        events = [(r.ev, r.seq, r.attempt, r.pid) for r in records if r.key == key]
        expected = [(ev, seq) for seq in range(per_key) for ev in ("start", "end")]
        got = [(ev, seq) for ev, seq, _, _ in events]
        if not complete:
            expected = expected[: len(got)]
        assert got == expected, (
            f"{key}: runs overlapped, repeated or out of order (event, seq, attempt, pid): {events}"
        )
