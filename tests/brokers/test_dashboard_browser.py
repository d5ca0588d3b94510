"""The dashboard as a person uses it: a real browser on a real dashboard over a real pool.

Each test runs, on the machine's NATS JetStream (`nats_url`), the
`python -m asyncpool dashboard tests.brokers.dashboard_tasks:broker`
command on 127.0.0.1 (a free port, a known `--token`) and worker processes
(`python -m asyncpool worker ...`), and drives Debian's Chromium through
Playwright: it opens pages, reads them, clicks, and checks what the broker
did. Every process is stopped with SIGTERM at the end (and must exit 0);
the fixtures SIGKILL whatever would not.

Nothing sleeps to synchronize: the test awaits its jobs' handles, and the
page is checked with Playwright's `expect(...)`, which waits (up to the
timeout given) for a condition. What the workers tell arrives with their
heartbeats (once a second) and the overview's poll (once a second), so a
test that needs a page to show a job's end first watches the live
overview until its counters show it, as a person would, and only then
opens the page: jobs pages are rendered once, they do not update.

With `ASYNCPOOL_SCREENSHOTS=<dir>` set (`make dashboard-screenshots`), the
tests also save the pages the docs show, at 1280x800, as
`<dir>/dashboard-<page>.png`.

Chromium comes from the system (`apt-get install chromium`, which
tools/ensure_chromium.sh does in `make pytest`), or from the path in
`ASYNCPOOL_CHROMIUM`; Playwright's own browser downloads are not used. Without
Chromium or Playwright the tests are skipped, saying why, except under
`CI=true`, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from asyncpool.brokers import RemoteHandle, RemoteJobError

from ._servers import (
    _CHILD_SETUP,
    ENV_ENGINE,
    ENV_NAME,
    ENV_URL,
    ROOT,
    WorkerFleet,
    WorkerProcess,
    tail,
)
from .dashboard_tasks import MARKUP, MARKUP_TASK, DashboardApp

try:
    from playwright.async_api import (
        Browser,
        Dialog,
        Locator,
        Page,
        ViewportSize,
        async_playwright,
        expect,
    )
except ModuleNotFoundError as exc:  # the `dev` extra installs it
    _NO_PLAYWRIGHT: str | None = (
        f"Playwright for Python is not installed ({exc}): pip install -e '.[dev]'"
    )
else:
    _NO_PLAYWRIGHT = None

# The workers and the dashboard are other processes: the test's event loop
# plays no part in what is tested, so the default loop only.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(90),
    pytest.mark.asyncio(loop_factories=["asyncio"]),
]

TARGET = "tests.brokers.dashboard_tasks:broker"
TOKEN = "browser-test-token"
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}

PAGE = 5_000
"""Milliseconds for what a page shows once it is loaded (its own rendering, a redirect)."""

LIVE = 15_000
"""Milliseconds for what must come from the workers: a heartbeat (each second), then a poll
(each second). Only a failing test waits this long."""

JOBS_TIMEOUT = 20.0
"""Seconds the test's own handles get to resolve."""

_IN_CI = os.environ.get("CI", "").lower() == "true"


# -- the browser ------------------------------------------------------------


def _unavailable(reason: str) -> NoReturn:
    if _IN_CI:
        pytest.fail(f"CI runs the dashboard's browser tests, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium to drive: $ASYNCPOOL_CHROMIUM, or `chromium` on PATH; else skip (CI: fail)."""
    if _NO_PLAYWRIGHT is not None:
        _unavailable(_NO_PLAYWRIGHT)
    given = os.environ.get("ASYNCPOOL_CHROMIUM")
    if given:
        if not os.access(given, os.X_OK):
            _unavailable(f"ASYNCPOOL_CHROMIUM={given} is not an executable file")
        return given
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        _unavailable(
            "no Chromium on PATH: apt-get install chromium (or set ASYNCPOOL_CHROMIUM "
            "to a Chromium or Chrome executable)"
        )
    return found


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    """Chromium, headless, through Playwright; closed after the test."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium,
            # Chromium's sandbox refuses to start as root (as in containers
            # and CI); it browses nothing but the test's own dashboard.
            args=["--no-sandbox"],
        )
        try:
            yield launched
        finally:
            await launched.close()


async def screenshot(page: Page, name: str) -> None:
    """Save the page as `dashboard-<name>.png` in $ASYNCPOOL_SCREENSHOTS, when that is set."""
    directory = os.environ.get("ASYNCPOOL_SCREENSHOTS")
    if not directory:
        return
    await page.screenshot(path=Path(directory) / f"dashboard-{name}.png")


# -- the pool and its dashboard -----------------------------------------------


@dataclass
class Pool:
    """One test's broker (open, in the test's process), workers and dashboard process."""

    app: DashboardApp
    env: dict[str, str]
    fleet: WorkerFleet
    dashboard: subprocess.Popen[bytes]
    url: str
    """The dashboard's address, without a trailing slash: `http://127.0.0.1:<port>`."""

    async def start_workers(self, count: int = 2, *, wait: bool = True) -> list[WorkerProcess]:
        """Start `count` worker processes of 4 workers each; wait until they serve, if asked."""
        started = [
            self.fleet.start(
                self.env, workers=4, target=TARGET, label=f"w{len(self.fleet.processes)}"
            )
            for _ in range(count)
        ]
        if wait:
            for worker in started:
                await worker.wait_serving()
        return started

    async def new_page(
        self, browser: Browser, path: str = "/", *, sign_in: bool = True, bypass_csp: bool = False
    ) -> Page:
        """A page of a new browser context at `path`, signed in through `?token=` if asked."""
        context = await browser.new_context(viewport=VIEWPORT, bypass_csp=bypass_csp)
        page = await context.new_page()
        if sign_in:
            await page.goto(f"{self.url}{path}?token={TOKEN}")
            # The dashboard sets its cookie and redirects: the token leaves the address bar.
            await expect(page).to_have_url(f"{self.url}{path}", timeout=PAGE)
            await expect(page.get_by_test_id("signed-in")).to_be_visible(timeout=PAGE)
        else:
            await page.goto(f"{self.url}{path}")
        return page

    async def submit_failing_charge(self, order: int, flag: Path) -> str:
        """A charge that fails (its flag file is missing): a dead letter; its job id."""
        handle = await self.app.broker.submit(self.app.charge, order, str(flag))
        with pytest.raises(RemoteJobError, match=f"charging order {order}"):
            await asyncio.wait_for(handle, JOBS_TIMEOUT)
        return handle.id


async def results(handles: list[RemoteHandle[str]]) -> list[str]:
    """The handles' results, bounded by JOBS_TIMEOUT."""
    return await asyncio.wait_for(asyncio.gather(*handles), JOBS_TIMEOUT)


def _stop(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM, then the exit status (None, and SIGKILL, if it did not exit in time)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def start_dashboard(env: Mapping[str, str], errors: Path) -> subprocess.Popen[bytes]:
    """Start the dashboard command on a free port; its stdout is a pipe, its stderr `errors`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCPOOL_TEST_")}
    full_env |= {**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "asyncpool", "dashboard", TARGET]
    command += ["--host", "127.0.0.1", "--port", "0", "--token", TOKEN]
    with errors.open("wb") as stderr:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            preexec_fn=_CHILD_SETUP,
        )


@pytest.fixture
async def pool(
    nats_url: str, broker_name: str, worker_fleet: WorkerFleet, tmp_path: Path
) -> AsyncIterator[Pool]:
    """The dashboard command on a fresh JetStream broker, and the test's side of that broker.

    No worker runs until the test starts some (`pool.start_workers()`). At
    the end every process gets SIGTERM and must exit 0.
    """
    env = {ENV_ENGINE: "jetstream", ENV_URL: nats_url, ENV_NAME: broker_name}
    errors = tmp_path / "dashboard.stderr"
    dashboard = start_dashboard(env, errors)
    stopped = False
    try:
        assert dashboard.stdout is not None
        # Port 0: the command binds a free port and prints the URL it serves.
        # The first line it prints is that URL (it prints nothing else).
        line = await asyncio.wait_for(asyncio.to_thread(dashboard.stdout.readline), 30)
        found = re.fullmatch(
            rb"asyncpool dashboard: (http://127\.0\.0\.1:\d+)/\?token=(\S+)\n", line
        )
        assert found is not None, f"printed {line!r}; stderr:\n{tail(errors)}"
        assert found.group(2).decode() == TOKEN
        url = found.group(1).decode()
        async with httpx.AsyncClient(timeout=10) as client:  # it answers
            assert (await client.get(f"{url}/")).status_code == 200
        app = DashboardApp(nats_url, broker_name, client=True)
        async with app.broker:
            yield Pool(app, env, worker_fleet, dashboard, url)
            for worker in worker_fleet.processes:
                worker.terminate()
            exits = {w.label: await w.wait(15) for w in worker_fleet.processes}
            status = await asyncio.to_thread(_stop, dashboard, 15)
            stopped = True
            assert status == 0, f"the dashboard exited {status}; stderr:\n{tail(errors)}"
            assert all(code == 0 for code in exits.values()), worker_fleet.describe()
    finally:
        if not stopped:
            await asyncio.to_thread(_stop, dashboard, 5)
        assert dashboard.stdout is not None
        dashboard.stdout.close()


def row_of(page: Page, testid: str, job_id: str) -> Locator:
    """The row of a jobs list (`job-row`) or the dead-letters list (`letter-row`) for a job."""
    attribute = "data-job-id" if testid == "job-row" else "data-letter-id"
    return page.locator(f'[data-testid="{testid}"][{attribute}="{job_id}"]')


# -- the tests --------------------------------------------------------------------


async def test_overview_shows_workers_and_counts_jobs_live(browser: Browser, pool: Pool) -> None:
    """An open overview shows workers as they start and counts their jobs, never reloading."""
    page = await pool.new_page(browser, "/")
    # A mark in the page's window: a reload would lose it.
    await page.evaluate("window.notReloaded = true")
    await expect(page.get_by_test_id("no-workers")).to_be_visible(timeout=PAGE)
    await expect(page.get_by_test_id("stat-succeeded")).to_have_text("0", timeout=PAGE)
    first_update = await page.get_by_test_id("updated-at").text_content()

    await pool.start_workers(2, wait=False)
    await expect(page.get_by_test_id("worker-row")).to_have_count(2, timeout=LIVE)
    await expect(page.get_by_test_id("no-workers")).to_be_hidden(timeout=PAGE)
    await expect(page.get_by_test_id("stat-workers")).to_have_text("2", timeout=PAGE)
    await expect(page.get_by_test_id("stat-busy")).to_have_text("0 of 8", timeout=LIVE)

    done = 0
    for wave in (8, 16, 24):  # three waves: the counter moves three times without a reload
        handles = [
            await pool.app.broker.submit(pool.app.resize, f"photo-{done + n}.jpg", 640, 0.2)
            for n in range(wave)
        ]
        assert await results(handles) == [f"photo-{done + n}.jpg at 640px" for n in range(wave)]
        done += wave
        await expect(page.get_by_test_id("stat-succeeded")).to_have_text(str(done), timeout=LIVE)
    await pool.submit_failing_charge(7, Path("/nonexistent/flag"))
    await expect(page.get_by_test_id("stat-failed")).to_have_text("1", timeout=LIVE)

    # Jobs of 0.2 s, more at once than one worker process takes: both ran some.
    for cell in await page.locator('[data-testid="worker-row"] td[data-field="succeeded"]').all():
        await expect(cell).not_to_have_text("0", timeout=PAGE)
    await expect(page.get_by_test_id("throughput-peak")).not_to_have_text("0/s", timeout=PAGE)
    await expect(page.get_by_test_id("throughput-line")).to_have_attribute(
        "points", re.compile(r"\d"), timeout=PAGE
    )
    await expect(page.get_by_test_id("updated-at")).not_to_have_text(
        first_update or "", timeout=PAGE
    )
    assert await page.evaluate("window.notReloaded") is True
    await screenshot(page, "overview")


async def test_failed_job_shows_its_traceback(browser: Browser, pool: Pool) -> None:
    """A job that raised shows its error and the worker's traceback on its page (from the list)."""
    await pool.start_workers(2)
    handles = [
        await pool.app.broker.submit(pool.app.resize, f"banner-{n}.png", 1200, 0.1)
        for n in range(12)
    ]
    await results(handles)
    failing = await pool.submit_failing_charge(17, Path("/nonexistent/flag"))
    sent = await pool.app.broker.submit(pool.app.send, "ops@example.com", "weekly report")
    await results([sent])

    page = await pool.new_page(browser, "/")
    await expect(page.get_by_test_id("stat-succeeded")).to_have_text("13", timeout=LIVE)
    await expect(page.get_by_test_id("stat-failed")).to_have_text("1", timeout=LIVE)
    await page.get_by_test_id("nav-jobs").click()
    await expect(page.get_by_test_id("job-row")).to_have_count(14, timeout=PAGE)
    row = row_of(page, "job-row", failing)
    await expect(row).to_have_attribute("data-state", "failed", timeout=PAGE)
    await screenshot(page, "jobs")

    await page.locator('[data-testid="state-filter"][data-state="failed"]').click()
    await expect(page.get_by_test_id("job-row")).to_have_count(1, timeout=PAGE)
    await row.get_by_test_id("job-link").click()
    await expect(page.get_by_test_id("job-id")).to_have_text(failing, timeout=PAGE)
    await expect(page.get_by_test_id("job-state")).to_have_text("failed", timeout=PAGE)
    await expect(page.get_by_test_id("job-task")).to_have_text("billing.charge", timeout=PAGE)
    await expect(page.get_by_test_id("job-args")).to_have_text(
        "17, '/nonexistent/flag'", timeout=PAGE
    )
    await expect(page.get_by_test_id("error-type")).to_have_text(
        "builtins.ConnectionError", timeout=PAGE
    )
    await expect(page.get_by_test_id("error-message")).to_have_text(
        "payment service unreachable while charging order 17", timeout=PAGE
    )
    traceback = page.get_by_test_id("traceback")
    await expect(traceback).to_contain_text("Traceback (most recent call last)", timeout=PAGE)
    await expect(traceback).to_contain_text(
        re.compile(r'dashboard_tasks\.py", line \d+, in charge'), timeout=PAGE
    )
    await expect(traceback).to_contain_text("raise ConnectionError", timeout=PAGE)
    await screenshot(page, "job")


async def test_dead_letter_requeued_from_its_page_then_succeeds(
    browser: Browser, pool: Pool, tmp_path: Path
) -> None:
    """A signed-in Requeue sends a dead letter's job back; once its cause is fixed it succeeds."""
    await pool.start_workers(2)
    payments_up = tmp_path / "payments-up"
    job_id = await pool.submit_failing_charge(42, payments_up)

    page = await pool.new_page(browser, "/dead-letters")
    row = row_of(page, "letter-row", job_id)
    await expect(row.get_by_test_id("letter-reason")).to_have_text("failed", timeout=PAGE)
    await row.get_by_test_id("letter-link").click()
    await expect(page.get_by_test_id("letter-id")).to_have_text(job_id, timeout=PAGE)
    await expect(page.get_by_test_id("letter-task")).to_have_text("billing.charge", timeout=PAGE)
    await expect(page.get_by_test_id("error-type")).to_have_text(
        "builtins.ConnectionError", timeout=PAGE
    )
    await expect(page.get_by_test_id("traceback")).to_contain_text(
        "raise ConnectionError", timeout=PAGE
    )
    await expect(page.get_by_test_id("payload")).to_have_attribute("data-form", "job", timeout=PAGE)
    await expect(page.get_by_test_id("payload")).to_contain_text("'billing.charge'", timeout=PAGE)
    await screenshot(page, "dead-letter")

    payments_up.touch()  # the cause is fixed: the payment service is back
    await page.get_by_test_id("requeue-button").click()
    await expect(page.get_by_test_id("notice")).to_have_text(
        "Requeued 1 dead letter(s).", timeout=PAGE
    )
    await expect(page.get_by_test_id("page-dead-letters")).to_be_visible(timeout=PAGE)
    await expect(row_of(page, "letter-row", job_id)).to_have_count(0, timeout=PAGE)
    # Any process can wait for the job by its id: it now succeeds.
    assert await asyncio.wait_for(pool.app.broker.handle(job_id), JOBS_TIMEOUT) == (
        "order 42 charged"
    )
    assert [d for d in await pool.app.broker.dead_letters() if d.id == job_id] == []

    await page.get_by_test_id("nav-overview").click()
    await expect(page.get_by_test_id("stat-succeeded")).to_have_text("1", timeout=LIVE)
    await page.goto(f"{pool.url}/jobs/{job_id}")
    await expect(page.get_by_test_id("job-state")).to_have_text("succeeded", timeout=PAGE)
    await expect(page.get_by_test_id("job-result")).to_have_text("'order 42 charged'", timeout=PAGE)


POST_FORM = """async ({url, body}) => {
    const response = await fetch(url, {
        method: "POST",
        headers: {"Content-Type": "application/x-www-form-urlencoded"},
        body,
    });
    return response.status;
}"""
"""A script on the page that posts a form to the dashboard and says what came back."""


async def test_actions_without_the_token_are_refused(browser: Browser, pool: Pool) -> None:
    """A browser that never opened the ?token= URL has no working buttons; its posts get 403."""
    await pool.start_workers(1)
    job_id = await pool.submit_failing_charge(5, Path("/nonexistent/flag"))
    before = [(d.id, d.seq) for d in await pool.app.broker.dead_letters()]
    seq = str(before[0][1])

    page = await pool.new_page(browser, "/dead-letters", sign_in=False)
    await expect(page.get_by_test_id("read-only")).to_be_visible(timeout=PAGE)
    row = row_of(page, "letter-row", job_id)
    button = row.get_by_test_id("requeue-button")
    await expect(button).to_be_disabled(timeout=PAGE)
    await expect(row.get_by_test_id("delete-button")).to_be_disabled(timeout=PAGE)
    await expect(page.get_by_test_id("delete-selected")).to_be_disabled(timeout=PAGE)
    await expect(page.locator('input[name="csrf"]')).to_have_count(0, timeout=PAGE)

    # Someone enables the button anyway (the browser's developer tools) and clicks.
    await button.evaluate("button => { button.disabled = false; }")
    async with page.expect_response(lambda r: r.request.method == "POST") as posted:
        await button.click()
    response = await posted.value
    assert response.status == 403
    await expect(page.locator("body")).to_contain_text("403 Forbidden", timeout=PAGE)

    # Or a script posts the forms itself, with or without a CSRF value it guessed.
    await page.goto(f"{pool.url}/dead-letters")
    actions = f"{pool.url}/actions/dead-letters"
    for body in (
        f"requeue_one={seq}",
        f"delete_one={seq}",
        f"action=delete&letter={seq}",
        f"requeue_one={seq}&csrf={'0' * 64}",
    ):
        status = await page.evaluate(POST_FORM, {"url": actions, "body": body})
        assert status == 403, body
    cancel = f"{pool.url}/actions/cancel"
    assert await page.evaluate(POST_FORM, {"url": cancel, "body": f"job={job_id}"}) == 403

    # Nothing changed: the letter is where it was, on the server and on the page.
    assert [(d.id, d.seq) for d in await pool.app.broker.dead_letters()] == before
    await page.reload()
    await expect(row_of(page, "letter-row", job_id)).to_have_count(1, timeout=PAGE)


async def nothing_ran(page: Page) -> None:
    """The markup on `page` made no element and ran no script."""
    await expect(page.locator("main script, main img")).to_have_count(0, timeout=PAGE)
    assert await page.evaluate("window.pwned") is None, page.url


async def test_markup_in_jobs_is_shown_as_text_and_never_runs(browser: Browser, pool: Pool) -> None:
    """Markup in a job's arguments, result, task name or error is text on every page; none runs."""
    await pool.start_workers(1)
    sent = await pool.app.broker.submit(pool.app.send, MARKUP, MARKUP)
    await results([sent])
    rejected = await pool.app.broker.submit(pool.app.reject, MARKUP)
    with pytest.raises(RemoteJobError):
        await asyncio.wait_for(rejected, JOBS_TIMEOUT)

    # Without the Content-Security-Policy (which would block an inline
    # script too): only the escaping stands between the markup and the page.
    page = await pool.new_page(browser, "/", bypass_csp=True)
    await expect(page.get_by_test_id("stat-failed")).to_have_text("1", timeout=LIVE)
    await expect(page.get_by_test_id("stat-succeeded")).to_have_text("1", timeout=LIVE)

    await page.get_by_test_id("nav-jobs").click()
    await expect(row_of(page, "job-row", rejected.id).get_by_test_id("job-task")).to_have_text(
        MARKUP_TASK, timeout=PAGE
    )
    await nothing_ran(page)

    await row_of(page, "job-row", sent.id).get_by_test_id("job-link").click()
    await expect(page.get_by_test_id("job-args")).to_have_text(
        f"'{MARKUP}', '{MARKUP}'", timeout=PAGE
    )
    await expect(page.get_by_test_id("job-result")).to_contain_text(MARKUP, timeout=PAGE)
    await nothing_ran(page)

    await page.go_back()
    await row_of(page, "job-row", rejected.id).get_by_test_id("job-link").click()
    await expect(page.get_by_test_id("job-task")).to_have_text(MARKUP_TASK, timeout=PAGE)
    await expect(page.get_by_test_id("job-args")).to_have_text(f"'{MARKUP}'", timeout=PAGE)
    await expect(page.get_by_test_id("error-message")).to_have_text(MARKUP, timeout=PAGE)
    await nothing_ran(page)

    await page.get_by_test_id("nav-dead-letters").click()
    row = row_of(page, "letter-row", rejected.id)
    await expect(row.get_by_test_id("letter-task")).to_have_text(MARKUP_TASK, timeout=PAGE)
    await expect(row.get_by_test_id("letter-error")).to_have_text(MARKUP, timeout=PAGE)
    await nothing_ran(page)

    await row.get_by_test_id("letter-link").click()
    await expect(page.get_by_test_id("payload")).to_contain_text(MARKUP, timeout=PAGE)
    await nothing_ran(page)


async def test_two_dead_letters_deleted_in_one_action(browser: Browser, pool: Pool) -> None:
    """Two checked dead letters go with one confirmed 'Delete selected'; the others stay."""
    await pool.start_workers(2)
    orders = [
        await pool.submit_failing_charge(order, Path("/nonexistent/flag")) for order in (1, 2, 3)
    ]
    assert pool.app.report is not None
    unknown = await pool.app.broker.submit(pool.app.report, "2024-05")
    with pytest.raises(RemoteJobError, match="no task is registered"):
        await asyncio.wait_for(unknown, JOBS_TIMEOUT)

    page = await pool.new_page(browser, "/dead-letters")
    await expect(page.get_by_test_id("letter-row")).to_have_count(4, timeout=PAGE)
    await expect(
        row_of(page, "letter-row", unknown.id).get_by_test_id("letter-reason")
    ).to_have_text("unknown task", timeout=PAGE)

    confirmations: list[str] = []

    async def confirm(dialog: Dialog) -> None:
        confirmations.append(dialog.message)
        await dialog.accept()

    page.on("dialog", confirm)
    await row_of(page, "letter-row", orders[0]).get_by_test_id("letter-select").check()
    await row_of(page, "letter-row", orders[2]).get_by_test_id("letter-select").check()
    await screenshot(page, "dead-letters")
    await page.get_by_test_id("delete-selected").click()
    await expect(page.get_by_test_id("notice")).to_have_text(
        "Deleted 2 dead letter(s).", timeout=PAGE
    )
    assert confirmations == ["Delete the selected dead letters for good?"]
    await expect(page.get_by_test_id("letter-row")).to_have_count(2, timeout=PAGE)
    for job_id in (orders[1], unknown.id):
        await expect(row_of(page, "letter-row", job_id)).to_have_count(1, timeout=PAGE)
    remaining = sorted(d.id for d in await pool.app.broker.dead_letters())
    assert remaining == sorted([orders[1], unknown.id])
