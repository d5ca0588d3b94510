"""What only the JetStream broker does, on real servers (machine 2.9 and bundled).

The contract every engine keeps is in test_conformance.py (and, with worker
processes, test_chaos.py); here is what is JetStream's own: the lease kept
on the server by its consumers, and a server that is not there or goes away
(the broker's connect, close and log lines, and what `python -m asyncpool
worker` and `dead-letters` do about it). Producer and worker share the
process (_harness.py) where a test serves jobs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from asyncpool.jetstream import JetStreamBroker

from ._harness import Gate, register, serving
from ._servers import (
    ENV_ACK_WAIT,
    ENV_ENGINE,
    ENV_NAME,
    ENV_RECORDS,
    ENV_URL,
    ROOT,
    WORKER_TARGET,
    WorkerFleet,
    WorkerProcess,
    free_port,
    read_records,
    runs_by_id,
    wait_for_records,
)
from .chaos_tasks import ChaosApp
from .conftest import PrivateNats

pytestmark = pytest.mark.timeout(30)


def make_broker(url: str, name: str, **options: Any) -> JetStreamBroker:
    return JetStreamBroker(url, name=name, ack_wait=options.pop("ack_wait", 5), **options)


# Regression: opening a broker re-added its consumers, so the last process to
# connect set everyone's lease; a shorter one expired under live workers.
async def test_the_lease_on_the_server_is_kept_and_extended_for_the_shortest(
    nats_server: str, broker_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A second broker of the same name keeps the server's lease, warns, and extends for it."""
    async with JetStreamBroker(nats_server, name=broker_name, ack_wait=30) as first:
        assert first.transport.lease_period == 10
        assert first._nc is not None
        js = first._nc.jetstream()
        async with JetStreamBroker(nats_server, name=broker_name, ack_wait=3) as shorter:
            consumer = await js.consumer_info(first.stream, f"{broker_name}_normal")
            assert consumer.config.ack_wait == 30
            assert shorter.transport.lease_period == 1
        async with JetStreamBroker(nats_server, name=broker_name, ack_wait=90) as longer:
            # Its jobs' leases run out after the server's 30 s: extended for that.
            assert longer.transport.lease_period == 10
            assert longer.transport.recheck_interval == 0.5
        warnings = [r.getMessage() for r in caplog.records if "keep 30 s" in r.getMessage()]
        assert len(warnings) == 2, warnings
        assert "ack_wait=3 s" in warnings[0]
        assert "ack_wait=90 s" in warnings[1]


# -- a server that is not there, or goes away ------------------------------------


class LogLines(logging.Handler):
    """Every record that reaches the root logger (WARNING and up), and a wake-up for each."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._arrived = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        # The NATS client's callbacks run on the event loop: setting the event is safe.
        self.records.append(record)
        self._arrived.set()

    def count(self, text: str) -> int:
        return sum(text in record.getMessage() for record in self.records)

    async def wait_for(self, text: str, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not self.count(text):
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            seen = [f"{r.name} {r.levelname}: {r.getMessage()}" for r in self.records]
            raise AssertionError(f"no log line with {text!r} within {timeout} s: {seen}") from None


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """The records logged during the test (a handler on the root logger)."""
    handler = LogLines()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


async def test_open_without_a_server_raises_connection_error_after_the_connect_timeout() -> None:
    """Nobody at the address: opening raises ConnectionError once connect_timeout has passed."""
    url = f"nats://127.0.0.1:{free_port()}"
    broker = JetStreamBroker(url, name="nobody", connect_options={"connect_timeout": 1})
    started = time.monotonic()
    # Bounded here, so that the old behaviour (trying for ever) fails this test alone.
    async with asyncio.timeout(10):
        with pytest.raises(ConnectionError) as raised:
            async with broker:
                pass
    assert str(raised.value).startswith(f"cannot connect to NATS at {url} (tried for 1 s): ")
    assert 0.9 <= time.monotonic() - started < 5
    assert repr(broker).startswith("<JetStreamBroker 'nobody' closed")


async def test_lost_and_regained_server_is_one_warning_line_each(
    private_nats: PrivateNats, broker_name: str, log_lines: LogLines
) -> None:
    """A server restart under an open broker: one WARNING when lost, one when back; no traceback."""
    server = private_nats()
    async with make_broker(server.url, broker_name) as broker:
        await asyncio.to_thread(server.stop)
        await log_lines.wait_for("lost its connection to NATS", timeout=10)
        await asyncio.to_thread(server.start)
        await log_lines.wait_for("reconnected to NATS", timeout=15)
        # Connected again: the broker works.
        tasks = register(broker, Gate())
        async with serving(broker):
            assert await (await broker.submit(tasks["add"], 1, 2)) == 3
    assert log_lines.count(f"broker {broker_name!r} lost its connection to NATS") == 1
    assert log_lines.count(f"broker {broker_name!r} reconnected to NATS") == 1
    # nats-py's own default logs every failed attempt with its traceback.
    assert [r.getMessage() for r in log_lines.records if r.exc_info] == []
    assert [r.getMessage() for r in log_lines.records if r.name.startswith("nats")] == []


async def test_connect_options_win_over_the_broker_callbacks(
    private_nats: PrivateNats, broker_name: str, log_lines: LogLines
) -> None:
    """A disconnected_cb in connect_options replaces the broker's (its line is not logged)."""
    server = private_nats()
    lost = asyncio.Event()

    async def disconnected() -> None:
        lost.set()

    broker = make_broker(server.url, broker_name, connect_options={"disconnected_cb": disconnected})
    with pytest.raises(ConnectionError):
        async with broker:
            await asyncio.to_thread(server.stop)
            async with asyncio.timeout(10):
                await lost.wait()
    assert log_lines.count("lost its connection") == 0


async def test_close_with_the_server_gone_raises_connection_error_promptly(
    private_nats: PrivateNats, broker_name: str
) -> None:
    """Closed while its server is away: ConnectionError at once, and nothing keeps reconnecting."""
    server = private_nats()
    lost = asyncio.Event()

    async def disconnected() -> None:
        lost.set()

    broker = make_broker(server.url, broker_name, connect_options={"disconnected_cb": disconnected})
    with pytest.raises(ConnectionError) as raised:
        async with broker:
            await asyncio.to_thread(server.stop)
            async with asyncio.timeout(10):
                await lost.wait()
            closing = time.monotonic()
    assert time.monotonic() - closing < 3
    assert str(raised.value) == (
        f"broker {broker_name!r} closed while its NATS server ({server.url}) was unreachable: "
        "what it sent since the connection was lost (acks, results, jobs handed back) never "
        "reached the server"
    )
    assert repr(broker).startswith(f"<JetStreamBroker {broker_name!r} closed")


async def _wait_for_stderr(worker: WorkerProcess, text: str, timeout: float) -> None:
    """Until the worker's stderr has `text` (bounded polling: it is another process's file)."""
    deadline = time.monotonic() + timeout
    while text not in worker.stderr():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} within {timeout} s: {worker.describe()}")
        await asyncio.sleep(0.02)


WORKER_GRACE = 1.0
STOP_BOUND = 5.0
"""The most an unreachable server may add to the grace of a stopping worker (seconds)."""


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_worker_cli_sigterm_with_its_server_gone_exits_1_within_the_bound(
    private_nats: PrivateNats, broker_name: str, worker_fleet: WorkerFleet, tmp_path: Path
) -> None:
    """SIGTERM, server gone: exit 1 within grace + 5 s, saying its jobs come back (they do)."""
    server = private_nats()
    records = tmp_path / "runs.jsonl"
    env = {ENV_URL: server.url, ENV_NAME: broker_name, ENV_ACK_WAIT: "2", ENV_RECORDS: str(records)}
    gate = tmp_path / "gate"
    worker = worker_fleet.start(env, workers=2, grace=WORKER_GRACE, label="orphaned")
    app = ChaosApp(server.url, broker_name, ack_wait=2.0)
    async with app.broker:
        job_id = (await app.broker.submit(app.hold, str(gate))).id
    await wait_for_records(
        records,
        lambda runs: any(r.ev == "start" and r.id == job_id for r in runs),
        timeout=20,
        what="the gated job running on the worker",
        describe=worker_fleet.describe,
    )
    await asyncio.to_thread(server.stop)
    await _wait_for_stderr(worker, "lost its connection to NATS", timeout=10)
    sent = time.monotonic()
    worker.terminate()
    status = await worker.wait(WORKER_GRACE + STOP_BOUND)
    took = time.monotonic() - sent
    err = worker.stderr()
    assert status == 1, f"exit status {status} {took:.1f} s after SIGTERM:\n{err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert sum("lost its connection to NATS" in line for line in lines) == 1, err
    assert lines[-1].startswith("python -m asyncpool worker: error: the server of <JetStreamBroker")
    assert re.search(
        r"was unreachable as the worker stopped: the jobs this worker held and could not "
        r"settle there are redelivered by the server once their lease runs out$",
        lines[-1],
    ), lines[-1]
    # What the message promises: the server, back, delivers the job again after its lease.
    gate.touch()
    await asyncio.to_thread(server.start)
    worker_fleet.start(env, workers=2, label="after")
    async with app.broker:
        async with asyncio.timeout(30):
            assert await app.broker.handle(job_id) == job_id
    runs = runs_by_id(read_records(records))[job_id]
    assert [(run.pid == worker.pid, run.attempt) for run in runs] == [(True, 1), (False, 2)]


@pytest.mark.slow
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_dead_letters_cli_stream_set_up_otherwise_is_one_line_exit_1(
    nats_url: str, broker_name: str
) -> None:
    """A stream of the broker's name with other subjects: one error line, exit 1, no traceback."""
    nc = await nats.connect(nats_url, connect_timeout=2, allow_reconnect=False)
    try:
        await nc.jetstream().add_stream(name=f"{broker_name}_jobs", subjects=["elsewhere.>"])
    finally:
        await nc.close()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asyncpool",
        "dead-letters",
        WORKER_TARGET,
        cwd=ROOT,
        env={**os.environ, ENV_ENGINE: "jetstream", ENV_URL: nats_url, ENV_NAME: broker_name},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        out, err = await process.communicate()
    assert process.returncode == 1, err.decode()
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1, err.decode()
    assert lines[0].startswith("python -m asyncpool dead-letters: error: cannot open <")
    assert f"a JetStream stream named '{broker_name}_jobs' exists with another setup" in lines[0]
