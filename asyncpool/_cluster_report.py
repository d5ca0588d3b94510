"""What `python -m asyncpool demo-cluster` set out to do, what became of it, and the summary.

* the plan: `DemoOptions` (what the command line asked for) and
  `plan_jobs`, the jobs the producer submits (`PlannedJob`), each with the
  answer the producer computed itself;
* the records, filled in as the demo runs: `ClusterReport` holds every
  `JobEntry` (a submitted job and its receipt or error), every `Run` the
  run log told of, and the `Kill`;
* the summary (`summary_lines`, `print_summary`): jobs submitted, results
  received and checked, which worker ran how many, which jobs were
  delivered again and why (and how many of those actually ran twice), and
  how many were lost.

Nothing here starts, waits or reads a process: it is plain data and text,
which the tests build by hand.
"""

from __future__ import annotations

import dataclasses
import random
import signal
from collections import Counter
from pathlib import Path
from typing import IO, Final

from ._cluster_display import wrap
from ._cluster_tasks import Receipt, checksum_of, primes_between

__all__ = (
    "WORKER_LABELS",
    "ClusterReport",
    "DemoOptions",
    "JobEntry",
    "Kill",
    "PlannedJob",
    "Run",
    "counted",
    "plan_jobs",
    "print_summary",
    "summary_lines",
)

WORKER_LABELS: Final = ("A", "B")
"""The worker processes' labels, in the order the demo starts them."""


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


# ------------------------------------------------------------- the summary

_SHOWN_STORIES: Final = 12
"""How many of the jobs delivered again the summary names, with their story."""


def _story(report: ClusterReport, entry: JobEntry) -> str | None:
    """Why a job was delivered more than once, attempt by attempt (None if it was not)."""
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


def _delivered_again(report: ClusterReport, again: list[JobEntry]) -> str:
    """How many jobs were delivered again, how many of those ran again, and why.

    A delivery is not a run: a job the killed worker had taken but not yet
    started is delivered again, and runs once. The run log tells the runs.
    """
    if not again:
        return "0 jobs"
    runs = [len(report.runs.get(entry.id, ())) for entry in again]
    ran = sum(count > 1 for count in runs)
    extra = sum(count - 1 for count in runs if count > 1)
    if extra == ran:
        text = f"{counted(len(again), 'job')} ({ran:,} ran twice)"
    else:
        text = (
            f"{counted(len(again), 'job')} ({ran:,} ran more than once, "
            f"{counted(extra, 'extra run')})"
        )
    kill = report.kill
    if kill is not None:
        them = "them" if len(again) > 1 else "it"
        text += (
            f": worker {kill.label} (pid {kill.pid}) held {them} when it was SIGKILLed, and "
            f"JetStream handed {them} out again once the lease ran out"
        )
    return text


def summary_lines(report: ClusterReport) -> list[str]:
    """The summary `print_summary` prints, as lines of at most `WIDTH` columns."""
    options = report.options
    entries = report.entries
    kill = report.kill
    lines = ["", "Summary"]

    def row(name: str, text: str) -> None:
        lines.extend(wrap(text, " " * 22, first=f"  {name:<19} "))

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
        lines.extend(wrap(entry.error or "", " " * 12, first=f"    #{entry.planned.number:<6} "))
    lost = report.lost
    row("lost", ": ".join([f"{len(lost):,}", *([_numbers(lost)] if lost else [])]))
    attempts = Counter(e.receipt["attempt"] for e in entries if e.receipt is not None)
    row(
        "final attempt",
        ", ".join(f"{counted(n, 'job')} at {attempt}" for attempt, n in sorted(attempts.items())),
    )
    results_by_pid = Counter(e.receipt["pid"] for e in entries if e.receipt is not None)
    runs_by_pid = Counter(run.pid for runs in report.runs.values() for run in runs)
    for label in WORKER_LABELS:
        pid = report.pids.get(f"worker {label}")
        if pid is None:
            continue
        text = (
            f"pid {pid}: {counted(results_by_pid[pid], 'result')} from "
            f"{counted(runs_by_pid[pid], 'run')}"
        )
        if kill is not None and kill.pid == pid:
            text += (
                f"; SIGKILLed at {kill.after:.2f} s, {counted(len(kill.running), 'job')} running"
            )
        row(f"worker {label}", text)
    if kill is None:
        row("SIGKILL", "none: no worker had a job running when a third of the results were in")
    stories = [(entry, _story(report, entry)) for entry in entries]
    again = [(entry, story) for entry, story in stories if story is not None]
    row("delivered again", _delivered_again(report, [entry for entry, _ in again]))
    for entry, story in again[:_SHOWN_STORIES]:
        first = f"    #{entry.planned.number:<5} {entry.planned.task:<12} "
        lines.extend(wrap(story, " " * len(first), first=first))
    if len(again) > _SHOWN_STORIES:
        lines.append(f"    ... and {len(again) - _SHOWN_STORIES:,} more")
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
            wrap(
                f"NOT every job accounted for: {len(lost):,} lost, {len(report.failed):,} "
                f"failed, {len(report.wrong):,} wrong, {missing:,} never submitted",
                "  ",
                first="",
            )
        )
    return lines


def counted(number: int, noun: str) -> str:
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
