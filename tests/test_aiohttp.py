"""The aiohttp integration: setup, get_dispatcher, spawn, shutdown, and a real server under SIGTERM.

In-process tests serve an application on 127.0.0.1 with aiohttp's test
server (which turns handler cancellation on), or run its startup and cleanup
with an `AppRunner` that has no site. The `slow` tests start the example
application (`examples/aiohttp_app.py`) as a server process on 127.0.0.1,
load it, stop it with SIGTERM, and account for every job it accepted. Each
runs the server on the same kind of loop as the test itself, so the
conftest's loop parametrization covers asyncio and uvloop on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, assert_type

import aiohttp
import pytest
import uvloop
from aiohttp import test_utils, web

import asyncpool
import asyncpool.aiohttp
from asyncpool.aiohttp import DISPATCHER_KEY, get_dispatcher, setup, spawn
from examples import aiohttp_app
from tests._jobs import Gate

ROOT = Path(__file__).resolve().parent.parent

Client = test_utils.TestClient[web.Request, web.Application]


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[Client]:
    """Serve `app` on 127.0.0.1 (a free port) with a client for it; close both afterwards."""
    client = test_utils.TestClient(test_utils.TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def running(app: web.Application) -> AsyncIterator[web.AppRunner]:
    """Start `app` (startup hooks and cleanup contexts) without any socket; clean up afterwards."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        yield runner
    finally:
        await runner.cleanup()


async def double(n: int, *, extra: int = 0) -> int:
    await asyncio.sleep(0)
    return 2 * n + extra


async def fail() -> None:
    raise ValueError("boom")


def shutdown_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """The (level, message) pairs logged by asyncpool."""
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "asyncpool"]


# ------------------------------------------------------------------ setup()


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"grace": -1}, ValueError, r"grace must be a finite number of seconds >= 0 .*got -1"),
        ({"grace": math.nan}, ValueError, r"grace must be a finite number .*got nan"),
        ({"grace": math.inf}, ValueError, r"grace must be a finite number .*got inf"),
        ({"grace": "5"}, TypeError, r"grace must be a number of seconds or None, got '5'"),
        ({"grace": True}, TypeError, r"grace must be a number of seconds or None, got True"),
        ({"workers": 0}, ValueError, "workers"),
        ({"queue_size": -1}, ValueError, "queue_size"),
        ({"on_error": "log"}, TypeError, "on_error"),
        ({"fail_fast": True}, ValueError, "fail_fast=True"),
        ({"wrokers": 2}, TypeError, "wrokers"),
    ],
    ids=[
        "grace-negative",
        "grace-nan",
        "grace-inf",
        "grace-str",
        "grace-bool",
        "workers-0",
        "queue_size-negative",
        "on_error-not-callable",
        "fail_fast",
        "misspelled-option",
    ],
)
def test_setup_rejects_bad_arguments_by_name(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    """setup() rejects a bad argument at once, naming it, and leaves the application untouched."""
    app = web.Application()
    with pytest.raises(error, match=match):
        setup(app, **options)
    assert DISPATCHER_KEY not in app
    assert len(app.cleanup_ctx) == 0


def test_setup_rejects_what_is_not_an_application() -> None:
    """setup() on anything but a web.Application is a TypeError that says what it got."""
    with pytest.raises(TypeError, match=r"app must be an aiohttp\.web\.Application, got dict"):
        setup({})  # type: ignore[arg-type]


def test_setup_twice_or_too_late_is_an_error() -> None:
    """A second setup(), or one after add_subapp froze the app, is a RuntimeError saying so."""
    app = web.Application()
    setup(app)
    with pytest.raises(RuntimeError, match="already called"):
        setup(app)
    sub = web.Application()
    app.add_subapp("/sub", sub)
    with pytest.raises(RuntimeError, match=r"before it is added as a sub-application"):
        setup(sub)


def test_setup_accepts_no_grace_limit_and_returns_a_new_dispatcher() -> None:
    """setup(grace=None) is valid; it returns app[DISPATCHER_KEY], a dispatcher not started yet."""
    app = web.Application()
    dispatcher = setup(app, grace=None, workers=3, name="web")
    assert app[DISPATCHER_KEY] is dispatcher
    assert (dispatcher.workers, dispatcher.name, dispatcher.running) == (3, "web", False)


@pytest.mark.slow
def test_import_asyncpool_does_not_import_aiohttp() -> None:
    """`import asyncpool` loads neither aiohttp nor asyncpool.aiohttp: the integration is opt-in."""
    code = (
        "import sys, asyncpool; print(sorted({'aiohttp', 'asyncpool.aiohttp'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


# ----------------------------------------------- get_dispatcher() and spawn()


async def test_get_dispatcher_returns_the_running_dispatcher_in_handlers() -> None:
    """In a handler, get_dispatcher() is setup()'s dispatcher, running; spawn() submits to it."""
    app = web.Application()
    dispatcher = setup(app, workers=2)
    seen: list[asyncpool.Dispatcher] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(get_dispatcher(request))
        assert get_dispatcher(request).running
        by_function = await spawn(request, double, 20, extra=2)
        by_coroutine = await spawn(request, double(1))
        ready = Gate(value=7)
        ready.release()
        by_job = await spawn(request, ready)
        # spawn() infers the result type as submit() does.
        assert_type(by_function, asyncpool.JobHandle[int])
        assert_type(by_coroutine, asyncpool.JobHandle[int])
        assert_type(by_job, asyncpool.JobHandle[object])
        results = [await by_function, await by_coroutine, await by_job]
        return web.json_response(results)

    app.router.add_get("/", handler)
    async with serving(app) as client:
        response = await client.get("/")
        assert response.status == 200
        assert await response.json() == [42, 2, 7]
    assert seen == [dispatcher]
    assert dispatcher.closed


async def test_get_dispatcher_in_a_subapp_finds_the_nearest_setup() -> None:
    """A sub-app's handlers get the dispatcher of the nearest app (self or parent) with setup()."""
    root = web.Application()
    root_dispatcher = setup(root)
    plain = web.Application()  # no setup: its handlers use the root's dispatcher
    nested = web.Application()  # a sub-application of `plain`
    own = web.Application()
    own_dispatcher = setup(own)
    seen: dict[str, asyncpool.Dispatcher] = {}

    async def handler(request: web.Request) -> web.Response:
        dispatcher = get_dispatcher(request)
        seen[request.path] = dispatcher
        handle = await spawn(request, double, 1)
        assert handle.dispatcher is dispatcher
        return web.Response(text=str(await handle))

    for app in (root, plain, nested, own):
        app.router.add_get("/where", handler)
    plain.add_subapp("/nested", nested)
    root.add_subapp("/plain", plain)
    root.add_subapp("/own", own)
    async with serving(root) as client:
        for path in ("/where", "/plain/where", "/plain/nested/where", "/own/where"):
            response = await client.get(path)
            assert (response.status, await response.text()) == (200, "2")
    assert seen == {
        "/where": root_dispatcher,
        "/plain/where": root_dispatcher,
        "/plain/nested/where": root_dispatcher,
        "/own/where": own_dispatcher,
    }
    assert root_dispatcher.closed
    assert own_dispatcher.closed


async def test_get_dispatcher_without_setup_names_the_fix() -> None:
    """Without setup(), get_dispatcher() and spawn() raise RuntimeError: call setup(app)."""
    app = web.Application()
    fix = r"call asyncpool\.aiohttp\.setup\(app\)"
    refused: list[asyncpool.JobHandle[int]] = []

    async def handler(request: web.Request) -> web.Response:
        with pytest.raises(RuntimeError, match=fix):
            get_dispatcher(request)
        with pytest.raises(RuntimeError, match=fix):
            refused.append(await spawn(request, double, 1))
        coroutine = double(1)
        with pytest.raises(RuntimeError, match=fix):
            await spawn(request, coroutine)
        # Refused, so it is closed: no "never awaited" warning later.
        assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
        return web.Response(text="checked")

    app.router.add_get("/", handler)
    async with serving(app) as client:
        response = await client.get("/")
        assert (response.status, await response.text()) == (200, "checked")
    assert refused == []


def test_get_dispatcher_rejects_what_is_not_a_request() -> None:
    """get_dispatcher(app) is a TypeError: outside a request, app[DISPATCHER_KEY] is the way."""
    app = web.Application()
    setup(app)
    with pytest.raises(
        TypeError, match=r"request must be an aiohttp\.web\.Request, got Application"
    ):
        get_dispatcher(app)  # type: ignore[arg-type]


async def test_dispatcher_runs_for_startup_hooks() -> None:
    """The dispatcher is running when the application's on_startup hooks run, so they can submit."""
    app = web.Application()
    dispatcher = setup(app)
    results: list[int] = []

    async def warm_up(app: web.Application) -> None:
        handle = await app[DISPATCHER_KEY].submit(double, 5)
        results.append(await handle)

    app.on_startup.append(warm_up)
    async with running(app):
        assert dispatcher.running
    assert results == [10]
    assert dispatcher.closed


# ---------------------------------------------------------------- shutdown


def before_close(app: web.Application) -> asyncio.Event:
    """An event set by the application's cleanup right before the dispatcher is closed.

    Cleanup contexts exit in reverse order, so one added after setup() exits
    just before the dispatcher's; the dispatcher's close() follows in the same
    task, without a turn of the event loop in between.
    """
    event = asyncio.Event()

    async def signal_before_close(app: web.Application) -> AsyncIterator[None]:
        yield
        event.set()

    app.cleanup_ctx.append(signal_before_close)
    return event


async def test_cleanup_drains_queued_and_running_jobs(caplog: pytest.LogCaptureFixture) -> None:
    """Cleanup lets queued and running jobs finish within the grace period, and says so."""
    caplog.set_level(logging.INFO, logger="asyncpool")
    app = web.Application()
    dispatcher = setup(app, workers=2, grace=60, name="drain")
    closing_next = before_close(app)
    gates = [Gate(value=n) for n in range(5)]
    async with running(app) as runner:
        handles = [await dispatcher.submit(gate) for gate in gates]
        await gates[0].started.wait()
        await gates[1].started.wait()
        cleanup = asyncio.create_task(runner.cleanup())
        await closing_next.wait()
        assert not dispatcher.running  # close() has begun: it stopped accepting
        with pytest.raises(asyncpool.DispatcherClosed, match="closing"):
            await dispatcher.submit(double, 1)
        assert not any(handle.done() for handle in handles)
        for gate in gates:
            gate.release()
        await cleanup
    assert [handle.result() for handle in handles] == [0, 1, 2, 3, 4]
    assert dispatcher.shutdown_report is not None
    assert len(dispatcher.shutdown_report) == 0
    assert shutdown_lines(caplog) == [
        (
            logging.INFO,
            "Dispatcher 'drain' shut down; every job finished: "
            "of 5 submitted, 5 succeeded, 0 failed, 0 cancelled",
        )
    ]


async def test_cleanup_cancels_what_is_left_after_grace_and_logs_each_job(
    fast_clock: None, caplog: pytest.LogCaptureFixture
) -> None:
    """After `grace` s, cleanup cancels the rest: a WARNING summary, then one per unfinished job."""
    caplog.set_level(logging.INFO, logger="asyncpool")
    loop = asyncio.get_running_loop()
    app = web.Application()
    dispatcher = setup(app, workers=2, grace=5, name="cut")
    async with running(app) as runner:
        quick = await dispatcher.submit(asyncio.sleep, 1, "quick")
        slow = await dispatcher.submit(asyncio.sleep, 100)
        after_quick = await dispatcher.submit(asyncio.sleep, 100)  # starts at 1 s
        last = await dispatcher.submit(asyncio.sleep, 100)  # never gets a worker
        started = loop.time()
        await runner.cleanup()
        assert loop.time() - started == pytest.approx(5)
    assert quick.result() == "quick"
    assert all(handle.cancelled() for handle in (slow, after_quick, last))
    assert shutdown_lines(caplog) == [
        (
            logging.WARNING,
            "Dispatcher 'cut' shut down with 3 jobs unfinished (grace period 5 s): "
            "1 never started, 2 interrupted; of 4 submitted, 1 succeeded, 0 failed, 3 cancelled",
        ),
        (logging.WARNING, f"Dispatcher 'cut': unfinished job id=4 (never started): {last!r}"),
        (logging.WARNING, f"Dispatcher 'cut': unfinished job id=2 (interrupted): {slow!r}"),
        (
            logging.WARNING,
            f"Dispatcher 'cut': unfinished job id=3 (interrupted): {after_quick!r}",
        ),
    ]
    # The lines follow the report, whose jobs come in submission (id) order.
    assert dispatcher.shutdown_report == asyncpool.ShutdownReport(
        never_started=(last,), interrupted=(slow, after_quick)
    )
    assert "<JobHandle id=2 CANCELLED" in repr(slow)


async def test_cleanup_with_zero_grace_cancels_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """grace=0: cleanup cancels running and queued jobs without waiting, and reports both kinds."""
    caplog.set_level(logging.WARNING, logger="asyncpool")
    app = web.Application()
    dispatcher = setup(app, workers=1, grace=0)
    running_gate, queued_gate = Gate(), Gate()
    async with running(app):
        first = await dispatcher.submit(running_gate)
        second = await dispatcher.submit(queued_gate)
        await running_gate.started.wait()
    assert first.cancelled()
    assert second.cancelled()
    assert running_gate.saw_cancel
    assert queued_gate.runs == 0
    messages = [message for _, message in shutdown_lines(caplog)]
    assert messages[0].startswith(
        "Dispatcher shut down with 2 jobs unfinished (grace period 0 s): "
        "1 never started, 1 interrupted; "
    )
    assert messages[1:] == [
        f"Dispatcher: unfinished job id=2 (never started): {second!r}",
        f"Dispatcher: unfinished job id=1 (interrupted): {first!r}",
    ]


async def test_cleanup_leaves_a_dispatcher_the_app_closed_itself_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If the app closed the dispatcher itself, cleanup neither closes it again nor logs."""
    caplog.set_level(logging.INFO, logger="asyncpool")
    app = web.Application()
    dispatcher = setup(app, workers=1)
    gate = Gate()
    async with running(app):
        handle = await dispatcher.submit(gate)
        report = await dispatcher.close(cancel=True)
        assert report.unfinished == (handle,)
    assert shutdown_lines(caplog) == []


async def test_requests_in_flight_at_shutdown_can_still_submit() -> None:
    """Cleanup comes after the requests in flight, so a handler running at shutdown can submit."""
    app = web.Application()
    dispatcher = setup(app, workers=1)
    entered, proceed, shutting_down = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def on_shutdown(app: web.Application) -> None:
        shutting_down.set()

    async def handler(request: web.Request) -> web.Response:
        entered.set()
        await proceed.wait()
        handle = await spawn(request, double, 4)
        return web.json_response({"job": handle.id})

    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/", handler)
    async with serving(app) as client:
        request = asyncio.create_task(client.post("/"))
        await entered.wait()
        closing = asyncio.create_task(client.server.close())
        await shutting_down.wait()
        assert dispatcher.running
        proceed.set()
        response = await request
        assert (response.status, await response.json()) == (200, {"job": 1})
        response.release()
        await closing
    assert dispatcher.closed
    assert dispatcher.stats().succeeded == 1


# ------------------------------------------------- ownership and failures


async def test_job_outlives_its_cancelled_handler() -> None:
    """A job belongs to the dispatcher: it runs on to success when its handler is cancelled."""
    app = web.Application()
    dispatcher = setup(app, workers=1)
    gate = Gate(value="survived")
    handles: list[asyncpool.JobHandle[object]] = []
    submitted, handler_cancelled = asyncio.Event(), asyncio.Event()

    async def follow(request: web.Request) -> web.Response:
        handle = await spawn(request, gate)
        handles.append(handle)
        submitted.set()
        try:
            await asyncio.wait([handle])  # waits for the job without owning it
        except asyncio.CancelledError:
            handler_cancelled.set()
            raise
        return web.Response(text="finished")

    app.router.add_post("/follow", follow)
    async with serving(app) as client:
        assert client.host == "127.0.0.1"
        _, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(b"POST /follow HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await submitted.wait()
        writer.close()  # the client goes away
        await writer.wait_closed()
        await handler_cancelled.wait()
        (handle,) = handles
        await gate.started.wait()
        assert handle.state is asyncpool.JobState.RUNNING
        gate.release()
        assert await handle == "survived"
        assert not gate.saw_cancel
        assert dispatcher.running
    assert dispatcher.stats().succeeded == 1


async def test_job_awaited_by_its_cancelled_handler_is_cancelled_with_it() -> None:
    """A handler that awaits the handle owns the job: cancelling the handler cancels the job."""
    app = web.Application()
    setup(app, workers=1)
    gate = Gate()
    handles: list[asyncpool.JobHandle[object]] = []
    handler_cancelled = asyncio.Event()

    async def await_it(request: web.Request) -> web.Response:
        handle = await spawn(request, gate)
        handles.append(handle)
        try:
            await handle
        except asyncio.CancelledError:
            handler_cancelled.set()
            raise
        return web.Response(text="finished")

    app.router.add_post("/", await_it)
    async with serving(app) as client:
        _, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await gate.started.wait()
        writer.close()
        await writer.wait_closed()
        await handler_cancelled.wait()
        (handle,) = handles
        await asyncio.wait([handle])
        assert handle.cancelled()
        assert gate.saw_cancel


async def test_job_failure_goes_to_on_error_and_other_jobs_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing job reaches on_error once; other jobs, and later requests, are unaffected."""
    failures: list[tuple[int, BaseException]] = []
    reported = asyncio.Event()

    def on_error(handle: asyncpool.JobHandle[Any], exc: BaseException) -> None:
        failures.append((handle.id, exc))
        reported.set()

    app = web.Application()
    dispatcher = setup(app, workers=2, on_error=on_error)
    gates = [Gate(value="a"), Gate(value="b")]
    handles: list[asyncpool.JobHandle[object]] = []

    async def queue(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind == "fail":
            handle: asyncpool.JobHandle[Any] = await spawn(request, fail)
        elif kind == "double":
            handle = await spawn(request, double, 8)
        else:
            handle = await spawn(request, gates[int(kind)])
        handles.append(handle)
        return web.json_response({"job": handle.id}, status=202)

    app.router.add_post("/{kind}", queue)
    async with serving(app) as client:
        for path in ("/0", "/fail", "/1"):
            response = await client.post(path)
            assert response.status == 202
        await reported.wait()
        assert [(job_id, str(exc)) for job_id, exc in failures] == [(2, "boom")]
        response = await client.post("/double")
        assert (response.status, await response.json()) == (202, {"job": 4})
        for gate in gates:
            gate.release()
        await dispatcher.join()
        assert [h.state.name for h in handles] == ["SUCCEEDED", "FAILED", "SUCCEEDED", "SUCCEEDED"]
        assert dispatcher.running
    assert len(failures) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "asyncpool"]


# ------------------------------------------------------------ real server


JOBS = 1_000
CONCURRENCY = 50
_UNFINISHED = re.compile(r"unfinished job id=(\d+) \((interrupted|never started)\)")
_SUMMARY = re.compile(
    r"shut down with (?P<total>\d+) jobs unfinished \(grace period [^)]*\): "
    r"(?P<never_started>\d+) never started, (?P<interrupted>\d+) interrupted"
)
_WENT_AWAY = re.compile(r"job (\d+): the client went away; the job goes on")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _loop_name() -> str:
    return "uvloop" if isinstance(asyncio.get_running_loop(), uvloop.Loop) else "asyncio"


def _job_seconds(n: int) -> float:
    """A job's duration: 0.05 to 0.20 s, decided by its number."""
    return 0.05 + (n % 16) / 100


@dataclasses.dataclass
class Outcome:
    """What a stopped server left: its exit code, record and log."""

    returncode: int | None
    completed: list[int]
    unfinished: dict[int, str]
    summary: tuple[int, int, int] | None  # (total, interrupted, never started)
    log: str


@dataclasses.dataclass
class ExampleServer:
    """The example application, running as a server process on 127.0.0.1."""

    process: asyncio.subprocess.Process
    port: int
    record: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self, *, timeout: float) -> Outcome:
        """Send SIGTERM, wait (at most `timeout` seconds) for the exit, and read what it left."""
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            await self.process.communicate()
        log = self.log.read_text(encoding="utf-8")
        completed = [int(line) for line in self.record.read_text(encoding="ascii").split()]
        summary = _SUMMARY.search(log)
        return Outcome(
            returncode=self.process.returncode,
            completed=completed,
            unfinished={int(m[1]): m[2] for m in _UNFINISHED.finditer(log)},
            summary=(
                (
                    int(summary["total"]),
                    int(summary["interrupted"]),
                    int(summary["never_started"]),
                )
                if summary
                else None
            ),
            log=log,
        )


@contextlib.asynccontextmanager
async def example_server(
    tmp_path: Path, *, grace: float, workers: int
) -> AsyncIterator[ExampleServer]:
    """Run `python -m examples.aiohttp_app` on a free port of 127.0.0.1, on the test's loop kind."""
    port = _free_port()
    record = tmp_path / "completed-jobs.txt"
    log = tmp_path / "server.log"
    command = [
        sys.executable, "-u", "-W", "error", "-m", "examples.aiohttp_app",
        "--port", str(port), "--loop", _loop_name(),
        "--grace", str(grace), "--workers", str(workers),
    ]  # fmt: skip
    env = {**os.environ, "ASYNCPOOL_EXAMPLE_RECORD": str(record)}
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=log_file
        )
    try:
        # run_app prints its banner once the socket listens: wait for that
        # line (bounded), not for a guessed amount of time.
        assert process.stdout is not None
        async with asyncio.timeout(30):
            while b"Running on" not in (line := await process.stdout.readline()):
                if not line:
                    pytest.fail(f"the server exited early:\n{log.read_text(encoding='utf-8')}")
        yield ExampleServer(process, port, record, log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


async def _post_jobs(client: aiohttp.ClientSession, count: int) -> list[int]:
    """POST `count` jobs, CONCURRENCY at a time; return the accepted job ids."""
    numbers = iter(range(count))
    accepted: list[int] = []

    async def sender() -> None:
        for n in numbers:
            params = {"seconds": str(_job_seconds(n))}
            async with client.post("/jobs", params=params) as response:
                assert response.status == 202, await response.text()
                accepted.append((await response.json())["job"])

    async with asyncio.TaskGroup() as group:
        for _ in range(CONCURRENCY):
            group.create_task(sender())
    return accepted


@pytest.mark.slow
@pytest.mark.parametrize(
    ("grace", "workers"),
    [
        # 4 workers drain 32 jobs a second at most: a backlog is left at
        # SIGTERM, and 0.2 s is far too short for it.
        pytest.param(0.2, 4, id="short-grace"),
        # 16 workers drain the whole load in 8 s at most: within 30 s.
        pytest.param(30.0, 16, id="long-grace"),
    ],
)
async def test_example_server_sigterm_loses_no_accepted_job(
    tmp_path: Path, grace: float, workers: int
) -> None:
    """SIGTERM while jobs run: each accepted job is in the record or logged unfinished, not both."""
    async with example_server(tmp_path, grace=grace, workers=workers) as server:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(
            server.url, connector=connector, timeout=timeout
        ) as client:
            accepted = await _post_jobs(client, JOBS)
            # The last job was accepted moments ago and takes 0.05 s at least,
            # so this snapshot, taken just before SIGTERM, shows work pending.
            async with client.get("/stats") as response:
                stats = await response.json()
        outcome = await server.stop(timeout=grace + 30)

    pending_at_sigterm = stats["queued"] + stats["busy"]
    completed = set(outcome.completed)
    unfinished = set(outcome.unfinished)
    interrupted = sum(reason == "interrupted" for reason in outcome.unfinished.values())
    print(
        f"\naiohttp example server [{_loop_name()}, workers={workers}, grace={grace:g} s]: "
        f"accepted={len(accepted)} completed={len(completed)} "
        f"reported_unfinished={len(unfinished)} (interrupted={interrupted}, "
        f"never_started={len(unfinished) - interrupted}); "
        f"pending at SIGTERM={pending_at_sigterm}"
    )
    assert outcome.returncode == 0, outcome.log
    assert pending_at_sigterm > 0  # SIGTERM came while jobs were still running
    assert len(accepted) == len(set(accepted)) == JOBS
    assert len(outcome.completed) == len(completed)  # no job recorded twice
    assert completed.isdisjoint(unfinished)
    # The server accepted nothing else, so its job ids are exactly 1..JOBS.
    assert completed | unfinished == set(accepted) == set(range(1, JOBS + 1))
    if grace < 1:
        assert unfinished, "a 0.2 s grace period cannot drain this backlog"
        assert 0 < interrupted <= workers
        assert outcome.summary == (len(unfinished), interrupted, len(unfinished) - interrupted)
    else:
        assert completed == set(accepted)
        assert outcome.summary is None
        assert "shut down; every job finished: of 1000 submitted, 1000 succeeded" in outcome.log


@pytest.mark.slow
async def test_example_server_job_survives_client_disconnect(tmp_path: Path) -> None:
    """A client hanging up once its job is accepted cancels the handler, never the job."""
    followers = 20
    async with example_server(tmp_path, grace=30, workers=followers) as server:
        accepted: list[int] = []
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(server.url, timeout=timeout) as client:
            for _ in range(followers):
                params = {"seconds": "1", "follow": "1"}
                async with client.post("/jobs", params=params) as response:
                    assert response.status == 200
                    first = json.loads(await response.content.readline())
                    assert first["state"] == "QUEUED"
                    accepted.append(first["job"])
                    response.close()  # the job is accepted: hang up
        outcome = await server.stop(timeout=60)

    went_away = {int(m[1]) for m in _WENT_AWAY.finditer(outcome.log)}
    print(
        f"\naiohttp example server [{_loop_name()}, disconnecting clients]: "
        f"accepted={len(accepted)} handlers cancelled={len(went_away)} "
        f"completed={len(outcome.completed)} reported_unfinished={len(outcome.unfinished)}"
    )
    assert outcome.returncode == 0, outcome.log
    assert went_away == set(accepted)
    assert sorted(outcome.completed) == sorted(accepted)
    assert outcome.unfinished == {}


# Regression (issue 16): the example wrote completed-jobs.txt into the working directory.
def test_example_record_defaults_to_the_temp_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --record or $ASYNCPOOL_EXAMPLE_RECORD, the record file is in the temp directory."""
    monkeypatch.delenv(aiohttp_app.RECORD_ENV, raising=False)
    default = Path(tempfile.gettempdir()) / "asyncpool-completed-jobs.txt"
    assert aiohttp_app.parse_args([]).record == default
    monkeypatch.setenv(aiohttp_app.RECORD_ENV, "/srv/example/done.txt")
    assert aiohttp_app.parse_args([]).record == Path("/srv/example/done.txt")
    assert aiohttp_app.parse_args(["--record", "done.txt"]).record == Path("done.txt")


# Regression (issue 16): the example never said where its record file was.
async def test_example_logs_where_its_record_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When the example application starts, it logs the absolute path of its record file."""
    caplog.set_level(logging.INFO, logger=aiohttp_app.logger.name)
    record = tmp_path / "done.txt"
    async with running(aiohttp_app.make_app(record, grace=1, workers=1)):
        pass
    messages = [r.getMessage() for r in caplog.records if r.name == aiohttp_app.logger.name]
    assert any(str(record) in message for message in messages), messages
    assert record.exists()
