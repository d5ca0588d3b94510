"""asyncpool.dashboard over a real running local Dispatcher with a JobLog.

The app is called in process through `httpx.ASGITransport`, with its
lifespan run around the client (as a server would). Jobs are `Gate`s the
test releases, so what a page shows is known when it is read; nothing
sleeps. The helpers here (`serving`, `sign_in`, `csrf_of`, `TOKEN`) are
shared by the other dashboard test modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from asyncpool import Dispatcher
from asyncpool._joblog import JobLog
from asyncpool.dashboard import LocalSource, Source, create_app
from tests._jobs import Gate, guarded

TOKEN = "test-token-0123456789"
BASE = "http://127.0.0.1"
SCRIPT = "<script>window.pwned=1</script>"


@contextlib.asynccontextmanager
async def serving(
    app: Starlette, asgi: ASGIApp | None = None, *, lifespan: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `asgi` (the app itself by default), with the app's lifespan run around it."""
    transport = httpx.ASGITransport(app=asgi or app)
    async with contextlib.AsyncExitStack() as stack:
        if lifespan:
            await stack.enter_async_context(app.router.lifespan_context(app))
        client = httpx.AsyncClient(transport=transport, base_url=BASE)
        yield await stack.enter_async_context(client)


async def sign_in(client: httpx.AsyncClient, prefix: str = "", token: str = TOKEN) -> None:
    """Open the dashboard with `?token=` as a browser would: keep the cookie it sets."""
    response = await client.get(f"{prefix}/?token={token}")
    assert response.status_code == 303, response.text


def csrf_of(page: str) -> str:
    """The CSRF value rendered into the page's forms."""
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


@pytest.fixture
async def pool() -> AsyncIterator[tuple[Dispatcher, JobLog]]:
    """A running dispatcher of 2 workers named 'web', with a JobLog among its instruments."""
    log = JobLog()
    async with Dispatcher(workers=2, name="web", instruments=[log]) as dispatcher:
        yield dispatcher, log


async def boom(message: str) -> None:
    raise ValueError(message)


async def echo(value: object) -> object:
    return value


async def take(value: object) -> None:
    """A job that keeps nothing of its argument (its result is None)."""


class Counted:
    """An argument that counts how many times it is repr'd."""

    def __init__(self) -> None:
        self.reprs = 0

    def __repr__(self) -> str:
        self.reprs += 1
        return "Counted()"


# -- construction ---------------------------------------------------------


async def test_create_app_finds_the_joblog_among_the_dispatchers_instruments(
    pool: tuple[Dispatcher, JobLog],
) -> None:
    """Without log=, the JobLog given to the dispatcher is the one shown."""
    dispatcher, _ = pool
    handle = await dispatcher.submit(echo, 1)
    await guarded(handle)
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        page = await client.get(f"/jobs/{handle.id}")
    assert page.status_code == 200
    assert 'data-testid="job-state">succeeded<' in page.text


async def test_create_app_needs_a_joblog_for_a_dispatcher() -> None:
    """A dispatcher without a JobLog is a ValueError that names the log argument."""
    async with Dispatcher(workers=1) as dispatcher:
        with pytest.raises(ValueError, match=r"JobLog.*log=log"):
            create_app(dispatcher)
        with pytest.raises(TypeError, match="log must be an asyncpool JobLog"):
            create_app(dispatcher, log="a log")  # type: ignore[arg-type]


async def test_create_app_refuses_what_it_cannot_show(pool: tuple[Dispatcher, JobLog]) -> None:
    """Neither dispatcher, broker nor Source: TypeError; a weak token: ValueError."""
    dispatcher, log = pool
    with pytest.raises(TypeError, match="shows a Dispatcher, an asyncpool broker"):
        create_app(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="log= is for a Dispatcher"):
        create_app(LocalSource(dispatcher, log), log=log)
    with pytest.raises(ValueError, match="at least 8 characters"):
        create_app(dispatcher, token="short")
    with pytest.raises(ValueError, match="at least 8 characters"):
        create_app(dispatcher, token="has space in it")
    assert isinstance(LocalSource(dispatcher, log), Source)


async def test_create_app_makes_and_logs_a_token_when_none_is_given(
    pool: tuple[Dispatcher, JobLog], caplog: pytest.LogCaptureFixture
) -> None:
    """token=None: a fresh token, logged as a WARNING and kept at app.state.token; it signs in."""
    caplog.set_level(logging.WARNING, logger="asyncpool")
    dispatcher, _ = pool
    app = create_app(dispatcher)
    token = app.state.token
    assert len(token) >= 40
    assert any(token in record.getMessage() for record in caplog.records)
    assert create_app(dispatcher).state.token != token
    async with serving(app) as client:
        await sign_in(client, token=token)
        assert 'data-testid="signed-in"' in (await client.get("/")).text


# -- overview -------------------------------------------------------------


async def test_overview_shows_lane_worker_totals_and_chart(
    pool: tuple[Dispatcher, JobLog],
) -> None:
    """One lane "local" and one worker row with the dispatcher's counts; totals; the chart."""
    dispatcher, _ = pool
    running, waiting, third = Gate(), Gate(), Gate()
    handles = [await dispatcher.submit(g) for g in (running, waiting, third)]
    await guarded(running.started.wait())
    await guarded(waiting.started.wait())
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        page = (await client.get("/")).text
        data = (await client.get("/api/overview")).json()
    for gate in (running, waiting, third):
        gate.release()
    await guarded(asyncio.gather(*handles))
    assert page.count('data-testid="lane-row"') == 1
    assert page.count('data-testid="worker-row"') == 1
    assert 'data-testid="throughput-chart"' in page
    assert data["lanes"] == [
        {"name": "local", "waiting": "1", "running": "2", "delayed": "0", "rate": "0/s"}
    ]
    [worker] = data["workers"]
    assert worker["name"] == "web"
    assert (worker["pool"], worker["queued"]) == ("2 / 0 / 2", "1")
    assert data["totals"]["busy"] == "2 of 2"
    assert data["totals"]["waiting"] == "1"
    assert isinstance(data["throughput"], list)
    # The first paint shows the same cells the updates bring.
    assert 'data-total="waiting">1<' in page
    assert '<td data-field="pool">2 / 0 / 2</td>' in page


async def test_overview_counts_finished_jobs(pool: tuple[Dispatcher, JobLog]) -> None:
    """Succeeded and failed totals follow the dispatcher; the page script's URL is on the page."""
    dispatcher, _ = pool
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        await guarded(await dispatcher.submit(echo, 1))
        with pytest.raises(ValueError, match="no"):
            await guarded(await dispatcher.submit(boom, "no"))
        page = (await client.get("/")).text
        data = (await client.get("/api/overview")).json()
        script = await client.get("/static/dashboard.js")
    assert (data["totals"]["succeeded"], data["totals"]["failed"]) == ("1", "1")
    assert 'data-testid="stat-succeeded" data-total="succeeded">1<' in page
    assert 'data-overview-url="/api/overview"' in page
    assert script.status_code == 200
    assert "textContent" in script.text
    assert "innerHTML" not in script.text


async def test_overview_polls_make_no_job_records(pool: tuple[Dispatcher, JobLog]) -> None:
    """The local lane's rate reads finish times only: a poll never reprs a job's arguments."""
    dispatcher, _ = pool
    argument = Counted()
    await guarded(await dispatcher.submit(take, argument))
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        page = (await client.get("/")).text
        polls = [(await client.get("/api/overview")).json() for _ in range(3)]
        assert argument.reprs == 0
        assert 'data-field="rate">0.1/s<' in page
        assert [poll["lanes"][0]["rate"] for poll in polls] == ["0.1/s"] * 3
        await client.get("/jobs")  # the jobs list does show the arguments
    assert argument.reprs == 1


async def test_overview_labels_say_succeeded_and_failed_count_live_workers(
    pool: tuple[Dispatcher, JobLog],
) -> None:
    """The Succeeded and Failed totals add up live workers' counts, and their labels say so."""
    dispatcher, _ = pool
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        page = (await client.get("/")).text
    by_field = {
        field: label
        for label, field in re.findall(r'<dt>([^<]*)</dt><dd data-testid="stat-(\w+)"', page)
    }
    assert by_field["succeeded"] == "Succeeded (live workers)"
    assert by_field["failed"] == "Failed (live workers)"


async def test_overview_escapes_the_dispatchers_name() -> None:
    """A name with markup is text on the page (and plain data in the JSON)."""
    log = JobLog()
    async with (
        Dispatcher(workers=1, name=SCRIPT, instruments=[log]) as dispatcher,
        serving(create_app(dispatcher, token=TOKEN)) as client,
    ):
        page = (await client.get("/")).text
        data = (await client.get("/api/overview")).json()
    assert SCRIPT not in page
    assert html.escape(SCRIPT) in page
    assert data["workers"][0]["name"] == SCRIPT


# -- jobs -----------------------------------------------------------------


async def test_jobs_page_lists_newest_first_and_filters_by_state(
    pool: tuple[Dispatcher, JobLog],
) -> None:
    """Every recent job is a job-row, newest first; ?state= keeps only that state."""
    dispatcher, _ = pool
    done = await dispatcher.submit(echo, "a")
    await guarded(done)
    failed = await dispatcher.submit(boom, "b")
    with pytest.raises(ValueError, match="b"):
        await guarded(failed)
    gate = Gate()
    running = await dispatcher.submit(gate)
    await guarded(gate.started.wait())
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        everything = (await client.get("/jobs")).text
        only_failed = (await client.get("/jobs?state=failed")).text
        only_cancelled = (await client.get("/jobs?state=cancelled")).text
        unknown = await client.get("/jobs?state=lost")
    gate.release()
    await guarded(running)
    ids = re.findall(r'data-testid="job-row" data-job-id="([^"]+)"', everything)
    assert ids == [str(running.id), str(failed.id), str(done.id)]
    assert re.findall(r'data-testid="job-row" data-job-id="([^"]+)"', only_failed) == [
        str(failed.id)
    ]
    assert 'data-testid="no-jobs"' in only_cancelled
    assert unknown.status_code == 400


# Digits `str.isdigit()` accepts but `int()` refuses, digits of other
# scripts, more digits than `int()` reads, signs, spaces and the empty string.
BAD_COUNTS = ("²", "١٢", "9" * 5_000, "1234567", "-1", "+1", " 5", "1_0", "1e3", "0x10", "")


async def test_bad_limits_fall_back_to_the_default(pool: tuple[Dispatcher, JobLog]) -> None:
    """`?limit=` that is not 1 to 6 ASCII digits lists the default 100 jobs, never a 500."""
    dispatcher, _ = pool
    for value in range(3):
        await guarded(await dispatcher.submit(echo, value))
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        two = (await client.get("/jobs", params={"limit": "2"})).text
        answers = [await client.get("/jobs", params={"limit": bad}) for bad in BAD_COUNTS]
    assert two.count('data-testid="job-row"') == 2
    for bad, answer in zip(BAD_COUNTS, answers, strict=True):
        assert answer.status_code == 200, bad[:10]
        assert answer.text.count('data-testid="job-row"') == 3, bad[:10]


async def test_bad_counts_in_a_notice_fall_back_to_zero(pool: tuple[Dispatcher, JobLog]) -> None:
    """A notice's `n=` or `missing=` that is not 1 to 6 ASCII digits reads as 0, never a 500."""
    dispatcher, _ = pool
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        good = (await client.get("/?notice=requeued&n=3&missing=2")).text
        answers = [
            await client.get("/", params={"notice": "requeued", "n": bad, "missing": bad})
            for bad in BAD_COUNTS
        ]
        raw = await client.get("/jobs?limit=%C2%B2&notice=deleted&n=%C2%B2")
    assert 'data-testid="notice">Requeued 3 dead letter(s). 2 were gone already' in good
    for bad, answer in zip(BAD_COUNTS, answers, strict=True):
        assert answer.status_code == 200, bad[:10]
        assert 'data-testid="notice">Requeued 0 dead letter(s).<' in answer.text, bad[:10]
    assert raw.status_code == 200
    assert 'data-testid="notice">Deleted 0 dead letter(s).<' in raw.text


async def test_job_lookup_by_id_redirects_to_the_job(pool: tuple[Dispatcher, JobLog]) -> None:
    """The look-up form (GET /jobs?id=) leads to /jobs/{id}; an unknown id is a 404 page."""
    dispatcher, _ = pool
    handle = await dispatcher.submit(echo, 7)
    await guarded(handle)
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        jump = await client.get("/jobs", params={"id": str(handle.id)})
        missing = await client.get("/jobs/no-such-job")
    assert jump.status_code == 303
    assert jump.headers["location"] == f"/jobs/{handle.id}"
    assert missing.status_code == 404
    assert 'data-testid="not-found"' in missing.text


async def test_job_page_shows_a_failures_traceback(pool: tuple[Dispatcher, JobLog]) -> None:
    """A failed job: state, attempts, arguments, the error and its traceback in a <pre>."""
    dispatcher, _ = pool
    handle = await dispatcher.submit(boom, "the disk is full")
    with pytest.raises(ValueError, match="the disk is full"):
        await guarded(handle)
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        page = (await client.get(f"/jobs/{handle.id}")).text
    assert 'data-testid="job-state">failed<' in page
    assert 'data-testid="job-attempts">1<' in page
    assert 'data-testid="error-type">builtins.ValueError<' in page
    traceback = re.search(r'<pre class="traceback" data-testid="traceback">(.*?)</pre>', page, re.S)
    assert traceback is not None
    text = html.unescape(traceback.group(1))
    assert text.startswith("Traceback (most recent call last):")
    assert "in boom" in text
    assert text.rstrip().endswith("ValueError: the disk is full")
    assert 'data-testid="cancel-button"' not in page


async def test_job_page_escapes_markup_in_arguments_results_and_errors(
    pool: tuple[Dispatcher, JobLog],
) -> None:
    """A job argument, result or error message `<script>...` shows as text, never as markup."""
    dispatcher, _ = pool
    shown = await dispatcher.submit(echo, SCRIPT)
    await guarded(shown)
    failed = await dispatcher.submit(boom, SCRIPT)
    with pytest.raises(ValueError, match="script"):
        await guarded(failed)
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        pages = [(await client.get(f"/jobs/{h.id}")).text for h in (shown, failed)]
    for page in pages:
        assert "<script>window" not in page
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
        # The only script is the dashboard's own file.
        assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/dashboard.js" defer>']


async def test_job_page_clips_large_arguments_and_results(
    pool: tuple[Dispatcher, JobLog],
) -> None:
    """An argument and a result of 12,000 characters are cut to 2,000, saying what is left."""
    dispatcher, _ = pool
    huge = ["y" * 390] * 30  # strings short enough for the job log's repr to keep whole
    handle = await dispatcher.submit(echo, huge)
    await guarded(handle)
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        page = (await client.get(f"/jobs/{handle.id}")).text
    assert len(page) < 12_000
    args = re.search(r'data-testid="job-args">(.*?)</pre>', page, re.S)
    result = re.search(r'data-testid="job-result">(.*?)</pre>', page, re.S)
    assert args is not None
    assert result is not None
    for found in (args, result):
        assert re.search(r"… \(\d+ more characters\)$", found.group(1))
        assert len(found.group(1)) < 2_100


async def test_cancel_with_the_token_cancels_a_running_job(
    pool: tuple[Dispatcher, JobLog],
) -> None:
    """A signed-in POST with the page's CSRF value cancels the job and redirects back to it."""
    dispatcher, _ = pool
    gate = Gate()
    handle = await dispatcher.submit(gate)
    await guarded(gate.started.wait())
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        await sign_in(client)
        page = (await client.get(f"/jobs/{handle.id}")).text
        assert 'data-testid="cancel-button"' in page
        response = await client.post(
            "/actions/cancel", data={"csrf": csrf_of(page), "job": str(handle.id)}
        )
        assert response.status_code == 303
        assert response.headers["location"] == f"/jobs/{handle.id}?notice=cancelled"
        await guarded(asyncio.wait([handle]))  # the job's coroutine takes the cancellation
        assert handle.cancelled()
        assert gate.saw_cancel
        after = (await client.get(response.headers["location"])).text
        again = await client.post(
            "/actions/cancel", data={"csrf": csrf_of(page), "job": str(handle.id)}
        )
    assert 'data-testid="job-state">cancelled<' in after
    assert 'data-testid="notice">The job was cancelled.<' in after
    assert 'data-testid="cancel-button"' not in after
    assert again.headers["location"].endswith("?notice=not-cancelled")


async def test_cancel_a_queued_job(pool: tuple[Dispatcher, JobLog]) -> None:
    """A job still queued (both workers busy) is cancelled before it ever runs."""
    dispatcher, _ = pool
    busy = [Gate(), Gate()]
    holders = [await dispatcher.submit(g) for g in busy]
    queued_gate = Gate()
    queued = await dispatcher.submit(queued_gate)
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        await sign_in(client)
        page = (await client.get(f"/jobs/{queued.id}")).text
        assert 'data-testid="job-state">queued<' in page
        await client.post("/actions/cancel", data={"csrf": csrf_of(page), "job": str(queued.id)})
    for gate in busy:
        gate.release()
    await guarded(asyncio.gather(*holders))
    assert queued.cancelled()
    assert queued_gate.runs == 0


async def test_dead_letters_page_of_a_local_pool_says_there_are_none(
    pool: tuple[Dispatcher, JobLog],
) -> None:
    """A local Dispatcher keeps no dead letters, and the page says so."""
    dispatcher, _ = pool
    async with serving(create_app(dispatcher, token=TOKEN)) as client:
        page = (await client.get("/dead-letters")).text
    assert 'data-testid="no-dead-letters"' in page
    assert "no dead letters in a local pool" in page


# -- mounted under a prefix ---------------------------------------------------


async def test_mounted_under_a_prefix_every_link_and_action_keeps_it(
    pool: tuple[Dispatcher, JobLog],
) -> None:
    """Under app.mount("/pool", ...): links, assets, the API URL, the cookie and cancel all work."""
    dispatcher, _ = pool
    gate = Gate()
    handle = await dispatcher.submit(gate)
    await guarded(gate.started.wait())
    dashboard = create_app(dispatcher, token=TOKEN)
    parent = Starlette(routes=[Mount("/pool", app=dashboard)])
    # Starlette runs no lifespan of a mounted app: the polls feed the chart.
    async with serving(parent, lifespan=False) as client:
        signing = await client.get(f"/pool/jobs?state=running&token={TOKEN}")
        assert signing.status_code == 303
        assert signing.headers["location"] == "/pool/jobs?state=running"
        assert "Path=/pool/" in signing.headers["set-cookie"]
        overview = (await client.get("/pool/")).text
        jobs = (await client.get("/pool/jobs")).text
        job = (await client.get(f"/pool/jobs/{handle.id}")).text
        for url in re.findall(r'(?:href|src|action|data-overview-url)="([^"]+)"', overview + job):
            assert url.startswith("/pool/"), url
            assert (await client.get(html.unescape(url).split("?")[0])).status_code in (200, 405)
        api = (await client.get("/pool/api/overview")).json()
        cancel = await client.post(
            "/pool/actions/cancel", data={"csrf": csrf_of(job), "job": str(handle.id)}
        )
    assert f'href="/pool/jobs/{handle.id}"' in jobs
    assert 'data-overview-url="/pool/api/overview"' in overview
    assert api["throughput"]
    assert cancel.status_code == 303
    assert cancel.headers["location"] == f"/pool/jobs/{handle.id}?notice=cancelled"
    await guarded(asyncio.wait([handle]))
    assert handle.cancelled()
