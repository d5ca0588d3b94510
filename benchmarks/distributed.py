"""asyncpool's JetStream broker against taskiq-nats, arq and a raw JetStream floor.

Everything is measured in one run, so that the ratios compare like with like
on a noisy machine (compare numbers only within one run):

1. Throughput (jobs/s) of a trivial job (`add(x, y)`; `--workloads` adds
   `sleep1ms`, the same after `asyncio.sleep(0.001)`), 64 jobs in flight on
   the producer side, 1 and 2 worker processes, two modes:
   *results*: every result awaited (a lane submits, awaits the result, repeats;
   64 lanes);
   *fire-and-forget*: 64 lanes submit N jobs without results, then the clock
   stops when the workers have run all N (the time of the last completion).
2. Submit-to-start latency, p50 / p99, one job at a time with 1 idle worker
   process: the time from just before the submit call to the job's first line.
3. Recovery (asyncpool only): 2 worker processes run sleeping jobs, one is
   killed with SIGKILL mid-job, and the time from the kill until each of its
   jobs starts again on the other worker is compared with `ack_wait + 1 s`.

Every job reports its completion (and, for latency and recovery, its start)
the same way in every system, over core NATS from the worker process
(`benchmarks/_distributed_probe.py`). Worker processes are started by this
script in their own process groups and killed in a `finally`; the streams,
buckets and Redis keys of the run are deleted at the end.

    python benchmarks/distributed.py [--quick] [--jobs N] [--repeat K]
                                     [--only asyncpool,taskiq,arq,raw]
                                     [--workloads add,sleep1ms] [--procs 1,2]
                                     [--write-docs] [--render-only results.json]

Services: NATS with JetStream (`--nats`, default nats://127.0.0.1:4222) and
Redis (`--redis-db`, default 13, on 127.0.0.1:6379).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import itertools
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGE = ROOT / "docs" / "explanation" / "distributed-benchmarks.md"
PLOT = ROOT / "docs" / "_static" / "bench-distributed.png"
SYSTEMS = ("asyncpool", "taskiq", "arq", "raw")
MODES = ("results", "fire-and-forget")
WINDOW = 64  # jobs in flight on the producer side
CONCURRENCY = 64  # jobs at once per worker process
DEFAULT_JOBS, QUICK_JOBS = 4_000, 1_500
DEFAULT_SAMPLES, QUICK_SAMPLES = 300, 50  # latency
RECOVERY_JOBS = 12
RECOVERY_SLEEP = 6.0  # seconds each recovery job sleeps
DISTRIBUTIONS = ("asyncpool-dispatch", "nats-py", "taskiq", "taskiq-nats", "arq", "redis")


# ----------------------------------------------------------------- the probe


@dataclass
class Monitor:
    """The producer's view of the probe: completions per worker process, starts by key."""

    counts: dict[int, int] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    starts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    waiters: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_done(self, msg: Any) -> None:
        report = json.loads(msg.data)
        pid = report["pid"]
        if report["count"] >= self.counts.get(pid, 0):
            self.counts[pid] = report["count"]
            self.last[pid] = report["last"]
            self.changed.set()

    async def on_started(self, msg: Any) -> None:
        event = json.loads(msg.data)
        self.starts.setdefault(event["key"], []).append(event)
        waiter = self.waiters.pop(event["key"], None)
        if waiter is not None and not waiter.done():
            waiter.set_result(event)
        self.changed.set()

    def total(self) -> int:
        return sum(self.counts.values())

    def expect(self, key: int) -> asyncio.Future[dict[str, Any]]:
        """A future for the next start of job `key`."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters[key] = future
        return future

    async def wait_total(self, target: int, timeout: float) -> float:
        """Wait until `target` jobs have completed in all; return the last one's time."""
        async with asyncio.timeout(timeout):
            while self.total() < target:
                self.changed.clear()
                await self.changed.wait()
        return max(self.last.values())

    async def wait_for(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until `ready()`; False if the timeout passed first."""
        try:
            async with asyncio.timeout(timeout):
                while not ready():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return False
        return True


# ------------------------------------------------------------ the producers


class Client(Protocol):
    """One system's producer side."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def call(self, job: str, i: int) -> int:
        """Submit `job(i, 1)` and await its result."""
        ...

    async def send(self, job: str, i: int) -> None:
        """Submit `job(i, 1)` with no result; return once the submit is durable."""
        ...

    async def stamp(self, key: int) -> None:
        """Submit the latency job with no result."""
        ...


class AsyncpoolClient:
    """asyncpool: `broker.submit(task, ...)`, `await handle` or `result=False`."""

    def __init__(self, tasks: ModuleType, result_timeout: float) -> None:
        self.tasks = tasks
        self.broker = tasks.broker
        self.result_timeout = result_timeout
        self.stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        await self.stack.enter_async_context(self.broker)

    async def close(self) -> None:
        await self.stack.aclose()

    async def call(self, job: str, i: int) -> int:
        handle = await self.broker.submit(getattr(self.tasks, job), i, 1)
        async with asyncio.timeout(self.result_timeout):
            value: int = await handle
        return value

    async def send(self, job: str, i: int) -> None:
        await self.broker.submit(getattr(self.tasks, job), i, 1, result=False)

    async def stamp(self, key: int) -> None:
        await self.broker.submit(self.tasks.stamp, key, result=False)


class TaskiqClient:
    """taskiq: `task.kiq(...)`, then `wait_result` (it polls the result backend)."""

    def __init__(self, peers: ModuleType, poll: float, result_timeout: float) -> None:
        self.peers = peers
        self.broker = peers.taskiq_broker
        self.poll = poll
        self.result_timeout = result_timeout

    async def start(self) -> None:
        await self.broker.startup()

    async def close(self) -> None:
        await self.broker.shutdown()

    async def call(self, job: str, i: int) -> int:
        task = await self.peers.TASKIQ_TASKS[job].kiq(i, 1)
        result = await task.wait_result(check_interval=self.poll, timeout=self.result_timeout)
        if result.is_err:
            raise RuntimeError(f"taskiq job failed: {result.error!r}")
        value: int = result.return_value
        return value

    async def send(self, job: str, i: int) -> None:
        await self.peers.TASKIQ_TASKS[f"{job}_nr"].kiq(i, 1)

    async def stamp(self, key: int) -> None:
        await self.peers.TASKIQ_TASKS["stamp"].kiq(key)


class ArqClient:
    """arq: `pool.enqueue_job(...)`, then `job.result()` (it polls Redis)."""

    def __init__(self, peers: ModuleType, poll: float, result_timeout: float) -> None:
        self.peers = peers
        self.poll = poll
        self.result_timeout = result_timeout
        self.pool: Any = None

    async def start(self) -> None:
        from arq import create_pool

        self.pool = await create_pool(self.peers.ARQ_REDIS, default_queue_name=self.peers.ARQ_QUEUE)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()

    async def call(self, job: str, i: int) -> int:
        queued = await self.pool.enqueue_job(job, i, 1)
        value: int = await queued.result(timeout=self.result_timeout, poll_delay=self.poll)
        return value

    async def send(self, job: str, i: int) -> None:
        await self.pool.enqueue_job(f"{job}_nr", i, 1)

    async def stamp(self, key: int) -> None:
        await self.pool.enqueue_job("stamp", key)


class RawClient:
    """The floor: `js.publish` of a JSON job; results come back over core NATS.

    The stream (work-queue retention) and its durable pull consumer are made
    here, before the floor's workers start. A result is one core NATS publish
    from the worker to one subscription of the producer, matched to its
    future by job id: no result store, no durability, the least a "with
    results" mode can cost.
    """

    def __init__(self, peers: ModuleType, nats_url: str, result_timeout: float) -> None:
        self.peers = peers
        self.nats_url = nats_url
        self.result_timeout = result_timeout
        self.client: Any = None
        self.js: Any = None
        self.ids = itertools.count()
        self.futures: dict[int, asyncio.Future[int]] = {}

    async def start(self) -> None:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
        from nats.js.errors import NotFoundError

        p = self.peers
        self.client = await nats.connect(self.nats_url, name="bench-raw-producer")
        self.js = self.client.jetstream()
        try:
            await self.js.stream_info(p.RAW_STREAM)  # made by an earlier round
        except NotFoundError:
            await self.js.add_stream(
                StreamConfig(
                    name=p.RAW_STREAM,
                    subjects=[p.RAW_SUBJECT],
                    retention=RetentionPolicy.WORK_QUEUE,
                )
            )
            await self.js.add_consumer(
                p.RAW_STREAM,
                ConsumerConfig(
                    durable_name=p.RAW_DURABLE, ack_policy=AckPolicy.EXPLICIT, ack_wait=30
                ),
            )
        await self._subscribe()

    async def _subscribe(self) -> None:
        async def on_result(msg: Any) -> None:
            reply = json.loads(msg.data)
            future = self.futures.pop(reply["id"], None)
            if future is not None and not future.done():
                future.set_result(reply["v"])

        await self.client.subscribe(self.peers.RAW_RESULTS, cb=on_result)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def _publish(self, job: str, args: list[int], reply: str | None) -> int:
        job_id = next(self.ids)
        body = {"id": job_id, "f": job, "a": args, "r": reply}
        await self.js.publish(self.peers.RAW_SUBJECT, json.dumps(body).encode())
        return job_id

    async def call(self, job: str, i: int) -> int:
        job_id = next(self.ids)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.futures[job_id] = future
        body = {"id": job_id, "f": job, "a": [i, 1], "r": self.peers.RAW_RESULTS}
        await self.js.publish(self.peers.RAW_SUBJECT, json.dumps(body).encode())
        async with asyncio.timeout(self.result_timeout):
            return await future

    async def send(self, job: str, i: int) -> None:
        await self._publish(job, [i, 1], None)

    async def stamp(self, key: int) -> None:
        await self._publish("stamp", [key], None)


# ------------------------------------------------------------- the workers


@dataclass
class Workers:
    """Worker processes of one system, each in its own process group."""

    name: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, command: list[str], count: int, env: dict[str, str]) -> None:
        for _ in range(count):
            log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
            self.logs.append(log)
            self.procs.append(
                subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} worker {proc.pid} exited ({proc.returncode}):\n{_tail(log)}"
                )

    def tails(self) -> str:
        return "\n".join(f"--- worker {p.pid}:\n{_tail(log)}" for p, log in self._pairs())

    def _pairs(self) -> list[tuple[subprocess.Popen[bytes], IO[bytes]]]:
        return list(zip(self.procs, self.logs, strict=True))

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM each process group, then SIGKILL what is left after `grace` s."""
        for proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, grace)
            _signal_group(proc, signal.SIGKILL)  # also any child it left behind
            await asyncio.to_thread(proc.wait, 5.0)
        for log in self.logs:
            log.close()
        self.procs.clear()
        self.logs.clear()

    def kill_now(self) -> None:
        """The last resort, from a `finally`: SIGKILL every process group, wait briefly."""
        for proc in self.procs:
            _signal_group(proc, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5.0)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The group is the one start_new_session=True made for this process (pgid == pid).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _tail(log: IO[bytes], size: int = 3000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-size:]


# ----------------------------------------------------------------- the run


@dataclass
class Run:
    """Settings and shared state of one benchmark run."""

    args: argparse.Namespace
    tag: str
    env: dict[str, str]
    monitor: Monitor
    all_workers: list[Workers] = field(default_factory=list)

    def command(self, system: str, attribute: str = "broker") -> list[str]:
        py = sys.executable
        if system == "asyncpool":
            target = f"benchmarks._distributed_tasks:{attribute}"
            return [py, "-m", "asyncpool", "worker", target, "--workers", str(CONCURRENCY)]
        if system == "taskiq":
            target = "benchmarks._distributed_peers:taskiq_broker"
            return [
                *(py, "-m", "taskiq", "worker", target, "--workers", "1"),
                *("--max-async-tasks", str(CONCURRENCY), "--log-level", "ERROR"),
            ]
        return [py, "-m", "benchmarks._distributed_peers", system]

    def workers(self, system: str) -> Workers:
        workers = Workers(system)
        self.all_workers.append(workers)
        return workers


async def lanes(n: int, one: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """Run `one(0)` ... `one(n - 1)` with WINDOW of them in flight; their results in order."""
    results: list[Any] = [None] * n
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            results[i] = await one(i)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(WINDOW, n)):
            group.create_task(lane())
    return results


async def warm_up(
    run: Run, workers: Workers, send: Callable[[int], Awaitable[None]], count: int
) -> None:
    """Send rounds of jobs until every worker process has run at least one (or 60 s)."""
    seen_before = set(run.monitor.counts)
    deadline = time.monotonic() + 60.0
    while True:
        workers.check_alive()
        base = run.monitor.total()
        await lanes(WINDOW * 2 * count, send)
        await run.monitor.wait_total(
            base + WINDOW * 2 * count, max(5.0, deadline - time.monotonic())
        )
        fresh = [pid for pid, c in run.monitor.counts.items() if pid not in seen_before and c > 0]
        if len(fresh) >= count:
            return
        if time.monotonic() > deadline:
            print(f"    warning: only {len(fresh)} of {count} worker processes ran warm-up jobs")
            return


async def throughput(run: Run, client: Client, mode: str, job: str, n: int) -> dict[str, Any]:
    """One measurement: n jobs, 64 in flight; jobs/s, checked."""
    monitor = run.monitor
    base = monitor.total()
    timeout = run.args.timeout
    if mode == "results":
        start = time.perf_counter()
        async with asyncio.timeout(timeout):
            values = await lanes(n, lambda i: client.call(job, i))
        elapsed = time.perf_counter() - start
        expected = n * (n - 1) // 2 + n
        if sum(values) != expected:
            raise RuntimeError(f"results sum to {sum(values)}, expected {expected}")
        await monitor.wait_total(base + n, timeout)
        return {"rate": n / elapsed, "seconds": elapsed}
    start_wall = time.time()
    async with asyncio.timeout(timeout):
        await lanes(n, lambda i: client.send(job, i))
    published = time.time() - start_wall
    last = await monitor.wait_total(base + n, timeout)
    await asyncio.sleep(0.3)  # one heartbeat: would show jobs that ran twice
    if monitor.total() != base + n:
        raise RuntimeError(f"{monitor.total() - base} completions for {n} jobs")
    elapsed = last - start_wall
    return {"rate": n / elapsed, "seconds": elapsed, "publish_rate": n / published}


async def latency(run: Run, client: Client, samples: int) -> dict[str, Any]:
    """Submit-to-start latency, one job at a time (after 10 thrown away)."""
    base = run.monitor.total()
    keys = itertools.count(10_000_000)
    found: list[float] = []
    for _ in range(10 + samples):
        key = next(keys)
        waiter = run.monitor.expect(key)
        before = time.time()
        await client.stamp(key)
        async with asyncio.timeout(30.0):
            event = await waiter
        found.append(event["t"] - before)
    await run.monitor.wait_total(base + 10 + samples, run.args.timeout)
    cuts = statistics.quantiles(found[10:], n=100)
    return {"p50": cuts[49], "p99": cuts[98]}


async def measure_system(
    run: Run, system: str, client: Client, procs: int, want_latency: bool
) -> dict[str, Any]:
    """Start `procs` workers, measure every mode and workload, stop them."""
    args = run.args
    workers = run.workers(system)
    out: dict[str, Any] = {}
    try:
        workers.start(run.command(system), procs, run.env)
        await warm_up(run, workers, lambda i: client.send("add", i), procs)
        for job in args.workloads.split(","):
            for mode in MODES:
                workers.check_alive()
                result = await throughput(run, client, mode, job, args.jobs)
                out[f"{job}/{mode}"] = result
                extra = (
                    f"  (publish {result['publish_rate']:,.0f}/s)"
                    if "publish_rate" in result
                    else ""
                )
                print(
                    f"    {system:9} procs={procs} {job:8} {mode:15} "
                    f"{result['rate']:>9,.0f} jobs/s{extra}",
                    flush=True,
                )
        if want_latency:
            out["latency"] = await latency(run, client, args.samples)
            lat = out["latency"]
            print(
                f"    {system:9} procs={procs} latency p50 {lat['p50'] * 1e3:.2f} ms"
                f"  p99 {lat['p99'] * 1e3:.2f} ms",
                flush=True,
            )
    except Exception:
        print(f"    {system}: worker output:\n{workers.tails()}", file=sys.stderr)
        raise
    finally:
        await workers.stop()
    return out


async def recovery(run: Run, tasks: ModuleType) -> dict[str, Any]:
    """SIGKILL one of two asyncpool workers mid-job; time until its jobs restart elsewhere."""
    ack_wait = run.args.ack_wait
    broker = tasks.recovery_broker
    workers = run.workers("asyncpool-recovery")
    monitor = run.monitor
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(broker)
        stack.push_async_callback(workers.stop)
        workers.start(run.command("asyncpool", "recovery_broker"), 2, run.env)
        warm_keys = itertools.count(-1, -1)

        async def warm(_: int) -> None:
            await broker.submit(tasks.nap, next(warm_keys), 0.0, result=False)

        await warm_up(run, workers, warm, 2)
        keys = list(range(1, RECOVERY_JOBS + 1))
        handles = [await broker.submit(tasks.nap, key, RECOVERY_SLEEP) for key in keys]
        if not await monitor.wait_for(lambda: all(k in monitor.starts for k in keys), 15.0):
            raise RuntimeError("the recovery jobs did not all start within 15 s")
        by_pid: dict[int, list[int]] = {}
        for key in keys:
            by_pid.setdefault(monitor.starts[key][0]["pid"], []).append(key)
        victim = max(by_pid, key=lambda pid: len(by_pid[pid]))
        if victim not in {p.pid for p in workers.procs}:
            raise RuntimeError(
                f"pid {victim} runs the jobs but is not a worker this script started"
            )
        victims = by_pid[victim]
        await asyncio.sleep(0.5)  # well into the jobs
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()

        def restarted(key: int) -> bool:
            return any(e["pid"] != victim for e in monitor.starts[key])

        limit = 3 * ack_wait + RECOVERY_SLEEP + 10.0
        if not await monitor.wait_for(lambda: all(restarted(k) for k in victims), limit):
            missing = [k for k in victims if not restarted(k)]
            raise RuntimeError(f"jobs {missing} did not restart within {limit:.0f} s of the kill")
        delays = [
            min(e["t"] for e in monitor.starts[k] if e["pid"] != victim) - killed_at
            for k in victims
        ]
        attempts = [max(e["attempt"] for e in monitor.starts[k]) for k in victims]
        async with asyncio.timeout(limit):
            values = [await h for h in handles]
        if values != keys:
            raise RuntimeError(f"recovery jobs returned {values}, expected {keys}")
    result = {
        "ack_wait": ack_wait,
        "jobs": len(keys),
        "killed_jobs": len(victims),
        "max": max(delays),
        "median": statistics.median(delays),
        "attempts": sorted(set(attempts)),
    }
    print(
        f"    asyncpool recovery: {len(victims)} of {len(keys)} jobs on the killed worker; "
        f"restarted after median {result['median']:.2f} s, max {result['max']:.2f} s "
        f"(ack_wait {ack_wait} s + 1 s = {ack_wait + 1:.1f} s); attempts {result['attempts']}",
        flush=True,
    )
    return result


def make_client(run: Run, system: str, modules: dict[str, ModuleType]) -> Client:
    args = run.args
    if system == "asyncpool":
        return AsyncpoolClient(modules["asyncpool"], args.timeout)
    if system == "taskiq":
        return TaskiqClient(modules["peers"], args.taskiq_poll, args.timeout)
    if system == "arq":
        return ArqClient(modules["peers"], args.arq_poll, args.timeout)
    return RawClient(modules["peers"], args.nats, args.timeout)


async def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    import nats

    tag = f"bench_{os.getpid()}"
    env = {
        **os.environ,
        "BENCH_TAG": tag,
        "BENCH_NATS": args.nats,
        "BENCH_REDIS_DB": str(args.redis_db),
        "BENCH_ARQ_POLL": str(args.arq_poll),
        "BENCH_RECOVERY_ACK_WAIT": str(args.ack_wait),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    os.environ.update(env)  # the modules below read it at import, as the workers do
    modules: dict[str, ModuleType] = {}
    skipped: dict[str, str] = {}
    chosen = [s for s in SYSTEMS if s in args.only.split(",")]
    if "asyncpool" in chosen:
        try:
            import benchmarks._distributed_tasks as ap_tasks

            modules["asyncpool"] = ap_tasks
        except ImportError as exc:
            skipped["asyncpool"] = f"asyncpool.jetstream not importable: {exc}"
            print(f"asyncpool: skipped ({skipped['asyncpool']})", flush=True)
            chosen.remove("asyncpool")
    if set(chosen) - {"asyncpool"}:
        import benchmarks._distributed_peers as peers

        modules["peers"] = peers

    monitor = Monitor()
    nc = await nats.connect(args.nats, name="bench-distributed")
    run = Run(args, tag, env, monitor)
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    result: dict[str, Any] = {"skipped": skipped}
    began = time.monotonic()
    try:
        sv = nc.connected_server_version
        server = {"nats-server": f"{sv.major}.{sv.minor}.{sv.patch}"}
        server["redis-server"] = await _redis_version(args.redis_db)
        await nc.subscribe(f"bench.{tag}.done", cb=monitor.on_done)
        await nc.subscribe(f"bench.{tag}.started", cb=monitor.on_started)
        await nc.flush()
        print(
            f"{args.jobs:,} jobs per measurement, {WINDOW} in flight, best of {args.repeat}; "
            f"systems {', '.join(chosen) or 'none'}; tag {tag}",
            flush=True,
        )
        procs_list = [int(p) for p in args.procs.split(",")]
        for rep in range(args.repeat):
            print(f"\nround {rep + 1} of {args.repeat} ({time.monotonic() - began:.0f} s so far)")
            for procs in procs_list:
                for system in chosen:
                    client = make_client(run, system, modules)
                    await client.start()
                    try:
                        want_latency = rep == 0 and procs == procs_list[0]
                        found = await measure_system(run, system, client, procs, want_latency)
                    finally:
                        await client.close()
                    for key, value in found.items():
                        rows.setdefault(system, {}).setdefault(f"{procs}/{key}", []).append(value)
        if "asyncpool" in chosen and not args.no_recovery:
            print("\nrecovery")
            result["recovery"] = await recovery(run, modules["asyncpool"])
        result["server"] = server
    finally:
        for workers in run.all_workers:
            workers.kill_now()
        await _clean_nats(nc, tag)
        await nc.close()
        await _clean_redis(args.redis_db, tag)
    result.update(
        {
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
            "versions": {"python": platform.python_version(), **_versions(), **result["server"]},
            "jobs": args.jobs,
            "samples": args.samples,
            "repeat": args.repeat,
            "workloads": args.workloads.split(","),
            "procs": [int(p) for p in args.procs.split(",")],
            "knobs": {"taskiq_poll": args.taskiq_poll, "arq_poll": args.arq_poll},
            "seconds": round(time.monotonic() - began),
            "rows": rows,
        }
    )
    return result


def _versions() -> dict[str, str]:
    found = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


async def _redis_version(db: int) -> str:
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=6379, db=db)
    try:
        info = await client.info("server")
        return str(info.get("redis_version", "?"))
    finally:
        await client.aclose()


async def _clean_nats(nc: Any, tag: str) -> None:
    """Delete every stream (and so KV and object buckets) named after this run."""
    mine = re.compile(rf"{re.escape(tag)}(?![0-9])")
    js = nc.jetstream()
    try:
        async with asyncio.timeout(30.0):
            for info in await js.streams_info():
                if mine.search(info.config.name):
                    await js.delete_stream(info.config.name)
    except Exception as exc:  # the run's numbers matter more than its litter
        print(f"warning: could not delete the streams of {tag}: {exc!r}", file=sys.stderr)


async def _clean_redis(db: int, tag: str) -> None:
    """Delete the run's arq queue and every arq job and result key in `db`."""
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=6379, db=db)
    try:
        async with asyncio.timeout(30.0):
            keys = [key async for key in client.scan_iter(match="arq:*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
    except Exception as exc:
        print(f"warning: could not clean Redis db {db}: {exc!r}", file=sys.stderr)
    finally:
        await client.aclose()


# --------------------------------------------------------------- reporting


def best(runs: list[dict[str, Any]], key: str = "rate") -> float:
    return float(max(r[key] for r in runs))


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (workload, mode, procs): each system's best rate and the ratios."""
    rows = results["rows"]
    out = []
    for job in results["workloads"]:
        for mode in MODES:
            for procs in results["procs"]:
                key = f"{procs}/{job}/{mode}"
                rates = {s: best(rows[s][key]) for s in SYSTEMS if key in rows.get(s, {})}
                spread = {
                    s: (max(r["rate"] for r in rows[s][key]) - min(r["rate"] for r in rows[s][key]))
                    / statistics.mean(r["rate"] for r in rows[s][key])
                    for s in rates
                }
                ap = rates.get("asyncpool")
                ratios = {
                    peer: (ap / rates[peer] if ap and peer in rates else None)
                    for peer in ("taskiq", "arq", "raw")
                }
                out.append(
                    {
                        "job": job,
                        "mode": mode,
                        "procs": procs,
                        "rates": rates,
                        "spread": spread,
                        "ratios": ratios,
                    }
                )
    return out


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(results: dict[str, Any]) -> None:
    print()
    print(
        f"{'job':9} {'mode':15} {'procs':>5} "
        + " ".join(f"{s:>10}" for s in SYSTEMS)
        + f" {'ap/taskiq':>10} {'ap/arq':>7} {'ap/raw':>7}"
    )
    for row in table(results):
        r = row["ratios"]
        print(
            f"{row['job']:9} {row['mode']:15} {row['procs']:>5} "
            + " ".join(f"{_num(row['rates'].get(s)):>10}" for s in SYSTEMS)
            + f" {_ratio(r['taskiq']):>10} {_ratio(r['arq']):>7} {_ratio(r['raw']):>7}"
        )
    for system in SYSTEMS:
        for key, runs in results["rows"].get(system, {}).items():
            if key.endswith("/latency"):
                print(
                    f"latency {system:9} procs={key.split('/')[0]}: "
                    f"p50 {min(r['p50'] for r in runs) * 1e3:.2f} ms, "
                    f"p99 {min(r['p99'] for r in runs) * 1e3:.2f} ms"
                )
    rec = results.get("recovery")
    if rec:
        print(
            f"recovery: median {rec['median']:.2f} s, max {rec['max']:.2f} s after SIGKILL "
            f"(target ack_wait + 1 s = {rec['ack_wait'] + 1:.1f} s)"
        )
    for system, why in results.get("skipped", {}).items():
        print(f"{system}: skipped ({why})")


METHOD = """\
# Distributed benchmarks: asyncpool's JetStream broker and its peers

{doc}`benchmarks` compares asyncpool with in-process pools. This page
measures the distributed side: a producer process submits jobs through a
broker, and separate worker processes run them. It sets
`asyncpool.jetstream.JetStreamBroker` next to
[taskiq](https://taskiq-python.github.io/) with
[taskiq-nats](https://github.com/taskiq-python/taskiq-nats) on the same NATS
server, [arq](https://arq-docs.helpmanual.io/) on Redis, and a *raw JetStream
floor* with no framework at all. Everything below comes from one run of
`benchmarks/distributed.py` on a shared 2-core machine, where the NATS
server, Redis, the producer and the workers all compete for the same two
cores: compare numbers within this page, not with other machines.

## What is measured

Throughput
: jobs per second for `async def add(x, y): return x + y`, with 64 jobs in
  flight on the producer side (64 lanes, each submitting one job at a time),
  with 1 and 2 worker processes running at most 64 jobs at once each.
  *results*: each lane awaits its job's result before submitting the next;
  the clock stops when the last result is back. *fire-and-forget*: the lanes
  submit N jobs that store no result (each submit returns once the broker
  has the job), and the clock stops at the completion of the last job in a
  worker.

Latency
: one job at a time with 1 idle worker process: the time from just before
  the submit call to the first line of the job (`time.time()` on both sides,
  one machine), after 10 samples thrown away; p50 and p99.

Recovery (asyncpool only)
: 2 worker processes run jobs that sleep {sleep:g} s under a broker with a
  short lease (`ack_wait`); once they have all started, the worker holding
  the most is killed with SIGKILL, and for each of its jobs the time from the
  kill to its start on the other worker is recorded. The lease bounds it:
  the expectation is at most `ack_wait` + 1 s.

How completions and starts are seen
: every job, in every system, calls the same two functions of
  `benchmarks/_distributed_probe.py` in its worker process: a completion bumps
  a per-process counter and notes the time, and a background task publishes
  the counter on core NATS when it moves (checked every 10 ms); a start is
  one core NATS message. The producer never asks a framework how far it got,
  so each is measured the same way, at the cost of one increment per job.

The systems, with the settings each was given (64 jobs at once per worker
process in all of them):

**asyncpool**
: producer: `JetStreamBroker(url, name=...)`, `await broker.submit(add, i, 1)`
  then `await handle`; fire-and-forget: `submit(..., result=False)`.
  Workers: `python -m asyncpool worker benchmarks._distributed_tasks:broker
  --workers 64`.

taskiq
: producer: `PullBasedJetStreamBroker(pull_consume_batch=64)` with
  `NATSObjectStoreResultBackend` (the result backend taskiq-nats has),
  `await add.kiq(i, 1)` then `wait_result(check_interval={taskiq_poll:g})`;
  fire-and-forget: a task that raises `NoResultError` (taskiq's way to skip
  the result backend). Workers: `taskiq worker --workers 1
  --max-async-tasks 64 --log-level ERROR`, acking once the result is saved
  (taskiq's default).

arq
: producer: `create_pool(...)`, `await pool.enqueue_job("add", i, 1)` then
  `job.result(poll_delay={arq_poll:g})`; fire-and-forget: the same function
  registered with `keep_result=0`. Workers: arq's `Worker(max_jobs=64,
  poll_delay={arq_poll:g})`, logging at WARNING.

raw floor
: producer: `js.publish` of a JSON job to a work-queue stream; with
  results, one core NATS message per job back to a single subscription of
  the producer, no result store. Workers: one pull request of 100 at a time
  on a durable consumer (the next when all 100 arrived or it expired), each
  job run in its own task as it arrives, then the reply and `ack()`.
  (nats-py's `fetch(100)` returns only when the batch is full or its
  timeout passed, which with fewer than 100 jobs waiting holds them for the
  whole timeout: no floor.)

taskiq and arq have no push notification of results: `wait_result` and
`job.result()` poll, so their *results* numbers depend on the poll period.
The periods above were chosen as the fastest of a few tried on this machine
(shorter periods make the polls themselves the load). taskiq-nats's
push-based broker is not used: its `startup()` subscribes every process,
producers included, to the consumer's queue group, so a producer would be
handed jobs it never runs. The raw floor's *results* mode sends results over
core NATS: not durable, so it is the least such a mode can cost, not an
equal of a stored result.
"""


def markdown(results: dict[str, Any]) -> str:
    knobs = results["knobs"]
    v = results["versions"]
    lines = [
        METHOD.replace("{sleep:g}", f"{RECOVERY_SLEEP:g}")
        .replace("{taskiq_poll:g}", f"{knobs['taskiq_poll']:g}")
        .replace("{arq_poll:g}", f"{knobs['arq_poll']:g}"),
        "## Results",
        "",
        f"Measured {results['date']} on {results['machine']} (shared and noisy), "
        f"Python {v['python']}; N = {results['jobs']:,} jobs per measurement, "
        f"best of {results['repeat']} rounds (the rounds interleave the systems, "
        f"and every round starts fresh worker processes); the run took "
        f"{results['seconds'] / 60:.0f} minutes.",
        "",
        "| component | version |",
        "| --- | --- |",
        *(f"| {name} | {version} |" for name, version in v.items()),
        "",
        "![jobs per second by system](../_static/bench-distributed.png)",
        "",
        "Jobs per second (best round), and asyncpool's rate divided by each "
        "peer's in the same row (above 1: asyncpool is faster).",
        "",
        "| job | mode | worker processes | **asyncpool** | taskiq | arq | raw floor "
        "| asyncpool / taskiq | asyncpool / arq | asyncpool / raw |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in table(results):
        r, rates = row["ratios"], row["rates"]
        lines.append(
            f"| `{row['job']}` | {row['mode']} | {row['procs']} | "
            + " | ".join(_num(rates.get(s)) for s in SYSTEMS)
            + f" | {_ratio(r['taskiq'])} | {_ratio(r['arq'])} | {_ratio(r['raw'])} |"
        )
    for system, why in results.get("skipped", {}).items():
        lines += ["", f"{system}: skipped ({why})."]
    lines += ["", *against_targets(results)]
    lines += [
        "",
        "### Latency",
        "",
        f"Submit to start, one job at a time, {results['samples']} samples, one idle "
        "worker process.",
        "",
        "| system | p50 ms | p99 ms |",
        "| --- | ---: | ---: |",
    ]
    for system in SYSTEMS:
        for key, runs in results["rows"].get(system, {}).items():
            if key.endswith("/latency"):
                name = f"**{system}**" if system == "asyncpool" else system
                lines.append(
                    f"| {name} | {min(x['p50'] for x in runs) * 1e3:.2f} "
                    f"| {min(x['p99'] for x in runs) * 1e3:.2f} |"
                )
    rec = results.get("recovery")
    lines += ["", "### Recovery", ""]
    if rec:
        lines += [
            f"`ack_wait` = {rec['ack_wait']:g} s; {rec['killed_jobs']} of {rec['jobs']} jobs "
            f"were on the killed worker. Time from SIGKILL to their start on the other "
            f"worker: median {rec['median']:.2f} s, max {rec['max']:.2f} s, against "
            f"`ack_wait` + 1 s = {rec['ack_wait'] + 1:g} s "
            f"({'within' if rec['max'] <= rec['ack_wait'] + 1 else 'OVER'} it). "
            f"Attempt numbers seen by the restarted jobs: {rec['attempts']}.",
        ]
    else:
        lines.append("Not measured in this run.")
    return "\n".join(lines) + "\n"


TARGETS = {"taskiq": 3.0, "arq": 3.0, "raw": 0.3}
"""What asyncpool set out to reach in each row: rate over the peer's."""

WHERE_TIME_GOES = """\
Where a job's time goes: on this machine the producer, the worker
processes and the NATS server share two cores, so every system here is
bound by the CPU its Python client spends per message. For each job,
asyncpool's producer publishes the job and waits for the stream's
acknowledgement; a worker receives the job (pulled in batches as large as
its free workers, when that many are waiting), runs it, stores its record
in the results bucket and waits for that write's acknowledgement (with
results), and acknowledges the job; the producer's watch receives the
record. The raw floor skips the per-job record store, the envelope and the
bookkeeping that lets a job be retried, cancelled, re-attached or
dead-lettered. In fire-and-forget, taskiq-nats stores nothing per job
either, so the gap to it is narrower than with results; where 3x a peer
would be more than the raw floor of the same row (see the list above), no
framework on this server could reach the target."""


def against_targets(results: dict[str, Any]) -> list[str]:
    """Each row against the targets (x3 taskiq and arq, x0.3 the raw floor), said plainly."""
    lines = ["### Against the targets", ""]
    lines.append(
        "asyncpool aims at 3x taskiq and 3x arq, and 0.3x the raw floor, in every row. In this run:"
    )
    lines.append("")
    for row in table(results):
        rates, ratios = row["rates"], row["ratios"]
        missed = [
            peer
            for peer, want in TARGETS.items()
            if ratios.get(peer) is not None and ratios[peer] < want
        ]
        head = f"- `{row['job']}`, {row['mode']}, {row['procs']} worker process(es): "
        if not missed:
            lines.append(head + "every target met.")
            continue
        said = []
        for peer in missed:
            text = f"{ratios[peer]:.2f}x {peer} (target {TARGETS[peer]:g}x)"
            raw = rates.get("raw")
            if peer != "raw" and raw and rates.get(peer):
                needed = TARGETS[peer] * rates[peer]
                text += (
                    f"; {TARGETS[peer]:g}x {peer} would be {needed:,.0f} jobs/s, "
                    f"{needed / raw:.2f}x the raw floor of the same row"
                )
            said.append(text)
        lines.append(head + "missed: " + "; ".join(said) + ".")
    lines += ["", WHERE_TIME_GOES]
    return lines


def plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table(results) if r["job"] == results["workloads"][0]]
    fig, axes = plt.subplots(1, len(MODES), figsize=(11, 4.5), squeeze=False)
    for ax, mode in zip(axes[0], MODES, strict=True):
        mine = [r for r in rows if r["mode"] == mode]
        width = 0.8 / len(SYSTEMS)
        for j, system in enumerate(SYSTEMS):
            values = [r["rates"].get(system, 0.0) for r in mine]
            xs = [i + (j - (len(SYSTEMS) - 1) / 2) * width for i in range(len(mine))]
            hatch = "//" if system == "asyncpool" else None
            bars = ax.bar(xs, values, width, label=system, hatch=hatch, edgecolor="black", lw=0.3)
            ax.bar_label(bars, [f"{v:,.0f}" if v else "" for v in values], fontsize=7)
        ax.set_xticks(
            range(len(mine)),
            [f"{r['procs']} worker process{'es' if r['procs'] > 1 else ''}" for r in mine],
        )
        ax.set_title(f"{results['workloads'][0]}, {mode}")
        ax.set_ylabel("jobs/s")
        ax.yaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(
        f"{WINDOW} jobs in flight, N = {results['jobs']:,}, best of {results['repeat']}",
        fontsize=10,
    )
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=100)
    plt.close(fig)
    print(f"wrote {PLOT.relative_to(ROOT)}")


# -------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke test: under a minute")
    parser.add_argument("--jobs", type=int, help=f"N per measurement (default {DEFAULT_JOBS:,})")
    parser.add_argument("--samples", type=int, help="latency samples")
    parser.add_argument("--repeat", type=int, help="rounds; the best is kept (default 3)")
    parser.add_argument("--only", default=",".join(SYSTEMS), help="systems, comma-separated")
    parser.add_argument("--workloads", default="add", help="add,sleep1ms")
    parser.add_argument("--procs", default="1,2", help="worker processes, comma-separated")
    parser.add_argument("--ack-wait", type=float, default=2.0, help="recovery broker's lease")
    parser.add_argument("--no-recovery", action="store_true")
    parser.add_argument("--taskiq-poll", type=float, default=0.05, help="wait_result interval")
    parser.add_argument("--arq-poll", type=float, default=0.01, help="arq poll_delay (both ends)")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on any one wait")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument("--json", default="/tmp/asyncpool-distributed.json", help="raw results")
    parser.add_argument("--render-only", metavar="JSON", help="re-render saved results")
    parser.add_argument("--write-docs", action="store_true", help="write the docs page and plot")
    args = parser.parse_args()
    if args.jobs is None:
        args.jobs = QUICK_JOBS if args.quick else DEFAULT_JOBS
    if args.samples is None:
        args.samples = QUICK_SAMPLES if args.quick else DEFAULT_SAMPLES
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    unknown = set(args.only.split(",")) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEMS)}")
    if args.render_only:
        results = json.loads(Path(args.render_only).read_text())
    else:
        results = asyncio.run(run_suite(args))
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"\nraw results in {args.json}; {results['seconds']} s in all")
    print_table(results)
    if args.write_docs:
        PAGE.write_text(markdown(results))
        print(f"wrote {PAGE.relative_to(ROOT)}")
        plot(results)


if __name__ == "__main__":
    main()
