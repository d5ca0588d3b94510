"""The documentation's examples run: every ```python block of the pages that hold programs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(page: str) -> list[tuple[str, str]]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return [(f"{page}#{n}", code) for n, code in enumerate(_BLOCK.findall(text), 1)]


PAGES = (
    "index.md",
    "tutorial.md",
    "howto/sync-and-threads.md",
    "howto/timeouts-and-retries.md",
    "howto/ordering.md",
    "howto/streaming.md",
    "howto/capacity.md",
    "howto/shutdown.md",
    "howto/observing.md",
    "howto/uvloop.md",
    "howto/migrating.md",
)
EXAMPLES = [example for page in PAGES for example in _blocks(page)]


def test_docs_have_examples() -> None:
    """The pages this module runs do contain examples (the regex still matches)."""
    assert len(EXAMPLES) >= 5


@pytest.mark.slow
@pytest.mark.parametrize(("where", "code"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_docs_example_runs(where: str, code: str, tmp_path: Path) -> None:
    """Each example is a whole program: it runs without error or warning and prints something."""
    # A file, not `python -c`: process-pool examples need an importable __main__.
    program = tmp_path / "example.py"
    program.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-W", "error", str(program)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=DOCS.parent,
    )
    assert done.returncode == 0, f"{where} failed:\n{done.stderr}"
    assert done.stdout.strip(), f"{where} printed nothing"
