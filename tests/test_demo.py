"""The demo (`python -m asyncpool demo`): exact totals, failures reported, one-line CLI errors."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from asyncpool import Job, Stats
from asyncpool.__main__ import main
from asyncpool._demo import (
    BatchJob,
    BatchPolicy,
    DemoUsageError,
    FileDigest,
    FileFailure,
    ScanReport,
    SingleJob,
    _make_progress,
    print_summary,
    run_with_progress,
    scan_file,
    scan_tree,
)

BIG_FILE_LINES = 3000
BIG_FILE = b"x" * 99 + b"\n"  # one 100-byte line; 3000 of them exceed the 256 KiB threshold

# The small files of the test tree: relative path -> (contents, lines).
SMALL_FILES: dict[str, tuple[bytes, int]] = {
    "a.txt": (b"one\ntwo\nthree\n", 3),
    "b.py": (b"print('hi')\n\n", 2),
    "empty": (b"", 0),
    "sub/c.txt": (b"no newline at the end", 1),
    "sub/deeper/d.bin": (bytes(range(256)) * 4, 5),  # four b"\n" and an unterminated tail
}
SMALL_BYTES = sum(len(data) for data, _ in SMALL_FILES.values())
SMALL_LINES = sum(lines for _, lines in SMALL_FILES.values())
BROKEN_LINK = "sub/broken-link"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A tree with small files, one big file, and a broken symlink (unreadable, even for root)."""
    root = tmp_path / "tree"
    for name, (data, _) in SMALL_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "big.log").write_bytes(BIG_FILE * BIG_FILE_LINES)
    (root / BROKEN_LINK).symlink_to(root / "no-such-target")
    return root


def _run_cli(*args: str, command: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    # Plain, wide output whatever the environment asks for, so rows parse.
    env = {key: value for key, value in os.environ.items() if key != "FORCE_COLOR"}
    env.update(NO_COLOR="1", COLUMNS="200", PYTHONUTF8="1")
    return subprocess.run(
        [*(command or (sys.executable, "-m", "asyncpool", "demo")), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def _render_summary(report: ScanReport) -> str:
    output = io.StringIO()
    print_summary(report, Console(file=output, width=200, color_system=None))
    return output.getvalue()


# A live display redraws its line after a carriage return; the control
# sequences (cursor hiding, line erasing) carry no text.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _last_frame(output: str) -> str:
    """The text of the last frame a one-line live display drew: what stays on screen."""
    return _CONTROL.sub("", output).split("\r")[-1].rstrip("\n")


def _summary_value(output: str, label: str) -> str:
    match = re.search(rf"^\s*{re.escape(label)}\s+(.+?)\s*$", output, re.MULTILINE)
    assert match is not None, f"no {label!r} row in:\n{output}"
    return match.group(1)


# ------------------------------------------------------------------ scan_file


@pytest.mark.parametrize(
    ("data", "lines"),
    [(b"", 0), (b"\n", 1), (b"a", 1), (b"a\nb", 2), (b"a\nb\n", 2), (b"\n\n\n", 3)],
)
def test_scan_file_counts_lines(tmp_path: Path, data: bytes, lines: int) -> None:
    """Lines are newlines plus one for an unterminated last line; size and digest are exact."""
    path = tmp_path / "file"
    path.write_bytes(data)
    assert scan_file(str(path)) == FileDigest(
        str(path), len(data), lines, hashlib.sha256(data).hexdigest()
    )


def test_scan_file_reports_broken_symlink(tmp_path: Path) -> None:
    """A broken symlink is a FileFailure saying so, not an exception."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "missing")
    result = scan_file(str(link))
    assert isinstance(result, FileFailure)
    assert "broken symlink" in result.reason


def test_scan_file_refuses_directory(tmp_path: Path) -> None:
    """A directory given as a file is a FileFailure, not an exception."""
    result = scan_file(str(tmp_path))
    assert isinstance(result, FileFailure)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_scan_file_reports_fifo_without_blocking(tmp_path: Path) -> None:
    """A FIFO with no writer is reported as not a regular file instead of blocking the read."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = scan_file(str(fifo))
    assert result == FileFailure(str(fifo), "not a regular file: it is a FIFO")


def test_jobs_implement_job_protocol() -> None:
    """Both job types are asyncpool Jobs by shape alone, and read their files on process()."""
    assert isinstance(BatchJob(()), Job)
    assert isinstance(SingleJob("x"), Job)
    assert BatchJob(()).process() == []


# ------------------------------------------------------------------ scan_tree


async def test_scan_tree_totals_are_exact(tree: Path) -> None:
    """Files, lines and bytes add up exactly; the big file gets a SingleJob, the rest one batch."""
    report = await scan_tree(tree)
    assert report.files == len(SMALL_FILES) + 1
    assert report.lines == SMALL_LINES + BIG_FILE_LINES
    assert report.bytes_read == SMALL_BYTES + len(BIG_FILE) * BIG_FILE_LINES
    assert (report.batch_jobs, report.single_jobs, report.failed_jobs) == (1, 1, 0)
    assert report.walk_finished
    assert report.elapsed > 0


async def test_scan_tree_digests_match_hashlib(tree: Path) -> None:
    """Every kept record's SHA-256, size and line count match the file on disk."""
    report = await scan_tree(tree, keep_records=True)
    assert report.records is not None
    by_path = {Path(record.path): record for record in report.records}
    expected = {tree / name: (data, lines) for name, (data, lines) in SMALL_FILES.items()}
    expected[tree / "big.log"] = (BIG_FILE * BIG_FILE_LINES, BIG_FILE_LINES)
    assert set(by_path) == set(expected)
    for path, (data, lines) in expected.items():
        record = by_path[path]
        assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (record.size, record.lines) == (len(data), lines)


async def test_scan_tree_reports_unreadable_file(tree: Path) -> None:
    """The broken symlink is listed as a failure and counted nowhere else; the scan goes on."""
    report = await scan_tree(tree)
    assert [failure.path for failure in report.failures] == [str(tree / BROKEN_LINK)]
    assert "broken symlink" in report.failures[0].reason


@pytest.mark.parametrize("batch_files", [1, 2, 64])
@pytest.mark.parametrize(("workers", "queue_size"), [(1, 1), (3, 0), (8, 1024)])
async def test_scan_tree_totals_do_not_depend_on_batching(
    tree: Path, batch_files: int, workers: int, queue_size: int
) -> None:
    """Whatever the batch size, pool size and queue bound, nothing is lost or counted twice."""
    report = await scan_tree(
        tree,
        workers=workers,
        queue_size=queue_size,
        policy=BatchPolicy(batch_files=batch_files),
    )
    small_entries = len(SMALL_FILES) + 1  # the broken link is batched too
    assert report.batch_jobs == -(-small_entries // batch_files)
    assert report.single_jobs == 1
    assert report.files == len(SMALL_FILES) + 1
    assert report.lines == SMALL_LINES + BIG_FILE_LINES
    assert len(report.failures) == 1


async def test_scan_tree_progress_stats_add_up(tree: Path) -> None:
    """Every progress snapshot is consistent, and the last one has every job finished."""
    snapshots: list[Stats] = []

    def on_progress(stats: Stats, report: ScanReport) -> None:
        assert stats.submitted == stats.queued + stats.busy + stats.finished
        snapshots.append(stats)

    report = await scan_tree(tree, policy=BatchPolicy(batch_files=1), on_progress=on_progress)
    last = snapshots[-1]
    assert (last.submitted, last.succeeded, last.failed) == (report.jobs, report.jobs, 0)


async def test_scan_tree_skips_excluded_and_symlinked_directories(tree: Path) -> None:
    """Excluded directories are not walked, and a symlink loop is counted, not followed."""
    (tree / "sub" / "loop").symlink_to(tree, target_is_directory=True)
    report = await scan_tree(tree, exclude=[tree / "sub" / "deeper"])
    assert report.files == len(SMALL_FILES)  # all but d.bin, plus big.log
    assert report.symlinked_dirs == 1


async def test_scan_tree_reports_failed_job(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job that raises counts as a failed job and its files as failures; the scan finishes."""

    def broken(self: BatchJob) -> list[FileDigest | FileFailure]:
        raise RuntimeError("boom")

    monkeypatch.setattr(BatchJob, "process", broken)
    report = await scan_tree(tree)
    assert (report.failed_jobs, report.files) == (1, 1)  # only the big file's SingleJob ran
    assert len(report.failures) == len(SMALL_FILES) + 1
    assert all("RuntimeError: boom" in failure.reason for failure in report.failures)


async def test_scan_tree_rejects_bad_input(tmp_path: Path) -> None:
    """A missing root, a file as root, and a refused pool size raise DemoUsageError."""
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(DemoUsageError, match="no such directory"):
        await scan_tree(tmp_path / "missing")
    with pytest.raises(DemoUsageError, match="not a directory"):
        await scan_tree(tmp_path / "file")
    with pytest.raises(DemoUsageError, match="workers"):
        await scan_tree(tmp_path, workers=0)


# --------------------------------------------------------------- the display


# Regression (issue 16): at 80 columns the live line shrank to "… jobs done", counts and time gone.
@pytest.mark.parametrize("width", [60, 80])
async def test_run_with_progress_keeps_counts_and_elapsed_when_narrow(
    tree: Path, width: int
) -> None:
    """On a narrow terminal the live line still shows jobs done of submitted, failures and time."""
    output = io.StringIO()
    console = Console(file=output, width=width, force_terminal=True, color_system=None)
    report = await run_with_progress(tree, console=console)
    frame = _last_frame(output.getvalue())
    assert len(frame) <= width, frame
    assert f"{report.jobs}/{report.jobs} jobs" in frame, frame
    assert "0 failed" in frame, frame
    assert re.search(r"\b0:00:\d\d\b", frame), frame


# Regression (issue 16): the live line's counts and time gave way first on a narrow terminal.
def test_live_line_keeps_counts_of_a_large_scan_at_60_columns() -> None:
    """With five-digit counts at 60 columns the line is one line with counts, failures and time."""
    output = io.StringIO()
    console = Console(file=output, width=60, force_terminal=True, color_system=None)
    progress = _make_progress(console)
    progress.add_task(
        "hashing", total=56789, completed=12345, failed=3, queued=1024, rate=1234.5, unreadable=7
    )
    console.print(progress.get_renderable())
    line = output.getvalue()
    assert line.count("\n") == 1
    assert len(line.rstrip("\n")) <= 60
    assert re.match(r"^\S hashing 12345/56789 jobs · 3 failed .* 0:00:\d\d$", line.rstrip("\n"))


# Regression (issue 16): the demo promised SHA-256 digests and never showed one.
async def test_print_summary_shows_sha256_digests(tree: Path) -> None:
    """The summary lists digests of the last files read, as sha256sum prints them, all correct."""
    report = await scan_tree(tree)
    shown = re.findall(r"^\s*([0-9a-f]{64})  (.+?)\s*$", _render_summary(report), re.MULTILINE)
    assert len(shown) == 5
    assert len({name for _, name in shown}) == 5
    for digest, name in shown:
        assert digest == hashlib.sha256((tree / name).read_bytes()).hexdigest()


# Regression (issue 16): `--queue-size 0` was shown as "queue size 0", though 0 means no bound.
@pytest.mark.parametrize(("queue_size", "shown"), [(0, "unbounded"), (16, "16")])
async def test_print_summary_names_unbounded_queue(tree: Path, queue_size: int, shown: str) -> None:
    """A queue size of 0 is shown as "unbounded", any other as its number."""
    report = await scan_tree(tree, queue_size=queue_size)
    assert _summary_value(_render_summary(report), "queue size") == shown


# ------------------------------------------------------------------- the CLI


def test_cli_demo_prints_summary(tree: Path) -> None:
    """`python -m asyncpool demo --path` exits 0 and prints exact totals and the unreadable file."""
    result = _run_cli("--path", str(tree))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert _summary_value(out, "files") == f"{len(SMALL_FILES) + 1}"
    assert _summary_value(out, "lines") == f"{SMALL_LINES + BIG_FILE_LINES:,}"
    assert _summary_value(out, "bytes").startswith(
        f"{SMALL_BYTES + len(BIG_FILE) * BIG_FILE_LINES:,} "
    )
    assert _summary_value(out, "jobs") == "2: 1 BatchJob, 1 SingleJob"
    assert _summary_value(out, "unreadable") == "1"
    assert _summary_value(out, "failed jobs") == "0"
    assert re.search(r"^\s*elapsed\s+\d+\.\d+ s\s*$", out, re.MULTILINE)
    assert re.search(r"^\s*jobs/s\s+[\d,]+\s*$", out, re.MULTILINE)
    assert f"{Path(BROKEN_LINK)}: broken symlink" in out
    assert result.stderr == ""


def test_cli_demo_runs_on_uvloop(tree: Path) -> None:
    """`--loop uvloop` runs the scan on uvloop's loop with the same totals."""
    pytest.importorskip("uvloop")
    result = _run_cli("--path", str(tree), "--loop", "uvloop")
    assert result.returncode == 0, result.stderr
    assert _summary_value(result.stdout, "event loop") == "uvloop.Loop"
    assert _summary_value(result.stdout, "files") == f"{len(SMALL_FILES) + 1}"


def test_cli_console_script_runs_demo(tree: Path) -> None:
    """The `asyncpool-demo` script runs the demo with no command word to type."""
    script = Path(sys.executable).with_name("asyncpool-demo")
    if not script.exists():
        pytest.skip("the asyncpool-demo script is not installed next to this interpreter")
    result = _run_cli("--path", str(tree), "--workers", "2", command=(str(script),))
    assert result.returncode == 0, result.stderr
    assert _summary_value(result.stdout, "files") == f"{len(SMALL_FILES) + 1}"
    assert _summary_value(result.stdout, "workers") == "2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--path", "/nonexistent/demo"], "/nonexistent/demo: no such directory"),
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--queue-size", "-1"], "--queue-size must be >= 0, got -1"),
    ],
)
def test_cli_demo_bad_input_exits_2(tree: Path, args: list[str], message: str) -> None:
    """Bad input is exit status 2 and one line on stderr, never a traceback."""
    if args[0] != "--path":
        args = ["--path", str(tree), *args]
    result = _run_cli(*args)
    assert result.returncode == 2
    assert result.stderr == f"python -m asyncpool demo: error: {message}\n"
    assert "Traceback" not in result.stdout + result.stderr


# Regression (issue 16): a bad `--queue-size` was reported as `queue_size`, the API's name.
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--workers", "0", "--workers must be >= 1, got 0"),
        ("--workers", "-3", "--workers must be >= 1, got -3"),
        ("--queue-size", "-1", "--queue-size must be >= 0, got -1"),
    ],
)
def test_cli_demo_bad_number_names_the_flag(
    tree: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    """A refused --workers or --queue-size is reported under the flag's own name, exit status 2."""
    assert main(["demo", "--path", str(tree), flag, value]) == 2
    assert capsys.readouterr().err == f"python -m asyncpool demo: error: {message}\n"


def test_cli_demo_file_as_path_exits_2(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A `--path` that is a file is exit status 2 with a one-line message."""
    assert main(["demo", "--path", str(tree / "a.txt")]) == 2
    err = capsys.readouterr().err
    assert err == f"python -m asyncpool demo: error: {tree / 'a.txt'}: not a directory\n"


@pytest.mark.parametrize(
    ("module", "extra"), [("rich", "demo"), ("uvloop", "uvloop")], ids=["rich", "uvloop"]
)
def test_cli_demo_missing_dependency_exits_2(
    tree: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    module: str,
    extra: str,
) -> None:
    """Without rich (or uvloop, when asked for), the demo names the extra to install and exits 2."""
    # None in sys.modules makes an import raise ImportError; submodules that
    # earlier tests imported must go too, or `from rich.console import ...` works.
    for name in [name for name in sys.modules if name.partition(".")[0] == module]:
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["demo", "--path", str(tree), "--loop", "uvloop"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"pip install 'asyncpool-dispatch[{extra}]'" in err
