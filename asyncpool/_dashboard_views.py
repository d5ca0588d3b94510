"""The dashboard's pages: overview, jobs, one job, dead letters, one dead letter.

Every page is rendered on the server by a Jinja2 template with autoescape
on, so whatever a job carries (arguments, results, errors, tracebacks,
task names, ids) arrives in the page as text. Links are made from the
request's `root_path`, so they stay right when the dashboard is mounted
under a prefix. Reading never changes anything; the actions are POSTs, in
`asyncpool._dashboard_actions`.
"""

from __future__ import annotations

import dataclasses
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any, Final

import jinja2
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)

from ._dashboard_format import (
    PAYLOAD_LIMIT,
    TEXT_LIMIT,
    TRACEBACK_LIMIT,
    ago,
    between,
    clip,
    decode_payload,
    when,
)
from ._dashboard_overview import LANE_COLUMNS, TOTALS, WORKER_COLUMNS, overview
from ._dashboard_security import CSRF_FIELD, Guard
from ._dashboard_sources import Source
from ._dashboard_throughput import Throughput
from ._deadletters import DeadLetter
from ._joblog import STATES

__all__ = ("ASSETS", "CANCELLABLE", "Dashboard", "Links")

ASSETS: Final = Path(__file__).resolve().parent / "_dashboard_assets"
"""The templates (`templates/`) and the stylesheet and script (`static/`)."""

CANCELLABLE: Final = frozenset({"queued", "running", "retrying"})
"""The states in which a job shows a Cancel button."""

LETTERS_SHOWN: Final = 500
"""The most dead letters a list shows (the newest)."""

JOBS_LIMIT: Final = 1_000
"""The most jobs a list shows (`?limit=`, 100 by default)."""

# A count in a query: ASCII digits only, and few of them. `str.isdigit()`
# also accepts "²" and other digits `int()` refuses, and `int()` refuses
# strings of more than 4,300 digits: either way a 500 for a typed URL.
_COUNT: Final = re.compile(r"[0-9]{1,6}")

# Notices after an action: fixed texts chosen by a code in the redirect's
# query, so that nothing a URL carries is ever written into the page.
_ICON: Final = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#2457a6"/>'
    '<path d="M3 11h2V7H3zm4 0h2V4H7zm4 0h2V8h-2z" fill="#fff"/></svg>'
)
"""The page icon (without one, every browser asks for /favicon.ico, and logs a 404)."""

_NOTICES: Final = {
    "cancelled": "The job was cancelled.",
    "not-cancelled": "The job had already ended: nothing to cancel.",
    "requeued": "Requeued {n} dead letter(s).",
    "deleted": "Deleted {n} dead letter(s).",
    "none-selected": "No dead letter was selected.",
}


class Links:
    """The dashboard's URLs for one request, under whatever prefix it is mounted at."""

    __slots__ = ("root",)

    def __init__(self, request: Request) -> None:
        self.root: str = str(request.scope.get("root_path", "")).rstrip("/")

    def to(self, path: str, **query: str) -> str:
        """`path` under the dashboard's root, with `query` (unset values left out)."""
        url = f"{self.root}{path}"
        items = {k: v for k, v in query.items() if v}
        return f"{url}?{urllib.parse.urlencode(items)}" if items else url

    @property
    def overview(self) -> str:
        return f"{self.root}/"

    def job(self, job_id: str) -> str:
        return f"{self.root}/jobs/{urllib.parse.quote(job_id, safe='')}"

    def letter(self, letter_id: str) -> str:
        return f"{self.root}/dead-letters/{urllib.parse.quote(letter_id, safe='')}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ASSETS / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, between=between, clip=clip)
    env.globals.update(
        TEXT_LIMIT=TEXT_LIMIT,
        TRACEBACK_LIMIT=TRACEBACK_LIMIT,
        PAYLOAD_LIMIT=PAYLOAD_LIMIT,
        CSRF_FIELD=CSRF_FIELD,
        CANCELLABLE=CANCELLABLE,
        LANE_COLUMNS=LANE_COLUMNS,
        WORKER_COLUMNS=WORKER_COLUMNS,
        TOTALS=TOTALS,
        STATES=STATES,
    )
    return env


def query_count(request: Request, name: str, default: int) -> int:
    """The query's `name` as a count (up to six ASCII digits), or `default` if it is not one."""
    text = request.query_params.get(name, "")
    return int(text) if _COUNT.fullmatch(text) else default


def _notice(request: Request) -> str | None:
    template = _NOTICES.get(request.query_params.get("notice", ""))
    if template is None:
        return None
    text = template.format(n=query_count(request, "n", 0))
    if missing := query_count(request, "missing", 0):
        text += f" {missing} were gone already (requeued or deleted elsewhere)."
    return text


@dataclasses.dataclass(frozen=True, slots=True)
class Dashboard:
    """The pages of one dashboard: its source, guard, throughput ring and templates."""

    source: Source
    guard: Guard
    throughput: Throughput
    title: str
    templates: jinja2.Environment = dataclasses.field(default_factory=_environment)

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response:
        """A page: the template with the dashboard's context, never cached."""
        signed_in = self.guard.signed_in(request)
        html = self.templates.get_template(template).render(
            title=self.title,
            label=self.source.label,
            links=Links(request),
            csrf=self.guard.csrf if signed_in else None,
            notice=_notice(request),
            **context,
        )
        return HTMLResponse(html, status_code, headers={"Cache-Control": "no-store"})

    # -- pages -----------------------------------------------------------

    async def overview_page(self, request: Request) -> Response:
        if (answer := self.guard.sign_in(request)) is not None:
            return answer
        data = await overview(self.source, self.throughput)
        return self.render(request, "overview.html", page="overview", data=data)

    async def icon(self, request: Request) -> Response:
        return Response(
            _ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"}
        )

    async def overview_api(self, request: Request) -> Response:
        data = await overview(self.source, self.throughput)
        return JSONResponse(data, headers={"Cache-Control": "no-store"})

    async def jobs_page(self, request: Request) -> Response:
        if (answer := self.guard.sign_in(request)) is not None:
            return answer
        links = Links(request)
        wanted = request.query_params.get("id", "").strip()
        if wanted:
            return RedirectResponse(links.job(wanted), status_code=303)
        state = request.query_params.get("state") or None
        if state is not None and state not in STATES:
            return PlainTextResponse(
                f"400: state must be one of {', '.join(STATES)}\n", status_code=400
            )
        limit = min(query_count(request, "limit", 100), JOBS_LIMIT)
        records = await self.source.jobs(state, limit)
        return self.render(request, "jobs.html", page="jobs", records=records, state=state)

    async def job_page(self, request: Request) -> Response:
        if (answer := self.guard.sign_in(request)) is not None:
            return answer
        job_id = str(request.path_params["job_id"])
        record = await self.source.find_job(job_id)
        if record is None:
            return self.render(
                request, "missing.html", 404, page="jobs", what="job", missing_id=job_id
            )
        return self.render(request, "job.html", page="jobs", job=record)

    async def letters_page(self, request: Request) -> Response:
        if (answer := self.guard.sign_in(request)) is not None:
            return answer
        letters: list[DeadLetter] = []
        if self.source.keeps_dead_letters:
            letters = list(reversed(await self.source.dead_letters()))
        return self.render(
            request,
            "dead_letters.html",
            page="dead-letters",
            keeps=self.source.keeps_dead_letters,
            letters=letters[:LETTERS_SHOWN],
            count=len(letters),
            now=time.time(),
        )

    async def letter_page(self, request: Request) -> Response:
        if (answer := self.guard.sign_in(request)) is not None:
            return answer
        letter_id = str(request.path_params["letter_id"])
        # The latest letter of the id, as `broker.requeue(id)` picks.
        matches = [d for d in await self.source.dead_letters() if d.id == letter_id]
        if not matches:
            return self.render(
                request,
                "missing.html",
                404,
                page="dead-letters",
                what="dead letter",
                missing_id=letter_id,
            )
        letter = matches[-1]
        return self.render(
            request,
            "dead_letter.html",
            page="dead-letters",
            letter=letter,
            earlier=len(matches) - 1,
            payload=decode_payload(letter, self.source.codec),
            dead_ago=ago(letter.dead_at, time.time()),
        )
