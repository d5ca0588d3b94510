"""Load and memory: a million jobs, ten thousand sleepers, an endless map, keyed jobs with retries.

Each scenario runs in a process of its own (so that its peak RSS is its own),
checks its own results (counts, sums, order), and prints what it measured:

* ``jobs``: 1,000,000 trivial jobs through ``Dispatcher(workers=64)``, the
  handles dropped at once. Jobs stream through the bounded queue, so resident
  memory must stay flat: it is sampled every 100,000 jobs.
* ``sleepers``: 10,000 jobs that each sleep 1 s, with 10,000 workers: the
  wall time should be about 1 s.
* ``map``: ``Dispatcher.map`` over ``itertools.count()`` (an endless input),
  window 64, stopped after 1,000,000 results, taken in order; memory sampled
  every 100,000 results must stay flat.
* ``idle``: a started ``Dispatcher(workers=100_000)`` with nothing to do:
  its resident memory above the process's before it started must stay under
  20 MiB (workers above the first 64 start only when jobs need them).
* ``keys``: 100,000 jobs with ``key=i % 100`` and a priority per key, some
  failing once (retried), some timing out once (retried): jobs of one key
  must never overlap and must start in submission order.

The process exits with status 1 if any check fails (a wrong count, sum or
order, or memory that grows by more than ``--max-growth`` MiB between the
first and the last sample).

    python benchmarks/load.py [--loop asyncio,uvloop] [--scenario jobs,sleepers,map,idle,keys]
                              [--scale 1.0] [--tracemalloc] [--max-growth 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncpool import Dispatcher, Retry

SCENARIOS = ("jobs", "sleepers", "map", "idle", "keys")
IDLE_LIMIT = 20 * 1024 * 1024  # what an idle pool of 100,000 workers may add to the RSS
MIB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss() -> int:
    """Resident memory now, in bytes: /proc/self/statm on Linux, else the peak so far."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        return peak_rss()


def peak_rss() -> int:
    """The process's peak resident memory so far (ru_maxrss), in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@dataclass
class Result:
    """What one scenario measured, and whether its checks passed."""

    scenario: str
    loop: str
    items: int
    seconds: float = 0.0
    rss_start: int = 0  # before the scenario's dispatcher starts
    samples: list[tuple[int, int]] = field(default_factory=list)  # (items done, RSS)
    rss_end: int = 0
    peak_before: int = 0
    peak_after: int = 0
    heap_peak: int | None = None  # tracemalloc's peak, with --tracemalloc
    detail: str = ""
    errors: list[str] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.errors.append(message)

    @property
    def growth(self) -> int:
        """RSS growth from the first sample to the last (after warm-up), in bytes."""
        if len(self.samples) < 2:
            return self.rss_end - self.rss_start
        return self.samples[-1][1] - self.samples[0][1]


# ---------------------------------------------------------------- scenarios


async def scenario_jobs(result: Result) -> None:
    """1,000,000 trivial jobs through 64 workers; nothing keeps a handle."""
    n = result.items
    done = [0, 0]  # jobs run, sum of their arguments

    async def job(i: int) -> None:
        done[0] += 1
        done[1] += i

    step = max(1, n // 10)
    async with Dispatcher(64) as dispatcher:
        start = time.perf_counter()
        for i in range(n):
            await dispatcher.submit(job, i)
            if (i + 1) % step == 0:
                result.samples.append((i + 1, rss()))
        await dispatcher.join()
        result.seconds = time.perf_counter() - start
        stats = dispatcher.stats()
    result.check(done[0] == n, f"{done[0]} jobs ran, not {n}")
    result.check(done[1] == n * (n - 1) // 2, "the jobs' arguments do not add up")
    result.check(stats.succeeded == stats.submitted == n, f"stats: {stats}")
    result.detail = f"{n / result.seconds:,.0f} jobs/s"


async def scenario_sleepers(result: Result, sleep: float) -> None:
    """10,000 jobs sleeping `sleep` seconds at once, one worker each."""
    n = result.items
    woke = [0]

    async def sleeper() -> None:
        await asyncio.sleep(sleep)
        woke[0] += 1

    async with Dispatcher(n, queue_size=n) as dispatcher:
        start = time.perf_counter()
        for _ in range(n):
            await dispatcher.submit(sleeper)
        result.samples.append((0, rss()))
        await dispatcher.join()
        result.seconds = time.perf_counter() - start
        result.samples.append((n, rss()))
        stats = dispatcher.stats()
    result.check(woke[0] == n, f"{woke[0]} sleepers woke, not {n}")
    result.check(stats.succeeded == n, f"stats: {stats}")
    # All at once, or it would take n * sleep / workers: allow generous overhead.
    result.check(result.seconds < sleep + 5, f"{result.seconds:.2f} s: they did not sleep at once")
    result.detail = f"{result.seconds - sleep:.3f} s over the {sleep:g} s sleep"


async def scenario_idle(result: Result) -> None:
    """A pool of 100,000 workers, started, with nothing to do: memory above the baseline."""
    n = result.items
    before = rss()
    result.samples.append((0, before))
    async with Dispatcher(n) as dispatcher:
        for _ in range(3):  # the first workers start and register as idle
            await asyncio.sleep(0)
        during = rss()
        result.samples.append((n, during))
        stats = dispatcher.stats()
    result.check(stats.idle == n, f"stats: {stats}")
    grown = during - before
    result.check(
        grown < IDLE_LIMIT,
        f"an idle Dispatcher({n:,}) added {mib(grown)} MiB to the RSS (limit {mib(IDLE_LIMIT)})",
    )
    result.detail = f"+{mib(grown)} MiB RSS for {n:,} idle workers"


async def scenario_map(result: Result) -> None:
    """map() over an endless input, window 64, stopped after n results."""
    n = result.items
    window = 64

    async def double(i: int) -> int:
        return 2 * i

    step = max(1, n // 10)
    async with Dispatcher(64) as dispatcher:
        start = time.perf_counter()
        taken = 0
        in_order = True
        async with contextlib.aclosing(
            dispatcher.map(double, itertools.count(), window=window)
        ) as results:
            async for value in results:
                if value != 2 * taken:
                    in_order = False
                taken += 1
                if taken % step == 0:
                    result.samples.append((taken, rss()))
                if taken == n:
                    break
        result.seconds = time.perf_counter() - start
        stats = dispatcher.stats()
    result.check(taken == n, f"{taken} results, not {n}")
    result.check(in_order, "map() yielded a result out of order, or a wrong one")
    # At most `window` jobs were submitted beyond the results taken; aclose()
    # cancelled them and waited for them.
    result.check(n <= stats.submitted <= n + window, f"{stats.submitted} jobs submitted")
    result.check((stats.queued, stats.busy) == (0, 0), f"stats after the map: {stats}")
    result.check(stats.succeeded >= n and stats.failed == 0, f"stats: {stats}")
    result.detail = f"{n / result.seconds:,.0f} results/s; {stats.cancelled} cancelled at the end"


async def scenario_keys(result: Result) -> None:
    """Keyed jobs with priorities, failures that retry and timeouts that retry."""
    n = result.items
    keys = 100
    never = asyncio.Event()  # what a job that times out waits for
    # Bookkeeping of constant size, so that it does not hide the pool's memory.
    tries: dict[int, int] = {}  # jobs started and not finished: their tries so far
    last_start = [-1] * keys  # per key: the job that started last
    running_keys: set[int] = set()
    misordered = [0]
    overlaps = [0]
    total = [0]

    def plan(i: int) -> str:
        # Disjoint: at most one planned mishap per job.
        if i % 97 == 5:
            return "fail_once"
        if i % 89 == 7:
            return "time_out_once"
        return "ok"

    async def job(i: int) -> int:
        key = i % keys
        if key in running_keys:
            overlaps[0] += 1
        running_keys.add(key)
        # A retry runs again before the next job of its key: per key, starts
        # may repeat a job but never go back to an earlier one.
        if i < last_start[key]:
            misordered[0] += 1
        last_start[key] = i
        attempt = tries[i] = tries.get(i, 0) + 1
        try:
            if attempt == 1 and plan(i) == "fail_once":
                raise ConnectionError(f"job {i}: planned failure")
            if attempt == 1 and plan(i) == "time_out_once":
                await never.wait()
            await asyncio.sleep(0)
            total[0] += i
            del tries[i]
            return i
        finally:
            running_keys.discard(key)

    retry = Retry(attempts=3, backoff=0.001, jitter=0.0)
    async with Dispatcher(64, retry=retry, timeout=None) as dispatcher:
        start = time.perf_counter()
        for i in range(n):
            key = i % keys
            options: dict[str, Any] = {"key": key, "priority": key % 3}
            if plan(i) == "time_out_once":
                options["timeout"] = 0.05
            await dispatcher.submit(job, i, **options)
            if (i + 1) % max(1, n // 10) == 0:
                result.samples.append((i + 1, rss()))
        await dispatcher.join()
        result.seconds = time.perf_counter() - start
        stats = dispatcher.stats()
    failing = sum(plan(i) == "fail_once" for i in range(n))
    timing_out = sum(plan(i) == "time_out_once" for i in range(n))
    result.check(total[0] == n * (n - 1) // 2, "the jobs' results do not add up")
    result.check(stats.succeeded == stats.submitted == n, f"stats: {stats}")
    result.check(stats.retried == failing + timing_out, f"{stats.retried} retries")
    result.check(stats.timed_out == timing_out, f"{stats.timed_out} timeouts")
    result.check(overlaps[0] == 0, f"{overlaps[0]} jobs started while their key ran")
    result.check(misordered[0] == 0, f"{misordered[0]} jobs started ahead of their key's order")
    result.check(not tries, f"{len(tries)} jobs never finished")
    result.detail = (
        f"{n / result.seconds:,.0f} jobs/s; {failing} failed once, {timing_out} timed out once"
    )


# ------------------------------------------------------------------ driving


def run_child(name: str, loop: str, scale: float, sleep: float, trace: bool) -> Result:
    """Run one scenario in this process and measure it."""
    items = {
        "jobs": 1_000_000,
        "sleepers": 10_000,
        "map": 1_000_000,
        "idle": 100_000,
        "keys": 100_000,
    }[name]
    result = Result(name, loop, max(1, int(items * scale)))
    scenarios: dict[str, Callable[[Result], Coroutine[Any, Any, None]]] = {
        "jobs": scenario_jobs,
        "sleepers": lambda r: scenario_sleepers(r, sleep),
        "map": scenario_map,
        "idle": scenario_idle,
        "keys": scenario_keys,
    }
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    if trace:
        tracemalloc.start()
    result.peak_before = peak_rss()
    result.rss_start = rss()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(scenarios[name](result))
    result.rss_end = rss()
    result.peak_after = peak_rss()
    if trace:
        result.heap_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result


def run_in_subprocess(name: str, loop: str, args: argparse.Namespace) -> Result:
    """Run one scenario in a fresh interpreter, so that its peak RSS is its own."""
    command = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--loop",
        loop,
        "--scale",
        str(args.scale),
        "--sleep",
        str(args.sleep),
    ]
    if args.tracemalloc:
        command.append("--tracemalloc")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        result = Result(name, loop, 0)
        result.errors.append(f"the scenario crashed (status {done.returncode}): {done.stderr}")
        return result
    data = json.loads(done.stdout.strip().splitlines()[-1])
    data["samples"] = [tuple(sample) for sample in data["samples"]]
    return Result(**data)


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:,.1f}"


def report(results: list[Result], max_growth: float) -> bool:
    """Print the tables; return True if every check passed."""
    ok = True
    for r in results:
        if r.samples and r.growth > max_growth * MIB:
            r.errors.append(
                f"RSS grew by {mib(r.growth)} MiB between the first and last sample "
                f"(limit {max_growth:g} MiB)"
            )
        ok = ok and not r.errors
    header = (
        "scenario",
        "loop",
        "items",
        "wall s",
        "RSS start → end",
        "sampled growth",
        "peak RSS (growth)",
        "heap peak",
        "checks",
    )
    rows = [
        (
            r.scenario,
            r.loop,
            f"{r.items:,}",
            f"{r.seconds:.2f}",
            f"{mib(r.rss_start)} → {mib(r.rss_end)}",
            mib(r.growth),
            f"{mib(r.peak_after)} (+{mib(r.peak_after - r.peak_before)})",
            mib(r.heap_peak),
            "ok" if not r.errors else "FAILED",
        )
        for r in results
    ]
    notes = [f"{r.scenario} ({r.loop}): {r.detail}" for r in results if r.detail]
    samples = [
        (f"{r.scenario} ({r.loop})", ", ".join(f"{mib(size)}" for _, size in r.samples))
        for r in results
        if len(r.samples) > 2
    ]
    legend = (
        "Memory in MiB. RSS from /proc/self/statm; sampled growth: from the first "
        "sample (a tenth of the work done) to the last; peak: ru_maxrss of the "
        "scenario's own process, and its growth over the scenario; heap peak: "
        "tracemalloc (--tracemalloc)."
    )
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(" | ".join(header))
        for row in rows:
            print(" | ".join(row))
        print(legend)
        for name, line in samples:
            print(f"RSS after each tenth, {name}: {line}")
        for note in notes:
            print(note)
    else:
        console = Console()
        if not console.is_terminal:
            console.width = max(console.width, 120)  # a log file does not wrap
        table = Table(title="asyncpool under load", title_justify="left", caption=legend)
        for column in header:
            table.add_column(column, justify="left" if column == "scenario" else "right")
        for row in rows:
            table.add_row(*row, style=None if row[-1] == "ok" else "red")
        console.print(table)
        if samples:
            sampled = Table(title="RSS (MiB) after each tenth of the work", title_justify="left")
            sampled.add_column("scenario")
            sampled.add_column("RSS")
            for name, line in samples:
                sampled.add_row(name, line)
            console.print(sampled)
        for note in notes:
            console.print(note)
    for r in results:
        for error in r.errors:
            print(f"FAILED {r.scenario} ({r.loop}): {error}", file=sys.stderr)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--loop", default="asyncio,uvloop", help="asyncio, uvloop, or both comma-separated"
    )
    parser.add_argument(
        "--scenario",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every scenario's job count"
    )
    parser.add_argument("--sleep", type=float, default=1.0, help="the sleepers' sleep, seconds")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also measure the Python heap (2-3x slower)"
    )
    parser.add_argument(
        "--max-growth", type=float, default=16.0, help="allowed RSS growth, MiB (default 16)"
    )
    parser.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.loop not in ("asyncio", "uvloop"):
            parser.error("a scenario runs on one loop")
        result = run_child(args.child, args.loop, args.scale, args.sleep, args.tracemalloc)
        print(json.dumps(asdict(result)))
        return
    names = [name.strip() for name in args.scenario.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    loops = [loop.strip() for loop in args.loop.split(",") if loop.strip()]
    if not loops or set(loops) - {"asyncio", "uvloop"}:
        parser.error(f"--loop takes asyncio, uvloop or both, got {args.loop!r}")
    results = []
    for loop in loops:
        for name in names:
            print(f"running {name} on {loop} ...", file=sys.stderr, flush=True)
            results.append(run_in_subprocess(name, loop, args))
    if not report(results, args.max_growth):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
