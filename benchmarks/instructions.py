"""Instructions per job, counted by valgrind: a benchmark that a noisy machine cannot blur.

Wall-clock rates on a shared 2-core machine move by 10-40% from run to run.
callgrind counts the instructions the CPU executes instead, which is the same
from run to run for the same program and input. The per-job cost is the
difference between a run of `--jobs` jobs and a run of `--jobs / 10` jobs,
divided by the difference in jobs, so start-up costs cancel out.

    python benchmarks/instructions.py [--jobs 22000] [--workers 8,64,1024]
                                      [--queue-size 0,1024] [--loop asyncio,uvloop]
                                      [--workloads W1,W4]

It needs valgrind (`apt-get install valgrind`). The floor is the one of
`benchmarks/throughput.py`; the workloads are those of `benchmarks/peers.py`
(W1: trivial jobs; W4: Job objects of two alternating classes). GC is off in
the measured runs, so the counts leave out the collector (see the
performance page for its share). Internally it re-runs itself under valgrind
with `--child`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._peer_impls import WORKLOADS, asyncpool_impl, floor

_COLLECTED = re.compile(r"Collected : (\d+)")


def child(impl: str, workload: str, loop: str, workers: int, queue_size: int, jobs: int) -> None:
    """Run one configuration (under valgrind) and check every job ran once."""
    work = WORKLOADS[workload]
    items = work.items(jobs)
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    gc.disable()  # collection points would differ between the two runs
    with asyncio.Runner(loop_factory=factory) as runner:
        run = floor if impl == "floor" else asyncpool_impl(queue_size)

        async def measured() -> tuple[int, int]:
            return await run(work, items, workers)

        count, total = runner.run(measured())
    if count != jobs or total != jobs * (jobs - 1) // 2:
        raise SystemExit("wrong result: jobs were lost or repeated")


def count(impl: str, workload: str, loop: str, workers: int, queue_size: int, jobs: int) -> int:
    """Instructions executed by one child run."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            impl,
            workload,
            loop,
            str(workers),
            str(queue_size),
            str(jobs),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = _COLLECTED.search(done.stderr)
    if found is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_job(impl: str, workload: str, loop: str, workers: int, queue_size: int, jobs: int) -> float:
    small = jobs // 10
    config = (impl, workload, loop, workers, queue_size)
    return (count(*config, jobs) - count(*config, small)) / (jobs - small)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        impl, workload, loop_name, k, size, n = sys.argv[2:8]
        child(impl, workload, loop_name, int(k), int(size), int(n))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=22_000)
    parser.add_argument("--workers", default="8,64,1024")
    parser.add_argument("--queue-size", default="0,1024")
    parser.add_argument("--loop", default="asyncio,uvloop")
    parser.add_argument("--workloads", default="W1,W4")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    print("instructions per job (fewer is faster); x floor = floor / asyncpool")
    header = f"{'work':4} {'loop':8} {'K':>5} {'queue':>6} {'floor':>8} {'asyncpool':>10}"
    print(f"{header} {'x floor':>8}")
    for workload in args.workloads.split(","):
        for loop in args.loop.split(","):
            for workers in (int(k) for k in args.workers.split(",")):
                base = per_job("floor", workload, loop, workers, 0, args.jobs)
                for queue_size in (int(q) for q in args.queue_size.split(",")):
                    ours = per_job("asyncpool", workload, loop, workers, queue_size, args.jobs)
                    row = f"{workload:4} {loop:8} {workers:>5} {queue_size:>6} {base:>8,.0f}"
                    print(f"{row} {ours:>10,.0f} {base / ours:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
