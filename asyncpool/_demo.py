"""The demo behind `python -m asyncpool demo`: line counts and SHA-256 digests of a directory tree.

This module owns the demo's work and its display. It is the seed's back
story on data every machine has: the files of a tree (the running
interpreter's standard library by default) are cut into two job types that
go through one `Dispatcher`:

* `BatchJob`: many small files, read one after the other by one job;
* `SingleJob`: one large file on its own.

Both are plain classes with a blocking `process()`, so asyncpool runs them
in worker threads; nothing inherits from anything. The tree is walked one
directory at a time (each listing in a thread) while jobs are submitted with
`await dispatcher.submit(...)`, so a full job queue pauses the walk: the
backpressure keeps memory flat however big the tree is.

`scan_tree` is the core and needs nothing but asyncpool; `run_with_progress`
(a live line that keeps its counts and elapsed time down to 60 columns) and
`print_summary` (the totals, and the SHA-256 digests of the last files read)
add the display and import `rich` (the `demo` extra) only when called. The
command line lives in `asyncpool/__main__.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import os
import stat
import sysconfig
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

import anyio.to_thread

from ._dispatcher import Dispatcher
from ._stats import Stats

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

__all__ = (
    "BatchJob",
    "BatchPolicy",
    "DemoUsageError",
    "FileDigest",
    "FileFailure",
    "ScanReport",
    "SingleJob",
    "default_exclude",
    "default_root",
    "print_summary",
    "run_with_progress",
    "scan_file",
    "scan_tree",
)

CHUNK_SIZE = 1024 * 1024
"""How much of a file one read takes."""

LATEST_DIGESTS = 5
"""How many of the last files read `ScanReport.latest` keeps, for the summary to show."""

# O_NONBLOCK makes opening a FIFO return at once instead of waiting for a
# writer; the fstat that follows then refuses anything but a regular file.
# It changes nothing for regular files. O_BINARY only exists (and matters)
# on Windows.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class DemoUsageError(Exception):
    """Raised by `scan_tree` for input it cannot work with.

    That is a root that is missing or not a directory, or pool settings the
    `Dispatcher` refuses (its `TypeError` or `ValueError` is the cause). The
    command line prints the message on one line and exits with status 2.
    """


# ------------------------------------------------------------------ one file


@dataclasses.dataclass(frozen=True, slots=True)
class FileDigest:
    """A file that was read to the end.

    Attributes:
        path: The path as the walk found it.
        size: Bytes read.
        lines: Newline characters, plus one for a last line without one
            (so `b"a\\nb"` has 2 lines, and an empty file 0).
        sha256: The hex SHA-256 digest of the bytes read.
    """

    path: str
    size: int
    lines: int
    sha256: str


@dataclasses.dataclass(frozen=True, slots=True)
class FileFailure:
    """A file (or directory) that could not be read, and why.

    Attributes:
        path: The path as the walk found it.
        reason: A one-line explanation, such as
            `"PermissionError: Permission denied"`.
    """

    path: str
    reason: str


FileResult: TypeAlias = FileDigest | FileFailure
"""What a job returns for each of its files."""


def scan_file(path: str) -> FileResult:
    """Count the lines of one file and hash it, reading it in chunks.

    Blocking: jobs call it from worker threads. A file that cannot be read
    (missing, a broken symlink, no permission, not a regular file, an I/O
    error) gives a `FileFailure`; nothing is raised for it.

    Args:
        path: The file to read.

    Returns:
        A `FileDigest`, or a `FileFailure` saying why the file was not read.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        return FileFailure(path, _describe_os_error(path, exc))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            return FileFailure(path, f"not a regular file: it is {_describe_kind(mode)}")
        digest = hashlib.sha256()
        size = lines = 0
        last = b"\n"  # so that an empty file has no unterminated last line
        while chunk := os.read(fd, CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    except OSError as exc:
        return FileFailure(path, _describe_os_error(path, exc))
    finally:
        os.close(fd)
    if last != b"\n":
        lines += 1
    return FileDigest(path, size, lines, digest.hexdigest())


def _describe_os_error(path: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError) and os.path.islink(path):
        return f"broken symlink to {os.readlink(path)!r}"
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def _describe_kind(mode: int) -> str:
    for test, kind in _FILE_KINDS:
        if test(mode):
            return kind
    return f"of type {stat.S_IFMT(mode):#o}"


# ---------------------------------------------------------------- the jobs


@dataclasses.dataclass(frozen=True, slots=True)
class BatchJob:
    """The seed's `BatchJob`: many small files, read by one job one after the other.

    Its `process` is blocking, so asyncpool runs it in a worker thread.

    Attributes:
        paths: The files of the batch.
    """

    paths: tuple[str, ...]

    def process(self) -> list[FileResult]:
        """Read every file of the batch.

        Returns:
            One result per file, in order; unreadable files are
            `FileFailure`s, never exceptions.
        """
        return [scan_file(path) for path in self.paths]


@dataclasses.dataclass(frozen=True, slots=True)
class SingleJob:
    """The seed's `SingleJob`: one large file, worth a job of its own.

    Attributes:
        path: The file.
    """

    path: str

    @property
    def paths(self) -> tuple[str, ...]:
        """The one file, in the same shape as `BatchJob.paths`."""
        return (self.path,)

    def process(self) -> list[FileResult]:
        """Read the file.

        Returns:
            A one-element list, like a batch of one.
        """
        return [scan_file(self.path)]


DemoJob: TypeAlias = BatchJob | SingleJob


@dataclasses.dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How the walk cuts files into jobs.

    Attributes:
        single_file_bytes: Files at least this big get a `SingleJob` each.
        batch_files: A batch is submitted once it has this many files...
        batch_bytes: ...or once its files add up to this many bytes.
    """

    single_file_bytes: int = 256 * 1024
    batch_files: int = 64
    batch_bytes: int = 1024 * 1024


# --------------------------------------------------------------- the walk


class _Listing(NamedTuple):
    files: list[tuple[str, int]]  # (path, size); size 0 if it cannot be stat'ed
    subdirs: list[str]
    symlinked_dirs: int


def _list_directory(directory: str) -> _Listing:
    """List one directory, sorted by name (blocking: runs in a thread).

    Raises:
        OSError: the directory cannot be listed.
    """
    files: list[tuple[str, int]] = []
    subdirs: list[str] = []
    symlinked_dirs = 0
    with os.scandir(directory) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.path)
                continue
            # Following symlinked directories could loop forever; they are
            # counted and left alone.
            if entry.is_symlink() and entry.is_dir():
                symlinked_dirs += 1
                continue
        except OSError:
            pass  # undecidable here: let scan_file find out and report it
        try:
            size = entry.stat().st_size
        except OSError:
            size = 0  # a broken symlink, say: scan_file will report it
        files.append((entry.path, size))
    return _Listing(files, subdirs, symlinked_dirs)


async def _walk(
    root: str, exclude: frozenset[str], policy: BatchPolicy, report: ScanReport
) -> AsyncGenerator[DemoJob, None]:
    """Walk the tree depth first, in name order, and yield its files as jobs.

    Directories that cannot be listed go to `report.failures`. Each listing
    runs in a thread; the caller's `submit` paces the walk.
    """
    batch: list[str] = []
    batch_bytes = 0
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            listing = await anyio.to_thread.run_sync(_list_directory, directory)
        except OSError as exc:
            reason = f"directory not listed: {_describe_os_error(directory, exc)}"
            report.failures.append(FileFailure(directory, reason))
            continue
        report.symlinked_dirs += listing.symlinked_dirs
        pending.extend(reversed([path for path in listing.subdirs if path not in exclude]))
        for path, size in listing.files:
            if size >= policy.single_file_bytes:
                yield SingleJob(path)
                continue
            batch.append(path)
            batch_bytes += size
            if len(batch) >= policy.batch_files or batch_bytes >= policy.batch_bytes:
                yield BatchJob(tuple(batch))
                batch = []
                batch_bytes = 0
    if batch:
        yield BatchJob(tuple(batch))


# ---------------------------------------------------------------- the scan


@dataclasses.dataclass(slots=True, eq=False)
class ScanReport:
    """What `scan_tree` found; filled in as jobs finish.

    Attributes:
        root: The directory walked (absolute).
        excluded: Directories left out of the walk (absolute).
        workers: The pool size.
        queue_size: The job queue bound.
        loop: The event loop's class, as `module.Class`.
        batch_jobs: `BatchJob`s submitted.
        single_jobs: `SingleJob`s submitted.
        failed_jobs: Jobs that raised (a bug: unreadable files do not).
        files: Files read to the end.
        lines: Lines in them.
        bytes_read: Bytes in them.
        symlinked_dirs: Symlinks to directories, not followed.
        failures: Files and directories that could not be read.
        records: Every `FileDigest`, if `scan_tree` was asked to keep them.
        latest: The last `LATEST_DIGESTS` files read, oldest first (kept
            whatever `keep_records` says: memory stays flat).
        walk_finished: True once every job has been submitted.
        elapsed: Seconds from the start of the walk to the end of the last
            job.
    """

    root: Path
    excluded: tuple[Path, ...]
    workers: int
    queue_size: int
    loop: str
    batch_jobs: int = 0
    single_jobs: int = 0
    failed_jobs: int = 0
    files: int = 0
    lines: int = 0
    bytes_read: int = 0
    symlinked_dirs: int = 0
    failures: list[FileFailure] = dataclasses.field(default_factory=list)
    records: list[FileDigest] | None = None
    latest: deque[FileDigest] = dataclasses.field(
        default_factory=lambda: deque(maxlen=LATEST_DIGESTS)
    )
    walk_finished: bool = False
    elapsed: float = 0.0

    @property
    def jobs(self) -> int:
        """Jobs submitted, of both kinds."""
        return self.batch_jobs + self.single_jobs

    @property
    def jobs_per_second(self) -> float:
        """Jobs per second over the whole scan (0.0 before it ends)."""
        return self.jobs / self.elapsed if self.elapsed > 0 else 0.0

    def add(self, job: DemoJob, handle: asyncio.Future[list[FileResult]]) -> None:
        """Count the outcome of a finished job.

        A job that raised counts once in `failed_jobs`, and each of its files
        becomes a `FileFailure`. A cancelled job counts for nothing: the scan
        is being cancelled as a whole.
        """
        if handle.cancelled():
            return
        exc = handle.exception()
        if exc is not None:
            self.failed_jobs += 1
            reason = f"the job failed: {type(exc).__name__}: {exc}"
            self.failures.extend(FileFailure(path, reason) for path in job.paths)
            return
        for result in handle.result():
            if isinstance(result, FileFailure):
                self.failures.append(result)
                continue
            self.files += 1
            self.lines += result.lines
            self.bytes_read += result.size
            self.latest.append(result)
            if self.records is not None:
                self.records.append(result)


ProgressCallback: TypeAlias = Callable[[Stats, ScanReport], object]


def default_root() -> Path:
    """The running interpreter's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def default_exclude(root: Path) -> tuple[Path, ...]:
    """The third-party package directories inside `root`: they are not the standard library."""
    candidates = (root / "site-packages", root / "dist-packages")
    return tuple(path for path in candidates if path.is_dir())


def _absolute(paths: Iterable[str | os.PathLike[str]]) -> tuple[Path, ...]:
    return tuple(Path(os.path.abspath(path)) for path in paths)


def _check_root(root: str | os.PathLike[str]) -> Path:
    path = Path(os.path.abspath(root))
    if not path.exists():
        raise DemoUsageError(f"{os.fspath(root)}: no such directory")
    if not path.is_dir():
        raise DemoUsageError(f"{os.fspath(root)}: not a directory")
    return path


async def scan_tree(
    root: str | os.PathLike[str],
    *,
    workers: int = 8,
    queue_size: int = 1024,
    exclude: Iterable[str | os.PathLike[str]] = (),
    policy: BatchPolicy | None = None,
    keep_records: bool = False,
    on_progress: ProgressCallback | None = None,
) -> ScanReport:
    """Walk `root` and count the lines and hash every file, through one `Dispatcher`.

    Args:
        root: The directory to walk. Symlinked directories are not followed.
        workers: The pool size.
        queue_size: How many jobs may wait; the walk pauses while it is full.
        exclude: Directories to leave out, with everything below them.
        policy: How to cut files into jobs; `BatchPolicy()` if None.
        keep_records: Keep every `FileDigest` in `ScanReport.records`.
        on_progress: Called as `on_progress(stats, report)` on the event
            loop after each submission, after each finished job, and once
            the walk is over.

    Returns:
        The totals, and the files that could not be read.

    Raises:
        DemoUsageError: `root` is missing or not a directory, or the pool
            settings are refused by `Dispatcher`.
    """
    root_path = _check_root(root)
    try:
        dispatcher = Dispatcher(workers, queue_size=queue_size, name="demo")
    except (TypeError, ValueError) as exc:
        raise DemoUsageError(str(exc)) from exc
    loop_class = type(asyncio.get_running_loop())
    excluded = _absolute(exclude)
    report = ScanReport(
        root=root_path,
        excluded=excluded,
        workers=workers,
        queue_size=queue_size,
        loop=f"{loop_class.__module__}.{loop_class.__qualname__}",
        records=[] if keep_records else None,
    )
    policy = policy or BatchPolicy()
    # Jobs submitted and not yet counted, by handle id.
    in_flight: dict[int, tuple[DemoJob, asyncio.Future[list[FileResult]]]] = {}

    def notify() -> None:
        if on_progress is not None:
            on_progress(dispatcher.stats(), report)

    def collect(job_id: int, handle: asyncio.Future[list[FileResult]]) -> None:
        # A done callback: having one also tells the dispatcher that someone
        # takes care of the job's failure, so it does not log it.
        entry = in_flight.pop(job_id, None)
        if entry is not None:
            report.add(entry[0], handle)
            notify()

    started = time.perf_counter()
    async with dispatcher:
        jobs = _walk(os.fspath(root_path), frozenset(map(os.fspath, excluded)), policy, report)
        async with contextlib.aclosing(jobs):
            async for job in jobs:
                handle = await dispatcher.submit(job)
                in_flight[handle.id] = (job, handle)
                handle.add_done_callback(functools.partial(collect, handle.id))
                if isinstance(job, SingleJob):
                    report.single_jobs += 1
                else:
                    report.batch_jobs += 1
                notify()
        report.walk_finished = True
        notify()
    # Every handle's done callbacks are scheduled before the join() inside
    # `async with` wakes up, so they have all run by now; this is only a net.
    for job_id, (_, leftover) in list(in_flight.items()):
        collect(job_id, leftover)
    report.elapsed = time.perf_counter() - started
    return report


# ------------------------------------------------------------- the display


async def run_with_progress(
    root: str | os.PathLike[str],
    *,
    console: Console,
    workers: int = 8,
    queue_size: int = 1024,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> ScanReport:
    """Run `scan_tree` with a live `rich` progress display on `console`.

    The display only shows on a terminal; elsewhere (a pipe, a file, a test)
    the scan runs quietly and `print_summary` tells the result.

    Args:
        root: As for `scan_tree`.
        console: Where the progress goes.
        workers: As for `scan_tree`.
        queue_size: As for `scan_tree`.
        exclude: As for `scan_tree`.

    Returns:
        What `scan_tree` returns.

    Raises:
        DemoUsageError: as for `scan_tree`.
        ImportError: `rich` is not installed.
    """
    progress = _make_progress(console)
    task = progress.add_task("walking", total=None, failed=0, queued=0, rate=0.0, unreadable=0)
    started = time.perf_counter()
    displayed = False

    def show(stats: Stats, report: ScanReport) -> None:
        nonlocal displayed
        # Started on the first call, so that bad input never flashes an
        # empty progress bar before its error message.
        if not displayed:
            displayed = True
            progress.start()
        elapsed = time.perf_counter() - started
        progress.update(
            task,
            description=_phase(stats, report),
            completed=stats.finished,
            total=stats.submitted,
            failed=stats.failed,
            queued=stats.queued,
            rate=stats.finished / elapsed if elapsed > 0 else 0.0,
            unreadable=len(report.failures),
        )

    try:
        return await scan_tree(
            root, workers=workers, queue_size=queue_size, exclude=exclude, on_progress=show
        )
    finally:
        if displayed:
            progress.stop()


def _make_progress(console: Console) -> Progress:
    """The live line: `⠋ hashing 120/265 jobs · 0 failed ━━━━━━ 8 queued · ... 0:00:01`.

    What the line is for (the phase, jobs done of submitted, failures, and
    the elapsed time at the end) never shrinks. On a narrow terminal the bar
    and the details after it (queued, rate, unreadable files) give up their
    room instead: a rich table shrinks only the columns that may wrap, the
    widest first, and the details are cut with an ellipsis rather than
    wrapped, so the line stays one line. It keeps everything but the
    details down to 60 columns, even at thousands of jobs.
    """
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

    class DetailsColumn(ProgressColumn):
        """The part of the line that may be cut short."""

        def render(self, task: Task) -> Text:
            fields = task.fields
            return Text(
                f"{fields['queued']:,} queued · {fields['rate']:,.0f} jobs/s"
                f" · {fields['unreadable']:,} unreadable files",
                no_wrap=True,
                overflow="ellipsis",
            )

    def kept() -> Column:
        return Column(no_wrap=True)

    return Progress(
        SpinnerColumn(table_column=kept()),
        TextColumn("{task.description}", table_column=Column(no_wrap=True, min_width=7)),
        MofNCompleteColumn(table_column=kept()),
        TextColumn("jobs · [red]{task.fields[failed]:,} failed[/]", table_column=kept()),
        BarColumn(bar_width=12, table_column=Column()),
        DetailsColumn(table_column=Column()),
        TimeElapsedColumn(table_column=kept()),
        console=console,
        disable=not console.is_terminal,
    )


def _phase(stats: Stats, report: ScanReport) -> str:
    if not report.walk_finished:
        return "walking"
    return "done" if stats.finished == stats.submitted else "hashing"


def print_summary(report: ScanReport, console: Console, *, show_failures: int = 5) -> None:
    """Print the totals as a `rich` table, the last digests, then the first unreadable files.

    The digests (`report.latest`) are printed as `sha256sum` prints them:
    the hex digest, two spaces, the path relative to the root.

    Args:
        report: What `scan_tree` returned.
        console: Where to print.
        show_failures: How many unreadable files to list by name.

    Raises:
        ImportError: `rich` is not installed.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    seconds = report.elapsed
    table = Table(title="asyncpool demo", box=box.SIMPLE, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    # Paths go in as Text so that brackets in them are never read as markup.
    table.add_row("path", Text(str(report.root)))
    if report.excluded:
        names = ", ".join(_relative(str(path), report.root) for path in report.excluded)
        table.add_row("excluded", Text(names))
    table.add_row("event loop", report.loop)
    table.add_row("workers", f"{report.workers}")
    table.add_row("queue size", "unbounded" if report.queue_size == 0 else f"{report.queue_size}")
    table.add_row(
        "jobs", f"{report.jobs:,}: {report.batch_jobs:,} BatchJob, {report.single_jobs:,} SingleJob"
    )
    table.add_row("files", f"{report.files:,}")
    table.add_row("lines", f"{report.lines:,}")
    table.add_row("bytes", f"{report.bytes_read:,} ({report.bytes_read / 2**20:,.1f} MiB)")
    table.add_row("elapsed", f"{seconds:.3f} s")
    table.add_row("jobs/s", f"{report.jobs_per_second:,.0f}")
    table.add_row("MiB/s", f"{report.bytes_read / 2**20 / seconds if seconds > 0 else 0.0:,.1f}")
    table.add_row("unreadable", f"{len(report.failures):,}")
    table.add_row("failed jobs", f"{report.failed_jobs:,}")
    if report.symlinked_dirs:
        table.add_row("not followed", f"{report.symlinked_dirs:,} symlinked directories")
    console.print(table)
    if report.latest:
        console.print(f"SHA-256 of the last {len(report.latest)} files read:", highlight=False)
        for digest in report.latest:
            line = Text(f"  {digest.sha256}  {_relative(digest.path, report.root)}")
            console.print(line, soft_wrap=True)
    if not report.failures:
        return
    console.print(f"Unreadable ({len(report.failures):,}):", highlight=False)
    for failure in report.failures[:show_failures]:
        line = Text(f"  {_relative(failure.path, report.root)}: {failure.reason}")
        console.print(line, soft_wrap=True)
    hidden = len(report.failures) - show_failures
    if hidden > 0:
        console.print(f"  ... and {hidden:,} more", highlight=False)


def _relative(path: str, root: Path) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:  # another drive, on Windows
        return path
