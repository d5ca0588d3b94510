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
    assert bad.stderr.strip() == "batch.py: error: --workers must be >= 1, got 0"


# Regression (issue 16): --workers 0 was refused with the API's message, not the flag's.
def test_examples_batch_names_its_flag_on_bad_workers(capsys: pytest.CaptureFixture[str]) -> None:
    """`--workers 0` is refused by the command line, naming the flag."""
    assert batch.main(["--workers", "0"]) == 2
    assert capsys.readouterr().err == "batch.py: error: --workers must be >= 1, got 0\n"
