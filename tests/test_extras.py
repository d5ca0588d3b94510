"""The optional extras: the README names them all; an integration without its extra names it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _extras() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(pyproject["project"]["optional-dependencies"])


# Regression (issue 16): the README's list of extras left out fastapi, aiohttp and bench.
def test_readme_lists_every_extra() -> None:
    """Each extra of pyproject.toml is named in the README's list of extras."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"\bExtras: (.+?)\.\s", readme, re.DOTALL)
    assert match is not None, "no 'Extras: ...' sentence in README.md"
    listed = set(re.findall(r"`([a-z-]+)`", match.group(1)))
    assert set(_extras()) <= listed


# Regression (issue 16): without its dependency, an integration's import did not name the extra.
@pytest.mark.parametrize(
    ("integration", "dependency", "extra"),
    [
        ("fastapi", "fastapi", "fastapi"),
        ("fastapi", "starlette", "fastapi"),
        ("aiohttp", "aiohttp", "aiohttp"),
        ("metrics", "prometheus_client", "metrics"),
        ("tracing", "opentelemetry", "otel"),
        ("dashboard", "starlette", "dashboard"),
        ("dashboard", "jinja2", "dashboard"),
        ("dashboard", "uvicorn", "dashboard"),
    ],
)
def test_integration_import_without_its_extra_names_the_extra(
    integration: str, dependency: str, extra: str
) -> None:
    """A missing dependency is a ModuleNotFoundError naming the extra, chained from the original."""
    # None in sys.modules makes `import <dependency>` raise ModuleNotFoundError,
    # as if it were not installed; a fresh interpreter has imported neither yet.
    program = f"""
import sys
sys.modules[{dependency!r}] = None
try:
    import asyncpool.{integration}
except ModuleNotFoundError as exc:
    cause = exc.__cause__
    print(exc.name)
    print(type(cause).__name__, getattr(cause, "name", None))
    print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    name, cause, message = done.stdout.splitlines()
    assert name == dependency
    # The cause names what was imported: the package or one of its modules.
    kind, _, missing = cause.partition(" ")
    assert kind == "ModuleNotFoundError"
    assert missing.partition(".")[0] == dependency
    assert f"pip install 'asyncpool-dispatch[{extra}]'" in message
