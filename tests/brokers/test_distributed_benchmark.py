"""The distributed benchmark's harness runs end to end on the real server (tiny N).

The numbers are measured by `make bench-distributed`, never in a test; this
only keeps `benchmarks/distributed.py` working: its worker processes start,
every job is counted, the streams of the run are deleted, and the saved
results render.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "distributed.py"


@pytest.mark.timeout(120)
def test_distributed_benchmark_runs_asyncpool_and_the_raw_floor(
    nats_url: str, tmp_path: Path
) -> None:
    """A one-round run of asyncpool and the raw floor gives numbers for every row it promised."""
    saved = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            *("--only", "asyncpool,raw", "--procs", "1", "--no-recovery"),
            *("--jobs", "200", "--samples", "10", "--repeat", "1"),
            *("--nats", nats_url, "--json", str(saved)),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(saved.read_text(encoding="utf-8"))
    assert results["jobs"] == 200
    for system in ("asyncpool", "raw"):
        rows = results["rows"][system]
        assert set(rows) == {"1/add/results", "1/add/fire-and-forget", "1/latency"}
        assert all(rows[row] for row in rows), rows
    assert "ap/raw" in done.stdout

    rendered = subprocess.run(
        [sys.executable, str(SCRIPT), "--render-only", str(saved)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert "ap/raw" in rendered.stdout
