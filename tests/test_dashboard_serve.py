"""`serve_dashboard` under a real uvicorn on the loopback interface, and the `dashboard` command.

The server listens on a free port (port=0); the test learns the URL from
what it prints (an `out` that tells the test when a line arrives), talks
to it with a real HTTP client, and stops it by cancelling it. The command
is run in process on an in-memory broker and stopped with SIGTERM, sent by
the thread that checked the page, once it has.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator

import httpx
import pytest

from asyncpool import Dispatcher
from asyncpool._dashboard_cli import main
from asyncpool._joblog import JobLog
from asyncpool.dashboard import serve_dashboard
from tests._jobs import guarded
from tests.test_dashboard_sources import LanesBroker

PROG = "python -m asyncpool dashboard"
BROKER = LanesBroker()
"""The broker the command line names (tests.test_dashboard_serve:BROKER)."""


class Lines(io.StringIO):
    """A text stream that sets `written` at each write."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.written.set()
        return super().write(text)


@pytest.fixture
async def dispatcher() -> AsyncIterator[Dispatcher]:
    """A running dispatcher with a JobLog."""
    async with Dispatcher(workers=1, instruments=[JobLog()]) as running:
        yield running


@pytest.fixture(autouse=True)
def _keep_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_broker puts the current directory on sys.path; undo it after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))


async def test_serve_dashboard_prints_the_url_serves_loopback_and_stops_when_cancelled(
    dispatcher: Dispatcher,
) -> None:
    """Listening on 127.0.0.1, the printed URL signs in; other host names get 400; cancel stops."""
    out = Lines()
    serving = asyncio.create_task(serve_dashboard(dispatcher, port=0, out=out))
    await guarded(out.written.wait())
    found = re.fullmatch(
        r"asyncpool dashboard: (http://127\.0\.0\.1:(\d+)/)\?token=(\S+)\n", out.getvalue()
    )
    assert found is not None, out.getvalue()
    base, port, token = found.group(1), int(found.group(2)), found.group(3)
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        signed = await client.get(f"/?token={token}", follow_redirects=True)
        rebinding = await client.get("/", headers={"Host": f"evil.example:{port}"})
    assert signed.status_code == 200
    assert 'data-testid="signed-in"' in signed.text
    assert rebinding.status_code == 400
    serving.cancel()
    await guarded(asyncio.wait([serving]))
    assert serving.cancelled()
    with socket.socket() as again:  # the port is free again
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


async def test_serve_dashboard_on_a_port_in_use_raises_oserror(dispatcher: Dispatcher) -> None:
    """A port another socket listens on: OSError at once, nothing printed."""
    out = Lines()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            await guarded(serve_dashboard(dispatcher, port=taken.getsockname()[1], out=out))
    assert out.getvalue() == ""


def one_error_line(err: str) -> str:
    """The single error line of the command, with no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{PROG}: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["json:dumps"], "json:dumps is a function, not an asyncpool broker"),
        (["no_such_module_for_asyncpool:broker"], "cannot import 'no_such_module_for_asyncpool'"),
        (["json"], "expected MODULE:BROKER"),
        (["json:dumps", "--port", "70000"], "--port must be from 0 to 65535, got 70000"),
        (["json:dumps", "--token", "short"], "--token: token must be at least 8 characters"),
    ],
)
def test_dashboard_command_bad_input_exits_2(argv: list[str], message: str) -> None:
    """Bad input: exit status 2, one line on stderr saying what is wrong."""
    out, err = io.StringIO(), io.StringIO()
    assert main(argv, out, err) == 2
    assert message in one_error_line(err.getvalue())
    assert out.getvalue() == ""


def test_dashboard_command_with_an_unreachable_broker_exits_1() -> None:
    """A broker whose server does not answer: exit status 1, one line naming the error."""
    out, err = io.StringIO(), io.StringIO()
    assert main(["tests.test_worker_cli:UNREACHABLE", "--port", "0"], out, err) == 1
    line = one_error_line(err.getvalue())
    assert "cannot open <" in line
    assert line.endswith("ConnectionError: no servers available for connection")


class Visitor(io.StringIO):
    """The command's stdout: on the URL line, a thread opens it, then sends SIGTERM."""

    def __init__(self) -> None:
        super().__init__()
        self.status: int | None = None
        self.page = ""
        self.thread: threading.Thread | None = None

    def write(self, text: str) -> int:
        found = re.search(r"(http://\S+)", text)
        if found is not None and self.thread is None:
            self.thread = threading.Thread(target=self.visit, args=(found.group(1),))
            self.thread.start()
        return super().write(text)

    def visit(self, url: str) -> None:
        try:
            response = httpx.get(url, follow_redirects=True, timeout=10)
            self.status, self.page = response.status_code, response.text
        finally:
            os.kill(os.getpid(), signal.SIGTERM)


def test_dashboard_command_serves_until_sigterm() -> None:
    """The command opens the broker, prints the URL, serves it, and exits 0 on SIGTERM."""
    out, err = Visitor(), io.StringIO()
    opened, shut = BROKER.opened, BROKER.shut
    status = main(
        ["tests.test_dashboard_serve:BROKER", "--port", "0", "--token", "a-long-token"], out, err
    )
    assert out.thread is not None
    out.thread.join(10)
    assert status == 0, err.getvalue()
    assert re.fullmatch(
        r"asyncpool dashboard: http://127\.0\.0\.1:\d+/\?token=a-long-token\n", out.getvalue()
    )
    assert out.status == 200
    assert 'data-testid="lane-row"' in out.page
    assert (BROKER.opened, BROKER.shut) == (opened + 1, shut + 1)


@pytest.mark.parametrize("dependency", ["starlette", "jinja2", "uvicorn"])
def test_dashboard_import_without_its_extra_names_the_extra(dependency: str) -> None:
    """Without starlette, jinja2 or uvicorn, importing asyncpool.dashboard names the extra."""
    # None in sys.modules makes `import <dependency>` fail as if it were not installed.
    program = f"""
import sys
sys.modules[{dependency!r}] = None
try:
    import asyncpool.dashboard
except ModuleNotFoundError as exc:
    print(exc.name)
    print(type(exc.__cause__).__name__)
    print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    name, cause, message = done.stdout.splitlines()
    assert (name, cause) == (dependency, "ModuleNotFoundError")
    assert "pip install 'asyncpool-dispatch[dashboard]'" in message
