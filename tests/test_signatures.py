"""asyncpool._signatures: the typed overloads are generated, and the file is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncpool

ROOT = Path(__file__).resolve().parent.parent


def test_signatures_file_is_what_the_generator_writes() -> None:
    """asyncpool/_signatures.py matches tools/generate_signatures.py's output (no hand edits)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_signatures.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr or done.stdout


def test_signatures_submit_and_submit_nowait_share_one_template() -> None:
    """submit and submit_nowait have the same overloads; only the return type differs."""
    text = (ROOT / "asyncpool" / "_signatures.py").read_text()
    submit = text.split("class SubmitSignature")[1].split("class SubmitNowaitSignature")[0]
    nowait = text.split("class SubmitNowaitSignature")[1].split("class MapSignature")[0]
    normalized = submit.replace("Coroutine[Any, Any, JobHandle[T]]", "JobHandle[T]")
    assert normalized.split('"""')[2] == nowait.split('"""')[2]
    assert submit.count("@overload") == 13


def test_signatures_public_methods_keep_their_names() -> None:
    """The implementations carry the public names (tracebacks and call errors say `submit`)."""
    methods = vars(asyncpool.Dispatcher)
    for name in ("submit", "submit_nowait", "map"):
        assert methods[name].__name__ == name
        assert methods[name].__qualname__ == f"Dispatcher.{name}"
        assert methods[name].__code__.co_qualname == f"Dispatcher.{name}"
    assert methods["submit"].__doc__.startswith("Queue a job")
