"""asyncpool.fastapi and asyncpool.aiohttp submitting through a broker, on real servers.

The web side: a FastAPI application under uvicorn, or an aiohttp application
under its `AppRunner`, listening on 127.0.0.1 (a free port) in the test's own
process and loop, so that the conftest's loop parametrization covers asyncio
and uvloop; a real HTTP client (httpx) talks to it over TCP. Its broker is a
`JetStreamBroker` on the real NATS (`nats_url`), opened and closed by the
integration under test, and the application only submits: it never serves.

The jobs run on a real worker: `broker.serve()` on a second broker of the
same name in this process, whose tasks tell the test through events what ran
(no sleeping), or a `python -m asyncpool worker` process, which leaves its
runs in a record file (tests/brokers/chaos_tasks.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, assert_type

import httpx
import pytest
import uvicorn
from aiohttp import web
from fastapi import Body, FastAPI, Request

import asyncpool.aiohttp
import asyncpool.fastapi
from asyncpool import Dispatcher
from asyncpool.brokers import Broker, ServeReport, Task, current_job
from asyncpool.fastapi import BrokerDep
from asyncpool.jetstream import JetStreamBroker
from tests._jobs import guarded

from ._servers import (
    ENV_ACK_WAIT,
    ENV_NAME,
    ENV_RECORDS,
    ENV_URL,
    WorkerFleet,
    runs_by_id,
    terminal_records,
    wait_for_records,
)
from .chaos_tasks import ChaosApp

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]

Tasks = Mapping[str, Task[..., Any]]


# -- the tasks ----------------------------------------------------------------


class Witness:
    """What one broker's tasks ran: (task, job id, arguments), and an event per task name."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, tuple[Any, ...]]] = []
        self.ran: dict[str, asyncio.Event] = {
            "web.add": asyncio.Event(),
            "web.note": asyncio.Event(),
        }

    def saw(self, *args: Any) -> None:
        info = current_job()
        self.runs.append((info.task, info.id, args))
        self.ran[info.task].set()


def register(broker: Broker, witness: Witness) -> dict[str, Task[..., Any]]:
    """The test tasks on `broker`; the web app's broker and the worker's register the same names."""

    @broker.task(name="web.add")
    async def add(x: int, y: int) -> int:
        witness.saw(x, y)
        return x + y

    @broker.task(name="web.note")
    async def note(text: str) -> None:
        witness.saw(text)

    return {"add": add, "note": note}


def make_broker(url: str, name: str) -> JetStreamBroker:
    return JetStreamBroker(url, name=name, ack_wait=5)


@contextlib.asynccontextmanager
async def worker(url: str, name: str, witness: Witness) -> AsyncIterator[list[ServeReport]]:
    """Serve the broker `name` in this process for the body; stop it after, and report."""
    broker = make_broker(url, name)
    register(broker, witness)
    stop = asyncio.Event()
    reports: list[ServeReport] = []
    async with broker, Dispatcher(workers=2) as dispatcher:
        serving = asyncio.create_task(broker.serve(dispatcher, stop=stop))
        try:
            yield reports
        finally:
            stop.set()
            reports.append(await guarded(serving))


# -- the applications ---------------------------------------------------------
#
# Both have the same two endpoints:
#   POST /jobs/{name}       body: the arguments (a JSON list); submits, waits
#                           for the result: {"job_id": ..., "result": ...}
#   POST /jobs/{name}/send  the same, fire-and-forget (result=False): 202,
#                           {"job_id": ...}


def fastapi_app(broker: Broker, tasks: Tasks) -> FastAPI:
    """A FastAPI app on `broker_lifespan`; one route takes `BrokerDep`, the other `get_broker`."""
    app = FastAPI(lifespan=asyncpool.fastapi.broker_lifespan(broker))

    @app.post("/jobs/{name}")
    async def run_job(
        name: str, args: Annotated[list[Any], Body()], broker: BrokerDep
    ) -> dict[str, Any]:
        handle = await broker.submit(tasks[name], *args)
        return {"job_id": handle.id, "result": await handle}

    @app.post("/jobs/{name}/send", status_code=202)
    async def send_job(
        name: str, args: Annotated[list[Any], Body()], request: Request
    ) -> dict[str, str]:
        broker = asyncpool.fastapi.get_broker(request)
        handle = await broker.submit(tasks[name], *args, result=False)
        return {"job_id": handle.id}

    return app


def aiohttp_app(broker: Broker, tasks: Tasks) -> web.Application:
    """An aiohttp app with `setup_broker`; its handlers reach the broker with `get_broker`."""

    async def run_job(request: web.Request) -> web.Response:
        broker = asyncpool.aiohttp.get_broker(request)
        handle = await broker.submit(tasks[request.match_info["name"]], *await request.json())
        return web.json_response({"job_id": handle.id, "result": await handle})

    async def send_job(request: web.Request) -> web.Response:
        broker = asyncpool.aiohttp.get_broker(request)
        task = tasks[request.match_info["name"]]
        handle = await broker.submit(task, *await request.json(), result=False)
        return web.json_response({"job_id": handle.id}, status=202)

    app = web.Application()
    assert asyncpool.aiohttp.setup_broker(app, broker) is broker
    app.router.add_post("/jobs/{name}", run_job)
    app.router.add_post("/jobs/{name}/send", send_job)
    return app


# -- the servers --------------------------------------------------------------


def listening_socket() -> socket.socket:
    """A TCP socket listening on 127.0.0.1 (a free port).

    Listening before the server starts: a request sent early waits in the
    kernel's backlog instead of being refused, so nothing polls for readiness.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()
    return f"http://{host}:{port}"


class _Uvicorn(uvicorn.Server):
    """uvicorn's server in a test's loop: it says when its startup is over; it leaves signals be."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_over = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            # Also when it failed (the lifespan's startup raised): the test
            # then finds `started` false instead of waiting in vain.
            self.startup_over.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Left alone: Ctrl+C in the test process stays pytest's.
        yield


async def _run_uvicorn(server: _Uvicorn, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        # uvicorn exits the process when the application's startup fails.
        raise RuntimeError(f"uvicorn could not start the application (exit {exc.code})") from None


@contextlib.asynccontextmanager
async def uvicorn_serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` under uvicorn (lifespan on) on 127.0.0.1; yield its URL; shut it down after."""
    sock = listening_socket()
    config = uvicorn.Config(app, lifespan="on", ws="none", log_level="warning", access_log=False)
    server = _Uvicorn(config)
    running = asyncio.create_task(_run_uvicorn(server, sock))
    try:
        await guarded(server.startup_over.wait())
        if server.started:
            yield url_of(sock)
    finally:
        server.should_exit = True
        try:
            await guarded(running)
        finally:
            sock.close()


@contextlib.asynccontextmanager
async def aiohttp_serving(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` with an `AppRunner` on 127.0.0.1; yield its URL; clean it up after."""
    sock = listening_socket()
    runner = web.AppRunner(app)
    try:
        await runner.setup()  # runs the cleanup contexts' startup: the broker is open after it
        try:
            await web.SockSite(runner, sock).start()
            yield url_of(sock)
        finally:
            await runner.cleanup()  # closes the broker
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def web_server(
    framework: str, broker: Broker, tasks: Tasks
) -> AsyncIterator[httpx.AsyncClient]:
    """Serve the framework's app on `broker`; yield an HTTP client of it."""
    serving = (
        uvicorn_serving(fastapi_app(broker, tasks))
        if framework == "fastapi"
        else aiohttp_serving(aiohttp_app(broker, tasks))
    )
    async with (
        serving as url,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=20) as client,
    ):
        yield client


FRAMEWORKS = pytest.mark.parametrize("framework", ["fastapi", "aiohttp"])


# -- through a real server ----------------------------------------------------


@FRAMEWORKS
async def test_route_answers_with_the_result_the_worker_computed(
    framework: str, nats_url: str, broker_name: str
) -> None:
    """A route submits through the app's broker; its response carries the job's result."""
    at_worker, at_web = Witness(), Witness()
    broker = make_broker(nats_url, broker_name)
    tasks = register(broker, at_web)
    async with (
        worker(nats_url, broker_name, at_worker) as reports,
        web_server(framework, broker, tasks) as client,
    ):
        response = await client.post("/jobs/add", json=[2, 3])
        assert response.status_code == 200, response.text
        answer = response.json()
    assert answer == {"job_id": answer["job_id"], "result": 5}
    assert at_worker.runs == [("web.add", answer["job_id"], (2, 3))]
    assert at_web.runs == []  # the web app only submits
    assert reports[0].succeeded == 1


@FRAMEWORKS
async def test_fire_and_forget_route_answers_at_once_and_the_job_runs(
    framework: str, nats_url: str, broker_name: str
) -> None:
    """result=False: the route answers 202 with the id; the worker runs it; no record is kept."""
    at_worker, at_web = Witness(), Witness()
    broker = make_broker(nats_url, broker_name)
    tasks = register(broker, at_web)
    async with (
        worker(nats_url, broker_name, at_worker) as reports,
        web_server(framework, broker, tasks) as client,
    ):
        response = await client.post("/jobs/note/send", json=["sent from the web"])
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        await guarded(at_worker.ran["web.note"].wait())
    # The worker has stopped: the job ended, and was acknowledged.
    assert at_worker.runs == [("web.note", job_id, ("sent from the web",))]
    assert at_web.runs == []
    assert reports[0].succeeded == 1
    # Fire-and-forget costs no result storage.
    assert await terminal_records(nats_url, broker_name, [job_id]) == {job_id: "none"}


@pytest.mark.slow
@FRAMEWORKS
async def test_worker_process_runs_what_the_app_submits(
    framework: str, nats_url: str, broker_name: str, worker_fleet: WorkerFleet, tmp_path: Path
) -> None:
    """With `python -m asyncpool worker`: the answer is its result; a sent job runs there too."""
    records = tmp_path / "records.jsonl"
    process = worker_fleet.start(
        {
            ENV_URL: nats_url,
            ENV_NAME: broker_name,
            ENV_ACK_WAIT: "5",
            ENV_RECORDS: str(records),
        }
    )
    chaos = ChaosApp(nats_url, broker_name, ack_wait=5)
    async with web_server(framework, chaos.broker, {"work": chaos.work}) as client:
        response = await client.post("/jobs/work", json=[0])
        assert response.status_code == 200, response.text
        answer = response.json()
        response = await client.post("/jobs/work/send", json=[0])
        assert response.status_code == 202, response.text
        sent = response.json()["job_id"]
    found = await wait_for_records(
        records,
        lambda found: any(r.id == sent and r.ev == "end" for r in found),
        timeout=20,
        what=f"the worker process to run the sent job {sent}",
        describe=worker_fleet.describe,
    )
    # chaos.work returns "<job id>:<attempt>": the run that produced the answer.
    assert answer == {"job_id": answer["job_id"], "result": f"{answer['job_id']}:1"}
    runs = runs_by_id(found)
    for job_id in (answer["job_id"], sent):
        [run] = runs[job_id]
        assert run.pid == process.pid
        assert run.end is not None


# -- FastAPI: lifespan and dependency ------------------------------------------


async def test_broker_lifespan_composes_and_reopens_the_same_broker(
    nats_url: str, broker_name: str
) -> None:
    """Around dispatcher_lifespan and an own lifespan: open for their startup and shutdown."""
    broker = make_broker(nats_url, broker_name)
    tasks = register(broker, Witness())
    sent: list[str] = []

    @contextlib.asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        assert asyncpool.fastapi.get_dispatcher(app).running
        the_broker = asyncpool.fastapi.get_broker(app)
        sent.append((await the_broker.submit(tasks["note"], "startup", result=False)).id)
        yield {"state": "passed on"}
        sent.append((await the_broker.submit(tasks["note"], "shutdown", result=False)).id)

    app = FastAPI(
        lifespan=asyncpool.fastapi.broker_lifespan(
            broker, asyncpool.fastapi.dispatcher_lifespan(own, workers=1)
        )
    )
    for _ in range(2):  # each run opens the broker again
        async with app.router.lifespan_context(app) as state:
            assert state == {"state": "passed on"}
            assert getattr(app.state, asyncpool.fastapi.BROKER_STATE_ATTRIBUTE) is broker
        assert asyncpool.fastapi.get_broker(app) is broker  # kept, closed
        with pytest.raises(RuntimeError, match="is not open"):
            await broker.submit(tasks["note"], "too late")
    assert len(sent) == len(set(sent)) == 4


@pytest.mark.parametrize(
    "not_a_broker",
    ["nats://127.0.0.1:4222", JetStreamBroker, Dispatcher(workers=1)],
    ids=["url", "broker-class", "dispatcher"],
)
def test_broker_lifespan_refuses_what_is_not_a_broker(not_a_broker: Any) -> None:
    """broker_lifespan() of anything but a broker instance is a TypeError naming `broker`."""
    with pytest.raises(TypeError, match=r"^broker must be an asyncpool broker .*, got "):
        asyncpool.fastapi.broker_lifespan(not_a_broker)


def test_broker_lifespan_refuses_a_non_callable_app_lifespan() -> None:
    """The wrapped lifespan must be callable; said where the app is built."""
    broker = make_broker("nats://127.0.0.1:4222", "unused")
    with pytest.raises(TypeError, match="app_lifespan must be a lifespan function or None"):
        asyncpool.fastapi.broker_lifespan(broker, "lifespan")  # type: ignore[call-overload]


async def test_broker_lifespan_installed_twice_is_an_error(nats_url: str, broker_name: str) -> None:
    """A second broker lifespan on an app that runs one raises; the first broker stays."""
    first, second = make_broker(nats_url, broker_name), make_broker(nats_url, broker_name)
    tasks = register(first, Witness())
    app = FastAPI(lifespan=asyncpool.fastapi.broker_lifespan(first))
    async with app.router.lifespan_context(app):
        for again in (first, second):
            with pytest.raises(RuntimeError, match="install broker_lifespan once"):
                async with asyncpool.fastapi.broker_lifespan(again)(app):
                    pass  # pragma: no cover - not reached
        assert asyncpool.fastapi.get_broker(app) is first
        await first.submit(tasks["note"], "still open", result=False)


async def test_broker_dep_without_the_lifespan_names_the_fix() -> None:
    """Without broker_lifespan, get_broker and BrokerDep raise a RuntimeError naming the fix."""
    app = FastAPI()

    @app.post("/jobs")
    async def route(broker: BrokerDep) -> None:
        raise AssertionError("not reached")  # pragma: no cover

    fix = (
        r"no asyncpool broker at app\.state\.asyncpool_broker: install the lifespan, "
        r"FastAPI\(lifespan=asyncpool\.fastapi\.broker_lifespan\(broker\)\)"
    )
    with pytest.raises(RuntimeError, match=fix):
        asyncpool.fastapi.get_broker(app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        with pytest.raises(RuntimeError, match=fix):
            await client.post("/jobs")


# -- aiohttp: setup_broker and get_broker --------------------------------------


def test_setup_broker_returns_the_broker_with_its_type() -> None:
    """setup_broker() hands back its broker, typed as given, and stores it as app[BROKER_KEY]."""
    app = web.Application()
    broker = asyncpool.aiohttp.setup_broker(app, make_broker("nats://127.0.0.1:4222", "unused"))
    assert_type(broker, JetStreamBroker)
    assert app[asyncpool.aiohttp.BROKER_KEY] is broker
    assert len(app.cleanup_ctx) == 1


@pytest.mark.parametrize(
    "not_a_broker",
    ["nats://127.0.0.1:4222", JetStreamBroker, Dispatcher(workers=1), None],
    ids=["url", "broker-class", "dispatcher", "none"],
)
def test_setup_broker_refuses_what_is_not_a_broker(not_a_broker: Any) -> None:
    """setup_broker() with anything but a broker is a TypeError naming `broker`; app untouched."""
    app = web.Application()
    with pytest.raises(TypeError, match=r"^broker must be an asyncpool broker .*, got "):
        asyncpool.aiohttp.setup_broker(app, not_a_broker)
    assert asyncpool.aiohttp.BROKER_KEY not in app
    assert len(app.cleanup_ctx) == 0


def test_setup_broker_refuses_what_is_not_an_application() -> None:
    """setup_broker() on anything but a web.Application is a TypeError naming `app`."""
    broker = make_broker("nats://127.0.0.1:4222", "unused")
    with pytest.raises(TypeError, match=r"^app must be an aiohttp\.web\.Application, got dict"):
        asyncpool.aiohttp.setup_broker({}, broker)  # type: ignore[arg-type]


def test_setup_broker_twice_or_too_late_is_an_error() -> None:
    """A second setup_broker(), or one after add_subapp froze the app, is a RuntimeError."""
    app = web.Application()
    asyncpool.aiohttp.setup_broker(app, make_broker("nats://127.0.0.1:4222", "one"))
    with pytest.raises(RuntimeError, match=r"setup_broker\(\) was already called .*'one'"):
        asyncpool.aiohttp.setup_broker(app, make_broker("nats://127.0.0.1:4222", "two"))
    sub = web.Application()
    app.add_subapp("/sub", sub)
    with pytest.raises(RuntimeError, match="before it is added as a sub-application"):
        asyncpool.aiohttp.setup_broker(sub, make_broker("nats://127.0.0.1:4222", "three"))


async def test_get_broker_without_setup_names_the_fix() -> None:
    """In a handler of an app without setup_broker(), get_broker() says to call it."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        with pytest.raises(RuntimeError) as raised:
            asyncpool.aiohttp.get_broker(request)
        seen.append(str(raised.value))
        return web.Response(text="checked")

    app = web.Application()
    asyncpool.aiohttp.setup(app, workers=1)  # a dispatcher is not a broker
    app.router.add_post("/", handler)
    async with (
        aiohttp_serving(app) as url,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=20) as client,
    ):
        response = await client.post("/")
        assert (response.status_code, response.text) == (200, "checked")
    assert seen == [
        "no asyncpool broker for this request: call asyncpool.aiohttp.setup_broker(app, broker) "
        "on the application, or on one of its parent applications, before it starts"
    ]


def test_get_broker_rejects_what_is_not_a_request() -> None:
    """get_broker(app) is a TypeError: outside a request, app[BROKER_KEY] is the way."""
    app = web.Application()
    with pytest.raises(
        TypeError, match=r"request must be an aiohttp\.web\.Request, got Application"
    ):
        asyncpool.aiohttp.get_broker(app)  # type: ignore[arg-type]


async def test_setup_broker_opens_for_startup_hooks_and_sub_apps_and_closes_at_cleanup(
    nats_url: str, broker_name: str
) -> None:
    """The broker is open for on_startup hooks and sub-apps' handlers; cleanup closes it."""
    broker = make_broker(nats_url, broker_name)
    tasks = register(broker, Witness())
    sent: list[str] = []

    async def on_startup(app: web.Application) -> None:
        handle = await app[asyncpool.aiohttp.BROKER_KEY].submit(tasks["note"], "x", result=False)
        sent.append(handle.id)

    async def handler(request: web.Request) -> web.Response:
        assert asyncpool.aiohttp.get_broker(request) is broker
        handle = await asyncpool.aiohttp.get_broker(request).submit(
            tasks["note"], "y", result=False
        )
        return web.Response(text=handle.id)

    app, sub = web.Application(), web.Application()
    asyncpool.aiohttp.setup_broker(app, broker)
    app.on_startup.append(on_startup)
    sub.router.add_post("/send", handler)
    app.add_subapp("/sub", sub)
    async with (
        aiohttp_serving(app) as url,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=20) as client,
    ):
        response = await client.post("/sub/send")
        assert response.status_code == 200, response.text
        sent.append(response.text)
    assert len(sent) == len(set(sent)) == 2
    with pytest.raises(RuntimeError, match="is not open"):
        await broker.submit(tasks["note"], "too late")


# -- layering -------------------------------------------------------------------


@pytest.mark.slow
def test_integrations_import_no_broker_engine() -> None:
    """asyncpool.fastapi and asyncpool.aiohttp load neither asyncpool.jetstream nor nats-py."""
    code = (
        "import sys, asyncpool.fastapi, asyncpool.aiohttp; "
        "print(sorted(m for m in sys.modules "
        "if m == 'asyncpool.jetstream' or m.split('.')[0] == 'nats'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    assert done.stdout.strip() == "[]"
