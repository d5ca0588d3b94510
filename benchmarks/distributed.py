"""asyncpool's brokers against their peers and a raw floor, on NATS JetStream and on Redis.

Two engines, each measured in the same run, so that the ratios compare like
with like on a noisy machine (compare numbers only within one run):

- *jetstream*: asyncpool's `JetStreamBroker` against taskiq-nats, arq and a
  raw JetStream floor: `benchmarks/_jetstream_engine.py`;
- *redis*: asyncpool's `RedisBroker` against arq, SAQ, taskiq-redis's
  `RedisStreamBroker` and a raw Redis Streams floor (XADD + XREADGROUP
  batches + XACK): `benchmarks/_redis_engine.py`. taskiq-redis needs
  redis-py 8 and arq redis-py below 6, so taskiq-redis runs, producer and
  workers, from its own environment `.venv-peers/taskiq-redis`, made on
  demand (`benchmarks/_peer_venvs.py`, pinned versions; needs PyPI once).

This file is the runner, the same for every engine (`_distributed_engine.py`
says what an engine gives it). For each system of each engine:

1. Throughput (jobs/s) of a trivial job (`add(x, y)`; `--workloads` adds
   `sleep1ms`, the same after `asyncio.sleep(0.001)`), 64 jobs in flight on
   the producer side, 1 and 2 worker processes, two modes:
   *results*: every result awaited (a lane submits, awaits the result, repeats;
   64 lanes);
   *fire-and-forget*: 64 lanes submit N jobs without results, then the clock
   stops when the workers have run all N (the time of the last completion).
2. Submit-to-start latency, p50 / p99, one job at a time with 1 idle worker
   process: the time from just before the submit call to the job's first line.
3. Recovery (asyncpool only, each engine): 2 worker processes run sleeping
   jobs, one is killed with SIGKILL mid-job, and the time from the kill until
   each of its jobs starts again on the other worker is compared with
   `ack_wait + 1 s`.

Every job reports its completion (and, for latency and recovery, its start)
the same way in every system, over core NATS from the worker process
(`benchmarks/_distributed_probe.py`). Worker processes are started by this
script in their own process groups and killed in a `finally`; the streams,
buckets and Redis keys of the run are deleted at the end.

    python benchmarks/distributed.py [--quick] [--engine jetstream,redis]
                                     [--only asyncpool,taskiq,arq,saq,taskiq-redis,raw]
                                     [--jobs N] [--repeat K]
                                     [--workloads add,sleep1ms] [--procs 1,2]
                                     [--write-docs] [--render-only results.json]

`--engine` chooses the engines (default both); `--only` names systems, and a
name applies in every chosen engine that has it (`asyncpool`, `arq` and
`raw` are in both; `taskiq` is taskiq-nats, JetStream only; `saq` and
`taskiq-redis` are Redis only). `--write-docs` writes the page with every
engine of the run.

Services: NATS with JetStream (`--nats`, default nats://127.0.0.1:4222; the
probe needs it for both engines) and Redis on 127.0.0.1:6379 (`--redis-db`,
default 13: arq in both engines, every system of the Redis engine).
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
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _jetstream_engine, _redis_engine
from benchmarks._distributed_engine import (
    WINDOW,
    Client,
    Context,
    Engine,
    Prepared,
    RemoteLanes,
    lanes,
)

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "explanation" / "distributed-benchmarks.md"
PLOT = ROOT / "docs" / "_static" / "bench-distributed.png"
MODES = ("results", "fire-and-forget")
DEFAULT_JOBS, QUICK_JOBS = 4_000, 1_500
DEFAULT_SAMPLES, QUICK_SAMPLES = 300, 50  # latency
RECOVERY_JOBS = 12
RECOVERY_SLEEP = 6.0  # seconds each recovery job sleeps
DISTRIBUTIONS = (
    "asyncpool-dispatch",
    "nats-py",
    "taskiq",
    "taskiq-nats",
    "arq",
    "saq",
    "redis",
    "hiredis",
)
TARGET_PEER, TARGET_FLOOR = 3.0, 0.3
"""What asyncpool set out to reach in each row: 3x the fastest peer, 0.3x the raw floor."""


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
class Run(Context):
    """Settings and shared state of one benchmark run."""

    monitor: Monitor = field(default_factory=Monitor)
    all_workers: list[Workers] = field(default_factory=list)

    def workers(self, name: str) -> Workers:
        workers = Workers(name)
        self.all_workers.append(workers)
        return workers


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
    remote = client if isinstance(client, RemoteLanes) else None
    if mode == "results":
        async with asyncio.timeout(timeout):
            if remote is not None:  # its producer process runs and times the lanes
                elapsed, total = await remote.results_lanes(job, n)
            else:
                start = time.perf_counter()
                total = sum(await lanes(n, lambda i: client.call(job, i)))
                elapsed = time.perf_counter() - start
        expected = n * (n - 1) // 2 + n
        if total != expected:
            raise RuntimeError(f"results sum to {total}, expected {expected}")
        await monitor.wait_total(base + n, timeout)
        return {"rate": n / elapsed, "seconds": elapsed}
    async with asyncio.timeout(timeout):
        if remote is not None:
            start_wall, published = await remote.send_lanes(job, n)
        else:
            start_wall = time.time()
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
        sent = await client.stamp(key)  # a producer in another process times its own submit
        async with asyncio.timeout(30.0):
            event = await waiter
        found.append(event["t"] - (before if sent is None else sent))
    await run.monitor.wait_total(base + 10 + samples, run.args.timeout)
    cuts = statistics.quantiles(found[10:], n=100)
    return {"p50": cuts[49], "p99": cuts[98]}


async def measure_system(
    run: Run, engine: Engine, system: str, client: Client, procs: int, want_latency: bool
) -> dict[str, Any]:
    """Start `procs` workers, measure every mode and workload, stop them."""
    args = run.args
    name = f"{engine.name}/{system}"
    workers = run.workers(name)
    out: dict[str, Any] = {}
    try:
        workers.start(engine.command(run, system, "broker"), procs, run.env)
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
                    f"    {name:22} procs={procs} {job:8} {mode:15} "
                    f"{result['rate']:>9,.0f} jobs/s{extra}",
                    flush=True,
                )
        if want_latency:
            out["latency"] = await latency(run, client, args.samples)
            lat = out["latency"]
            print(
                f"    {name:22} procs={procs} latency p50 {lat['p50'] * 1e3:.2f} ms"
                f"  p99 {lat['p99'] * 1e3:.2f} ms",
                flush=True,
            )
    except Exception:
        print(f"    {name}: worker output:\n{workers.tails()}", file=sys.stderr)
        raise
    finally:
        await workers.stop()
    return out


async def recovery(run: Run, engine: Engine, tasks: ModuleType) -> dict[str, Any]:
    """SIGKILL one of two asyncpool workers mid-job; time until its jobs restart elsewhere."""
    ack_wait = run.args.ack_wait
    broker = tasks.recovery_broker
    workers = run.workers(f"{engine.name}/asyncpool-recovery")
    monitor = run.monitor
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(broker)
        stack.push_async_callback(workers.stop)
        workers.start(engine.command(run, "asyncpool", "recovery_broker"), 2, run.env)
        warm_keys = itertools.count(-1, -1)

        async def warm(_: int) -> None:
            await broker.submit(tasks.nap, next(warm_keys), 0.0, result=False)

        await warm_up(run, workers, warm, 2)
        first = max(monitor.starts, default=0) + 1  # the jobs' keys: new in every engine
        keys = list(range(first, first + RECOVERY_JOBS))
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
        f"    {engine.name}/asyncpool recovery: {len(victims)} of {len(keys)} jobs on the killed "
        f"worker; restarted after median {result['median']:.2f} s, max {result['max']:.2f} s "
        f"(ack_wait {ack_wait} s + 1 s = {ack_wait + 1:.1f} s); attempts {result['attempts']}",
        flush=True,
    )
    return result


def chosen_systems(engine: Engine, only: str | None) -> list[str]:
    """The engine's systems that `--only` names (all of them without it)."""
    names = set(engine.systems if only is None else only.split(","))
    return [s for s in engine.systems if s in names]


async def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    import nats

    tag = f"bench_{os.getpid()}"
    env = {
        **os.environ,
        "BENCH_TAG": tag,
        "BENCH_NATS": args.nats,
        "BENCH_REDIS_DB": str(args.redis_db),
        "BENCH_ARQ_POLL": str(args.arq_poll),
        "BENCH_TASKIQ_REDIS_POLL": str(args.taskiq_redis_poll),
        "BENCH_RECOVERY_ACK_WAIT": str(args.ack_wait),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    os.environ.update(env)  # the modules below read it at import, as the workers do
    run = Run(args, tag, env)
    engines = [ENGINES[name] for name in args.engine.split(",")]
    chosen: dict[str, list[str]] = {}
    prepared: dict[str, Prepared] = {}
    for engine in engines:
        wanted = chosen_systems(engine, args.only)
        prepared[engine.name] = engine.prepare(run, wanted)
        for system, why in prepared[engine.name].skipped.items():
            print(f"{engine.name}/{system}: skipped ({why})", flush=True)
        chosen[engine.name] = [s for s in wanted if s not in prepared[engine.name].skipped]

    monitor = run.monitor
    nc = await nats.connect(args.nats, name="bench-distributed")
    sections: dict[str, dict[str, Any]] = {
        e.name: {"systems": chosen[e.name], "rows": {}, "skipped": prepared[e.name].skipped}
        for e in engines
    }
    result: dict[str, Any] = {"engines": sections}
    began = time.monotonic()
    try:
        sv = nc.connected_server_version
        server = {"nats-server": f"{sv.major}.{sv.minor}.{sv.patch}"}
        server["redis-server"] = await _redis_version(args.redis_db)
        await nc.subscribe(f"bench.{tag}.done", cb=monitor.on_done)
        await nc.subscribe(f"bench.{tag}.started", cb=monitor.on_started)
        await nc.flush()
        said = "; ".join(f"{name}: {', '.join(s) or 'none'}" for name, s in chosen.items())
        print(
            f"{args.jobs:,} jobs per measurement, {WINDOW} in flight, best of {args.repeat}; "
            f"systems {said}; tag {tag}",
            flush=True,
        )
        procs_list = [int(p) for p in args.procs.split(",")]
        for rep in range(args.repeat):
            print(f"\nround {rep + 1} of {args.repeat} ({time.monotonic() - began:.0f} s so far)")
            for engine in engines:
                rows = sections[engine.name]["rows"]
                for procs in procs_list:
                    for system in chosen[engine.name]:
                        client = engine.client(run, system, prepared[engine.name].modules)
                        await client.start()
                        try:
                            want_latency = rep == 0 and procs == procs_list[0]
                            found = await measure_system(
                                run, engine, system, client, procs, want_latency
                            )
                        finally:
                            await client.close()
                        for key, value in found.items():
                            rows.setdefault(system, {}).setdefault(f"{procs}/{key}", []).append(
                                value
                            )
        for engine in engines:
            if "asyncpool" in chosen[engine.name] and not args.no_recovery:
                print(f"\nrecovery ({engine.name})")
                tasks = prepared[engine.name].modules["asyncpool"]
                sections[engine.name]["recovery"] = await recovery(run, engine, tasks)
        result["server"] = server
    finally:
        for workers in run.all_workers:
            workers.kill_now()
        await nc.close()
        for engine in engines:
            await engine.clean(run)
    for engine in engines:
        sections[engine.name]["environments"] = engine.environments(chosen[engine.name])
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
            "knobs": {
                "taskiq_poll": args.taskiq_poll,
                "arq_poll": args.arq_poll,
                "taskiq_redis_poll": args.taskiq_redis_poll,
                "saq_poll": args.saq_poll,
                "redis_db": args.redis_db,
            },
            "seconds": round(time.monotonic() - began),
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


# --------------------------------------------------------------- reporting


def upgrade(results: dict[str, Any]) -> dict[str, Any]:
    """Saved results of a run before the engines (one JetStream section) in today's shape."""
    if "engines" in results:
        return results
    results = dict(results)
    section = {
        "systems": [s for s in ENGINES["jetstream"].systems if s in results["rows"]],
        "rows": results.pop("rows"),
        "skipped": results.pop("skipped", {}),
        "environments": {},
    }
    if "recovery" in results:
        section["recovery"] = results.pop("recovery")
    results["engines"] = {"jetstream": section}
    return results


def engines_of(results: dict[str, Any]) -> list[Engine]:
    return [ENGINES[name] for name in results["engines"]]


def best(runs: list[dict[str, Any]], key: str = "rate") -> float:
    return float(max(r[key] for r in runs))


def table(results: dict[str, Any], engine: Engine) -> list[dict[str, Any]]:
    """One row per (workload, mode, procs): each system's best rate and asyncpool's ratios."""
    rows = results["engines"][engine.name]["rows"]
    out = []
    for job in results["workloads"]:
        for mode in MODES:
            for procs in results["procs"]:
                key = f"{procs}/{job}/{mode}"
                rates = {s: best(rows[s][key]) for s in engine.systems if key in rows.get(s, {})}
                spread = {
                    s: (max(r["rate"] for r in rows[s][key]) - min(r["rate"] for r in rows[s][key]))
                    / statistics.mean(r["rate"] for r in rows[s][key])
                    for s in rates
                }
                ap = rates.get("asyncpool")
                ratios = {
                    peer: (ap / rates[peer] if ap and peer in rates else None)
                    for peer in (*engine.peers, engine.floor)
                }
                measured = [p for p in engine.peers if p in rates]
                fastest = max(measured, key=lambda p: rates[p]) if measured else None
                out.append(
                    {
                        "job": job,
                        "mode": mode,
                        "procs": procs,
                        "rates": rates,
                        "spread": spread,
                        "ratios": ratios,
                        "fastest": fastest,
                        "vs_fastest": ratios[fastest] if fastest else None,
                    }
                )
    return out


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(results: dict[str, Any]) -> None:
    for engine in engines_of(results):
        section = results["engines"][engine.name]
        ratio_heads = [f"ap/{p}" for p in engine.peers] + ["ap/fastest", f"ap/{engine.floor}"]
        print(f"\n{engine.title}")
        print(
            f"{'job':9} {'mode':15} {'procs':>5} "
            + " ".join(f"{s:>12}" for s in engine.systems)
            + " "
            + " ".join(f"{h:>{max(7, len(h))}}" for h in ratio_heads)
        )
        for row in table(results, engine):
            r = row["ratios"]
            values = [r[p] for p in engine.peers] + [row["vs_fastest"], r[engine.floor]]
            cells = zip(values, ratio_heads, strict=True)
            print(
                f"{row['job']:9} {row['mode']:15} {row['procs']:>5} "
                + " ".join(f"{_num(row['rates'].get(s)):>12}" for s in engine.systems)
                + " "
                + " ".join(f"{_ratio(v):>{max(7, len(h))}}" for v, h in cells)
            )
        for system in engine.systems:
            for key, runs in section["rows"].get(system, {}).items():
                if key.endswith("/latency"):
                    print(
                        f"latency {system:12} procs={key.split('/')[0]}: "
                        f"p50 {min(r['p50'] for r in runs) * 1e3:.2f} ms, "
                        f"p99 {min(r['p99'] for r in runs) * 1e3:.2f} ms"
                    )
        rec = section.get("recovery")
        if rec:
            print(
                f"recovery: median {rec['median']:.2f} s, max {rec['max']:.2f} s after SIGKILL "
                f"(target ack_wait + 1 s = {rec['ack_wait'] + 1:.1f} s)"
            )
        for system, where in section.get("environments", {}).items():
            if where.get("environment", "").startswith(".venv-peers"):
                rest = ", ".join(f"{k} {v}" for k, v in where.items() if k != "environment")
                print(f"{system}: ran from {where['environment']} ({rest})")
        for system, why in section.get("skipped", {}).items():
            print(f"{system}: skipped ({why})")


INTRO = """\
# Distributed benchmarks: asyncpool's brokers and their peers

{doc}`benchmarks` compares asyncpool with in-process pools. This page
measures the distributed side: a producer process submits jobs through a
broker, and separate worker processes run them. It sets

{summaries}

Everything below comes from one run of `benchmarks/distributed.py` on a
shared 2-core machine, where the servers, the producer and the workers all
compete for the same two cores: compare numbers within this page, not with
other machines.

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
"""


def markdown(results: dict[str, Any]) -> str:
    v = results["versions"]
    engines = engines_of(results)
    summaries = "\n".join(
        f"- {e.summary}{';' if i < len(engines) - 1 else '.'}" for i, e in enumerate(engines)
    )
    lines = [
        INTRO.replace("{sleep:g}", f"{RECOVERY_SLEEP:g}").replace("{summaries}", summaries),
        "## The run",
        "",
        f"Measured {results['date']} on {results['machine']} (shared and noisy), "
        f"Python {v['python']}; N = {results['jobs']:,} jobs per measurement, "
        f"best of {results['repeat']} rounds (the rounds interleave the systems, "
        f"and every round starts fresh worker processes); the run took "
        f"{results['seconds'] / 60:.0f} minutes. The project's environment (`.venv`):",
        "",
        "| component | version |",
        "| --- | --- |",
        *(f"| {name} | {version} |" for name, version in v.items()),
        "",
        "![jobs per second by engine and system](../_static/bench-distributed.png)",
    ]
    for engine in engines:
        lines += ["", *engine_markdown(results, engine)]
    return "\n".join(lines) + "\n"


def engine_markdown(results: dict[str, Any], engine: Engine) -> list[str]:
    """The engine's section: its systems, where they ran, results, targets, latency, recovery."""
    section = results["engines"][engine.name]
    labels = engine.labels
    lines = [f"## {engine.title}", "", engine.method(results).rstrip("\n"), ""]
    where = section.get("environments", {})
    if where:
        lines += [
            "| system | environment | Python | versions |",
            "| --- | --- | --- | --- |",
        ]
        for system, found in where.items():
            versions = ", ".join(
                f"{k} {val}" for k, val in found.items() if k not in {"environment", "python"}
            )
            python = found.get("python", v_python(results))
            env = f"`{found['environment']}`"
            if found["environment"] == ".venv":
                env += " (the project's)"
            lines.append(f"| {labels[system]} | {env} | {python} | {versions} |")
        lines.append("")
    heads = [labels[s] for s in engine.systems]
    heads[0] = f"**{heads[0]}**"
    ratio_heads = [f"asyncpool / {labels[p]}" for p in engine.peers]
    ratio_heads += ["asyncpool / fastest peer", f"asyncpool / {labels[engine.floor]}"]
    lines += [
        "### Results",
        "",
        "Jobs per second (best round), and asyncpool's rate divided by each "
        "peer's in the same row (above 1: asyncpool is faster).",
        "",
        "| job | mode | worker processes | " + " | ".join(heads + ratio_heads) + " |",
        "| --- | --- | ---: | " + " | ".join(["---:"] * (len(heads) + len(ratio_heads))) + " |",
    ]
    for row in table(results, engine):
        r, rates = row["ratios"], row["rates"]
        ratios = [r[p] for p in engine.peers] + [row["vs_fastest"], r[engine.floor]]
        lines.append(
            f"| `{row['job']}` | {row['mode']} | {row['procs']} | "
            + " | ".join(_num(rates.get(s)) for s in engine.systems)
            + " | "
            + " | ".join(_ratio(x) for x in ratios)
            + " |"
        )
    for system, why in section.get("skipped", {}).items():
        lines += ["", f"{labels.get(system, system)}: skipped ({why})."]
    lines += ["", *against_targets(results, engine)]
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
    for system in engine.systems:
        for key, runs in section["rows"].get(system, {}).items():
            if key.endswith("/latency"):
                name = f"**{labels[system]}**" if system == "asyncpool" else labels[system]
                lines.append(
                    f"| {name} | {min(x['p50'] for x in runs) * 1e3:.2f} "
                    f"| {min(x['p99'] for x in runs) * 1e3:.2f} |"
                )
    rec = section.get("recovery")
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
    return lines


def v_python(results: dict[str, Any]) -> str:
    return str(results["versions"]["python"])


def against_targets(results: dict[str, Any], engine: Engine) -> list[str]:
    """Each row against the targets (3x every peer, 0.3x the raw floor), said plainly."""
    labels = engine.labels
    names = [labels[p] for p in engine.peers]
    peers = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    lines = ["### Against the targets", ""]
    lines.append(
        f"asyncpool aims at {TARGET_PEER:g}x each of {peers} (so {TARGET_PEER:g}x the fastest "
        f"of them), and {TARGET_FLOOR:g}x the raw floor, in every row. In this run:"
    )
    lines.append("")
    targets = {**dict.fromkeys(engine.peers, TARGET_PEER), engine.floor: TARGET_FLOOR}
    for row in table(results, engine):
        rates, ratios = row["rates"], row["ratios"]
        missed = [
            peer
            for peer, want in targets.items()
            if ratios.get(peer) is not None and ratios[peer] < want
        ]
        head = f"- `{row['job']}`, {row['mode']}, {row['procs']} worker process(es): "
        if not missed:
            lines.append(head + "every target met.")
            continue
        said = []
        for peer in missed:
            text = f"{ratios[peer]:.2f}x {labels[peer]} (target {targets[peer]:g}x)"
            raw = rates.get(engine.floor)
            if peer != engine.floor and raw and rates.get(peer):
                needed = targets[peer] * rates[peer]
                text += (
                    f"; {targets[peer]:g}x {labels[peer]} would be {needed:,.0f} jobs/s, "
                    f"{needed / raw:.2f}x the raw floor of the same row"
                )
            said.append(text)
        lines.append(head + "missed: " + "; ".join(said) + ".")
    lines += ["", engine.where_time_goes]
    return lines


def plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = engines_of(results)
    labels = sorted({e.labels[s] for e in engines for s in e.systems}, key=_plot_order)
    colors = {label: f"C{i}" for i, label in enumerate(labels)}  # one per system on every row
    fig, axes = plt.subplots(
        len(engines), len(MODES), figsize=(12, 4.5 * len(engines)), squeeze=False
    )
    for axes_row, engine in zip(axes, engines, strict=True):
        rows = [r for r in table(results, engine) if r["job"] == results["workloads"][0]]
        systems = [s for s in engine.systems if any(s in r["rates"] for r in rows)]
        for ax, mode in zip(axes_row, MODES, strict=True):
            mine = [r for r in rows if r["mode"] == mode]
            width = 0.8 / max(1, len(systems))
            for j, system in enumerate(systems):
                values = [r["rates"].get(system, 0.0) for r in mine]
                xs = [i + (j - (len(systems) - 1) / 2) * width for i in range(len(mine))]
                hatch = "//" if system == "asyncpool" else None
                bars = ax.bar(
                    xs,
                    values,
                    width,
                    label=engine.labels[system],
                    color=colors[engine.labels[system]],
                    hatch=hatch,
                    edgecolor="black",
                    lw=0.3,
                )
                ax.bar_label(bars, [f"{v:,.0f}" if v else "" for v in values], fontsize=7)
            ax.set_xticks(
                range(len(mine)),
                [f"{r['procs']} worker process{'es' if r['procs'] > 1 else ''}" for r in mine],
            )
            ax.set_title(f"{engine.title}: {results['workloads'][0]}, {mode}")
            ax.set_ylabel("jobs/s")
            ax.yaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
            ax.grid(axis="y", alpha=0.3)
        axes_row[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(
        f"{WINDOW} jobs in flight, N = {results['jobs']:,}, best of {results['repeat']}",
        fontsize=10,
    )
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=100)
    plt.close(fig)
    print(f"wrote {PLOT.relative_to(ROOT)}")


def _plot_order(label: str) -> tuple[int, str]:
    """asyncpool first and the floors last, the peers between by name."""
    return (0 if label == "asyncpool" else 2 if label == "raw floor" else 1, label.lower())


ENGINES: dict[str, Engine] = {"jetstream": _jetstream_engine.ENGINE, "redis": _redis_engine.ENGINE}


# -------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test: about a minute per engine"
    )
    parser.add_argument("--jobs", type=int, help=f"N per measurement (default {DEFAULT_JOBS:,})")
    parser.add_argument("--samples", type=int, help="latency samples")
    parser.add_argument("--repeat", type=int, help="rounds; the best is kept (default 3)")
    parser.add_argument(
        "--engine", default=",".join(ENGINES), help=f"engines, comma-separated: {','.join(ENGINES)}"
    )
    parser.add_argument("--only", help="systems, comma-separated (default: all of each engine)")
    parser.add_argument("--workloads", default="add", help="add,sleep1ms")
    parser.add_argument("--procs", default="1,2", help="worker processes, comma-separated")
    parser.add_argument("--ack-wait", type=float, default=2.0, help="recovery broker's lease")
    parser.add_argument("--no-recovery", action="store_true")
    parser.add_argument("--taskiq-poll", type=float, default=0.05, help="wait_result interval")
    parser.add_argument("--arq-poll", type=float, default=0.01, help="arq poll_delay (both ends)")
    parser.add_argument(
        "--taskiq-redis-poll", type=float, default=0.005, help="taskiq-redis wait_result interval"
    )
    parser.add_argument("--saq-poll", type=float, default=0.01, help="SAQ apply poll_interval")
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
    engines = args.engine.split(",")
    if set(engines) - set(ENGINES) or not engines:
        parser.error(f"unknown engines in {args.engine!r}; known: {', '.join(ENGINES)}")
    known = {s for name in engines for s in ENGINES[name].systems}
    unknown = set(args.only.split(",")) - known if args.only else set()
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; known: {', '.join(sorted(known))}")
    if args.render_only:
        results = upgrade(json.loads(Path(args.render_only).read_text()))
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
