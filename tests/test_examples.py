"""The examples under examples/ run and give the right answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from examples import batch

ROOT = Path(__file__).resolve().parent.parent


async def test_examples_batch_sums_every_item_once() -> None:
    """The seed's batches: full batches and left-over singles cover every item exactly once."""
    total, batches, singles = await batch.run(items=1000, batch_size=64, workers=3)
    assert total == sum(i * i for i in range(1000))
    assert (batches, singles) == (15, 40)


@pytest.mark.slow
def test_examples_batch_command_line() -> None:
    """`python examples/batch.py` prints the sum; a bad --workers is a one-line error, exit 2."""
    ok = subprocess.run(
        [sys.executable, "examples/batch.py", "--items", "100", "--batch-size", "30"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "3 batch jobs and 10 single jobs: sum of squares = 328350"
    bad = subprocess.run(
        [sys.executable, "examples/batch.py", "--workers", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "batch.py: error: workers must be >= 1, got 0"
